// Transport over js-libp2p: TCP, Noise (encrypted, authenticated by the peers'
// ed25519 keys), Yamux, identify and ping. A connection gate keeps banned
// peers and over-connected addresses out; an optional pre-shared swarm key
// (libp2p pnet) keeps everyone without it out. Messages are length-prefixed
// (@libp2p/utils' decoder, linear in the bytes received) with a size limit per
// protocol; a reader that falls behind pauses the stream, so the sender's
// Yamux window closes instead of our memory filling up.
//
// Discovery, when asked for: the swarm's own Kad-DHT (DHT_PROTOCOL, every peer
// a server), bootstrap peers dialled at start and again whenever this peer is
// alone, and mDNS on the LAN under our own service name (peers it finds are
// dialled, which puts them in the DHT's routing table).

import "./polyfill.js";
import * as fs from "node:fs";
import * as net from "node:net";
import { createLibp2p, Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { preSharedKey } from "@libp2p/pnet";
import { peerIdFromString } from "@libp2p/peer-id";
import { kadDHT, passthroughMapper, MessageType, type KadDHT } from "@libp2p/kad-dht";
import { mdns } from "@libp2p/mdns";
import { MemoryDatastore } from "datastore-core/memory";
import { Key } from "interface-datastore";
import { multiaddr, Multiaddr } from "@multiformats/multiaddr";
import { CID } from "multiformats/cid";
import * as raw from "multiformats/codecs/raw";
import * as Digest from "multiformats/hashes/digest";
import { sha256 } from "multiformats/hashes/sha2";
import * as varint from "uint8-varint";
import type { Connection, PeerDiscovery, PeerInfo, Stream } from "@libp2p/interface";
import { LayerswarmError } from "../errors.js";
import { Discovery, Provider } from "./discovery.js";
import { Identity } from "./identity.js";
import { Logger, logger } from "./log.js";
import { PeerGate } from "./policy.js";
import { remoteAddress, remoteKey } from "./addrgroup.js";
import { DHT_PROTOCOL, DHT_VALIDITY_MS, MDNS_SERVICE } from "./protocol/index.js";
import { Channel, DialOptions, HandleOptions, Reach, Transport } from "./transport.js";
import { DialBack, MAX_ADDRS_PER_PEER, RELAY_LIMITS, RelayGuard, RelayLimits, ReachTracker, Reachability, isCircuit, natComponents } from "./nat.js";

export interface Libp2pOptions {
  identity: Identity;
  listen?: string[]; // multiaddrs, default /ip4/127.0.0.1/tcp/0
  swarmKey?: string; // pre-shared key in the libp2p swarm.key format, or a file holding it
  gate?: PeerGate;
  dht?: boolean; // take part in the swarm's Kad-DHT (as a server): discovery() works
  bootstrap?: string[]; // multiaddrs, with or without /p2p/: dialled at start and whenever this peer has no DHT peer
  mdns?: boolean | string; // find peers on the LAN by mDNS (a string: the service name, default MDNS_SERVICE)
  maxProviderRecords?: { total: number; perPeer: number }; // provider records this peer keeps for the DHT (default 100,000; 256 per provider)
  // NAT traversal (nat.ts): relay for others while reachable, reserve a relay
  // slot when not, DCUtR, AutoNAT; true for RELAY_LIMITS, or other limits
  nat?: boolean | (Partial<RelayLimits> & { relays?: string[] }); // relays: reserve on these (multiaddrs ending in /p2p/<id>), not any
  chosen?: string[]; // peers the user named (--join): with the bootstrap and relay peers, their dial-back answers count in a small swarm (nat.ts)
}

// A swarm key in the go-ipfs format: "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>"
export function swarmKeyBytes(spec: string): Uint8Array {
  const text = fs.existsSync(spec) ? fs.readFileSync(spec, "utf8") : spec;
  if (/^[0-9a-fA-F]{64}$/.test(text.trim())) return Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${text.trim()}`);
  if (!/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-fA-F]{64}\s*$/.test(text))
    throw new LayerswarmError("BAD_ARGUMENT", "swarm key must be 64 hex characters or a swarm.key file");
  return Buffer.from(text.trim());
}

const PAUSE_BYTES = 1 << 20;

// for the gate: the IP, or for a circuit "relay:<relay>/<peer>" (not the relay's IP: addrgroup.ts)
const ipOf = remoteAddress;

// Length-prefixed messages (unsigned varint, then the bytes), taken apart
// chunk by chunk as they arrive. Only the message in progress is held, as the
// chunks that carry it (nothing is allocated on a peer's word before its
// bytes arrive), and each whole message is copied once into a buffer of its
// own. @libp2p/utils' LengthPrefixedDecoder bounded its buffer before taking
// messages out of it, so one chunk that ended one large message and began the
// next (a stream resumed after a pause hands over everything it held) read as
// an oversized message from an honest peer: the stream was reset, the peer
// banned and the step lost.
export class MessageDecoder {
  private len = 0; // the prefix read so far
  private lenBytes = 0;
  private want = -1; // bytes of the message in progress; -1: reading a prefix
  private parts: Uint8Array[] = [];
  private have = 0;
  constructor(readonly maxBytes: number) {}

  // Bytes of the message in progress held here (for limits and tests).
  get buffered(): number {
    return this.have;
  }

  decode(c: Uint8Array, out: Uint8Array[]): void {
    let o = 0;
    while (o < c.length) {
      if (this.want < 0) {
        const b = c[o++];
        this.len += (b & 0x7f) * 2 ** (7 * this.lenBytes++);
        if (this.len > this.maxBytes) throw new LayerswarmError("BAD_MESSAGE", `a message of ${b & 0x80 ? "more than " : ""}${this.len} bytes (at most ${this.maxBytes} here)`);
        if (b & 0x80) continue;
        this.want = this.len;
        this.len = this.lenBytes = 0;
        if (this.want === 0) this.want = -1; // empty messages carry nothing: skipped
        continue;
      }
      const n = Math.min(c.length - o, this.want - this.have);
      if (n === this.want && o === 0 && n === c.length) {
        out.push(c.slice()); // a whole message in one chunk: copied (the transport may reuse its buffers)
        this.want = -1;
        o += n;
        continue;
      }
      this.parts.push(c.subarray(o, o + n));
      this.have += n;
      o += n;
      if (this.have === this.want) {
        const m = new Uint8Array(this.want);
        let at = 0;
        for (const p of this.parts) {
          m.set(p, at);
          at += p.length;
        }
        out.push(m);
        this.parts = [];
        this.have = 0;
        this.want = -1;
      }
    }
  }
}

// Yamux (@chainsafe/libp2p-yamux 8) answers every data frame with a window
// update as soon as any of the window is used: one more encrypted frame, one
// more syscall and one more wakeup of the sender per message. Here it is sent
// once half the window is used (what go-yamux and the Yamux spec's reference
// do), or at once when it carries flags or follows a pause. The sender still
// has half a window, at least 128 KiB, when it arrives. Streams of another
// muxer are left as they are.
function fewerWindowUpdates(s: Stream): void {
  const y = s as unknown as { sendWindowUpdate?: () => void; recvWindow?: number; recvWindowCapacity?: number; state?: number; readStatus: string };
  const orig = y.sendWindowUpdate;
  if (typeof orig !== "function" || typeof y.recvWindow !== "number" || typeof y.recvWindowCapacity !== "number") return;
  const ESTABLISHED = 3; // StreamState.Established: no SYN/ACK left to send
  y.sendWindowUpdate = function (this: typeof y) {
    if (this.state === ESTABLISHED && this.readStatus === "readable" && this.recvWindowCapacity! * 2 > this.recvWindow!) return;
    orig.call(this);
  };
}

// Messages are taken off the stream as they arrive, from the start (not only
// once someone iterates), decoded into a queue; past PAUSE_BYTES queued the
// stream is paused, which stops Yamux window updates, so the sender waits
// (at most one window, 2 MiB, arrives after the pause and waits in the
// stream's read buffer, under its 4 MiB limit).
class StreamChannel implements Channel {
  closed = false;
  reach: Reach = "direct"; // set by the transport from the stream's connection
  private queue: Uint8Array[] = [];
  private head = 0; // queue[head] is the next message
  private queued = 0;
  private ended: Error | null | undefined;
  private waiter?: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: Error) => void }; // messages()'s reader, waiting
  private dec: MessageDecoder;
  private resuming = false;

  constructor(private s: Stream, readonly remotePeer: string, readonly remoteIp: string, maxBytes: number) {
    this.dec = new MessageDecoder(maxBytes);
    fewerWindowUpdates(s);
    quietEvents(s);
    s.addEventListener("message", ((evt: { data: Uint8Array | Iterable<Uint8Array> }) => this.onData(evt.data)) as never);
    const onEnd = (evt?: Event) => {
      this.closed = true;
      if (this.ended === undefined) this.ended = (evt as { error?: Error } | undefined)?.error ?? null;
      this.wake();
    };
    s.addEventListener("close", onEnd);
    s.addEventListener("remoteCloseWrite", () => {
      if (this.ended === undefined) this.ended = null;
      this.wake();
    });
  }

  private onData(data: Uint8Array | Iterable<Uint8Array>): void {
    const before = this.queue.length;
    try {
      if (data instanceof Uint8Array) this.dec.decode(data, this.queue);
      else for (const c of data) this.dec.decode(c, this.queue);
    } catch (e) {
      const err = new LayerswarmError("BAD_MESSAGE", `from ${this.remotePeer.slice(-8)}: ${(e as Error).message}`);
      this.ended = err;
      this.closed = true;
      this.s.abort(err);
      this.wake();
      return;
    }
    for (let i = before; i < this.queue.length; i++) this.queued += this.queue[i].length;
    // Not from inside resume(): Yamux's resume sends its window update after
    // handing over what it held, which would undo a pause made meanwhile
    // (the stream paused for us, its window open: the read buffer grows
    // until the stream aborts). resume() looks again once it returns.
    if (!this.resuming) this.maybePause();
    if (this.queue.length > before) this.wake();
  }

  private maybePause(): void {
    if (this.queued > PAUSE_BYTES && this.s.readStatus === "readable") this.s.pause();
  }

  async send(msg: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.closed || this.s.status !== "open") throw new LayerswarmError("UNREACHABLE", `stream to ${this.remotePeer.slice(-8)} is closed`);
    const n = varint.encodingLength(msg.length);
    let ok: boolean;
    if (msg.length <= 65536) {
      // one buffer, so that a small message goes out as one Yamux frame
      const b = new Uint8Array(n + msg.length);
      varint.encodeUint8Array(msg.length, b);
      b.set(msg, n);
      ok = this.s.send(b);
    } else {
      // a large one as it is (no copy of a 4 MB frame to prepend 3 bytes)
      const prefix = new Uint8Array(n);
      varint.encodeUint8Array(msg.length, prefix);
      const a = this.s.send(prefix); // both are queued whatever the first returns
      ok = this.s.send(msg) && a;
    }
    if (!ok) await this.s.onDrain({ signal });
    // the stream's own write buffer has no bound: wait while it holds more than
    // PAUSE_BYTES (the receiver paused, its window closed), so the sender is held back
    while (this.s.writeBufferLength > PAUSE_BYTES && this.s.status === "open") {
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const events = ["drain", "idle", "close"] as const;
        const done = () => {
          for (const e of events) this.s.removeEventListener(e, done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        for (const e of events) this.s.addEventListener(e, done);
        signal?.addEventListener("abort", done);
      });
    }
  }

  // Not an async generator: a message that arrives for a waiting reader is
  // handed to it directly, one promise settled, instead of waking a generator
  // that then yields (two more turns of the microtask queue per message).
  messages(): AsyncIterable<Uint8Array> {
    let done = false;
    const it: AsyncIterator<Uint8Array> = {
      next: () => {
        if (done) return Promise.resolve({ value: undefined, done: true });
        if (this.head === this.queue.length) this.resumeIfDrained(); // paused with nothing left (a reader took the rest as it came): what it held comes now
        if (this.head < this.queue.length) return Promise.resolve({ value: this.take(), done: false });
        if (this.ended === null) return (done = true), Promise.resolve({ value: undefined, done: true });
        if (this.ended) return (done = true), Promise.reject(this.ended);
        return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
      },
      return: () => {
        done = true;
        this.waiter = undefined;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
    return { [Symbol.asyncIterator]: () => it };
  }

  // The next queued message (there is one).
  private pop(): Uint8Array {
    const m = this.queue[this.head];
    this.queue[this.head++] = undefined as never;
    if (this.head === this.queue.length) this.queue.length = this.head = 0;
    else if (this.head > 1024) this.queue = this.queue.slice(this.head), this.head = 0;
    this.queued -= m.length;
    return m;
  }

  // The next queued message, resuming the stream once the queue has room.
  private take(): Uint8Array {
    const m = this.pop();
    this.resumeIfDrained();
    return m;
  }

  private resumeIfDrained(): void {
    if (this.queued < PAUSE_BYTES / 2 && this.s.readStatus === "paused") {
      this.resuming = true;
      try {
        this.s.resume();
      } finally {
        this.resuming = false;
      }
      this.maybePause();
    }
  }

  // Something for a waiting reader: a message (taken without resuming: this
  // runs inside the stream's own dispatch, and its reader's next call
  // resumes), or the end.
  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.head < this.queue.length) {
      this.waiter = undefined;
      w.resolve({ value: this.pop(), done: false });
    } else if (this.ended !== undefined) {
      this.waiter = undefined;
      if (this.ended === null) w.resolve({ value: undefined, done: true });
      else w.reject(this.ended);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.s.close().catch(() => this.s.abort(new Error("close failed")));
  }
  abort(err: Error): void {
    this.closed = true;
    this.s.abort(err);
  }
}

// One message goes out as several socket writes: Noise writes each frame's
// length, each ciphertext piece and its tag separately (@libp2p/tcp writes a
// list buffer by buffer), so a step of 8 KB cost four or five syscalls and as
// many TCP segments, each waking the receiver; Yamux's window updates two
// more. Writes made in one turn of the event loop are gathered (cork, and
// uncork once the turn's synchronous work and microtasks are done: Node's
// writev), so a step goes out as one segment. Nothing waits longer than the
// turn that wrote it. Connections without a TCP socket (relayed circuits)
// are left as they are.
function coalesceWrites(conn: Connection): void {
  const sock = (conn as unknown as { maConn?: { socket?: unknown } }).maConn?.socket;
  if (!(sock instanceof net.Socket)) return;
  const write = sock.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  sock.write = function (this: net.Socket, ...a: Parameters<net.Socket["write"]>) {
    if (!corked && !sock.destroyed) {
      corked = true;
      sock.cork();
      process.nextTick(uncork);
    }
    return write.apply(this, a);
  } as net.Socket["write"];
}

// Each layer of a connection (TCP, Noise, Yamux stream) says "idle" after
// every message it passes on, as a new event dispatched to no listener: three
// events a message, each an allocation and a walk of the dispatch machinery.
// An event nobody listens to is not made at all (what dispatching it does).
function quietEvents(x: unknown): void {
  const e = x as { safeDispatchEvent?: (type: string, detail?: unknown) => boolean; listenerCount?: (type: string) => number };
  const orig = e?.safeDispatchEvent;
  if (typeof orig !== "function" || typeof e.listenerCount !== "function") return;
  e.safeDispatchEvent = function (this: typeof e, type: string, detail?: unknown) {
    return this.listenerCount!(type) === 0 ? true : orig.call(this, type, detail);
  };
}

// Noise (@chainsafe/libp2p-noise 17) takes its frames apart with
// @libp2p/utils' LengthPrefixedDecoder, which, after each chunk's last frame,
// asks its length decoder for the next length anyway: with fewer than 2 bytes
// left that throws a new RangeError, whose stack trace costs more than the
// rest of the frame's decoding (tens of µs a message, cold). The same answer,
// thrown once-made (the decoder only checks that it is a RangeError), and the
// length read from the two bytes where they lie (Noise's read them through a
// DataView over a copy when they were in a list of chunks).
const SHORT = new RangeError("noise: fewer than 2 bytes for a frame length");
function cheaperNoiseDecoding(conn: Connection): void {
  type Chunks = Uint8Array | { length: number; get(i: number): number };
  const dec = (conn as unknown as { muxer?: { maConn?: { decoder?: { lengthDecoder?: (d: Chunks) => number } } } }).muxer?.maConn?.decoder;
  const orig = dec?.lengthDecoder;
  if (!dec || typeof orig !== "function" || (orig as { bytes?: number }).bytes !== 2) return;
  dec.lengthDecoder = (d: Chunks) => {
    if (d.length < 2) throw SHORT;
    return d instanceof Uint8Array ? (d[0] << 8) | d[1] : (d.get(0) << 8) | d.get(1); // big-endian u16, as Noise's uint16BEDecode
  };
}

// libp2p's store (peer records, the DHT's provider records), in memory, with
// the provider records capped per provider and in total: a peer that provides
// keys by the million is refused past its share instead of filling our memory
// (records expire DHT_VALIDITY_MS after they were provided and are swept every
// minute, so what a crowd of identities fills empties again).
const PROVIDER_PREFIX = "/dht/provider/"; // kad-dht's: /dht/provider/<key>/<provider peer id>
// TCP to a private, link-local or loopback address: what a LAN peer may be found at.
export function isLanTcp(ma: Multiaddr): boolean {
  const c = ma.getComponents();
  if (c[1]?.name !== "tcp") return false;
  const ip = c[0]?.value ?? "";
  if (c[0]?.name === "ip4") return /^(10\.|127\.|192\.168\.|169\.254\.|172\.(1[6-9]|2\d|3[01])\.)/.test(ip);
  if (c[0]?.name === "ip6") return /^(fe80:|fc|fd|::1$)/i.test(ip);
  return false;
}

export class BoundedDatastore extends MemoryDatastore {
  private providers = new Set<string>();
  private byCid = new Map<string, Set<string>>(); // "/dht/provider/<cid>" -> its records' keys
  private peers = new Set<string>();
  private perPeer = new Map<string, number>();
  constructor(private max: { total: number; perPeer: number }, private self?: string) {
    super();
  }
  get providerRecords(): number {
    return this.providers.size;
  }
  override put(...a: Parameters<MemoryDatastore["put"]>): ReturnType<MemoryDatastore["put"]> {
    const k = a[0].toString();
    // Bytes, not only records: our keys are 34-byte multihashes (about 60 characters
    // in base32), so a longer key is someone else's or an attack (a CID may be megabytes);
    // a provider record's value is a timestamp, a peer's record a few addresses.
    if (k.length > 512) throw new LayerswarmError("BAD_MESSAGE", `a datastore key of ${k.length} characters`);
    const value = a[1] as Uint8Array;
    if (value?.length > (k.startsWith("/peers/") ? 16 * 1024 : 1024)) throw new LayerswarmError("BAD_MESSAGE", `a datastore value of ${value.length} bytes under ${k.slice(0, 40)}`);
    if (k.startsWith("/peers/") && !this.peers.has(k)) {
      if (this.peers.size >= this.max.total / 10) throw new LayerswarmError("BUSY", `the peer store holds ${this.peers.size} peers`);
      this.peers.add(k);
    }
    if (k.startsWith(PROVIDER_PREFIX) && !this.providers.has(k)) {
      const peer = k.slice(k.lastIndexOf("/") + 1), n = this.perPeer.get(peer) ?? 0;
      // our own records always fit: a store others filled must not stop us announcing what we serve
      if (peer !== this.self && (n >= this.max.perPeer || this.providers.size >= this.max.total))
        throw new LayerswarmError("BUSY", `provider records full (${n} of ${this.max.perPeer} for this provider, ${this.providers.size} of ${this.max.total} in all)`);
      this.providers.add(k);
      const cid = k.slice(0, k.lastIndexOf("/"));
      (this.byCid.get(cid) ?? this.byCid.set(cid, new Set()).get(cid)!).add(k);
      this.perPeer.set(peer, n + 1);
    }
    return super.put(...a);
  }
  // One key's providers without walking (and re-encoding) every record in the
  // store: each GET_PROVIDERS from anyone would otherwise cost all of it.
  override query(...a: Parameters<MemoryDatastore["query"]>): ReturnType<MemoryDatastore["query"]> {
    const [q] = a;
    const set = q.prefix !== undefined && !q.filters?.length && !q.orders?.length && q.offset === undefined && q.limit === undefined ? this.byCid.get(q.prefix) : undefined;
    if (!set) return super.query(...a);
    const keys = [...set];
    const self = this;
    return (async function* () {
      for (const k of keys) {
        const key = new Key(k);
        if (await self.has(key)) yield { key, value: await self.get(key) };
      }
    })();
  }

  override delete(...a: Parameters<MemoryDatastore["delete"]>): ReturnType<MemoryDatastore["delete"]> {
    const k = a[0].toString();
    this.peers.delete(k);
    if (this.providers.delete(k)) {
      const cid = k.slice(0, k.lastIndexOf("/")), set = this.byCid.get(cid);
      set?.delete(k);
      if (set?.size === 0) this.byCid.delete(cid);
      const peer = k.slice(k.lastIndexOf("/") + 1), n = (this.perPeer.get(peer) ?? 1) - 1;
      if (n > 0) this.perPeer.set(peer, n);
      else this.perPeer.delete(peer);
    }
    return super.delete(...a);
  }
}

// A DHT key (32 bytes, a SHA-256 digest) as the CID the DHT indexes providers by.
const cidOf = (key: Uint8Array) => CID.createV1(raw.code, Digest.create(sha256.code, key));

export class Libp2pTransport implements Transport {
  private disconnectCbs: ((peer: string) => void)[] = [];
  private interruptCbs: ((peer: string) => void)[] = [];
  private reaches: ReachTracker;
  private relayedClosed = new Map<string, number>(); // peer -> when a relayed connection to it last closed
  private bootstrapTimer?: NodeJS.Timeout;
  private bootstrapPeers = new Map<string, string>(); // address -> the peer that answered there
  private bootstrapWarned = new Set<string>();
  private stopped = false;
  private log: Logger;

  private constructor(private node: Libp2p, readonly gate: PeerGate, private bootstrapAddrs: Multiaddr[], private store: BoundedDatastore, private dialBack?: DialBack) {
    this.log = logger(`libp2p:${node.peerId.toString().slice(-6)}`);
    this.reaches = new ReachTracker(node);
    // a peer nobody can dial serves no DHT requests: others would wait on it in every lookup
    dialBack?.onChange((r) => void this.dht?.setMode(r === "unreachable" ? "client" : "server").catch(() => {}));
    node.addEventListener("peer:disconnect", (e) => void this.disconnected(e.detail.toString()));
    node.addEventListener("connection:open", (e) => {
      gate.opened(ipOf(e.detail.remoteAddr));
      coalesceWrites(e.detail);
      cheaperNoiseDecoding(e.detail);
      const c = e.detail as unknown as { maConn?: unknown; muxer?: { maConn?: unknown } };
      quietEvents(c.maConn);
      quietEvents(c.muxer?.maConn);
    });
    node.addEventListener("connection:close", (e) => {
      gate.closed(ipOf(e.detail.remoteAddr));
      if (!isCircuit(e.detail.remoteAddr)) return;
      // a circuit closed (its relay's limits, DCUtR replacing it): streams on it are gone
      const peer = e.detail.remotePeer;
      if (node.getConnections(peer).some((c) => c.id !== e.detail.id && c.status === "open")) for (const cb of this.interruptCbs) cb(peer.toString());
      else this.relayedClosed.set(peer.toString(), Date.now()); // the peer is gone with it: see disconnected()
    });
    const lan = (node.services as { mdns?: PeerDiscovery }).mdns;
    lan?.addEventListener("peer", (e) => void this.dialFound(e.detail));
    if (bootstrapAddrs.length) this.bootstrapSoon(0);
  }

  static async create(o: Libp2pOptions): Promise<Libp2pTransport> {
    const gate = o.gate ?? new PeerGate();
    const bootstrap = (o.bootstrap ?? []).map((a) => {
      try {
        return multiaddr(a);
      } catch (e) {
        throw new LayerswarmError("BAD_ARGUMENT", `bootstrap address ${a}: ${(e as Error).message}`);
      }
    });
    const store = new BoundedDatastore(o.maxProviderRecords ?? { total: 100_000, perPeer: 256 }, o.identity.peerId);
    const limits: RelayLimits | undefined = o.nat ? { ...RELAY_LIMITS, ...(typeof o.nat === "object" ? o.nat : {}) } : undefined;
    const nat = limits ? natComponents(limits) : undefined;
    let made: Libp2p | undefined, dialBack: DialBack | undefined;
    const guard = limits ? new RelayGuard(limits, () => made, () => dialBack?.state ?? "unknown") : undefined;
    const node = await createLibp2p({
      privateKey: o.identity.key,
      datastore: store,
      addresses: { listen: o.listen ?? ["/ip4/127.0.0.1/tcp/0"] },
      transports: [tcp(), ...(nat?.transports ?? [])],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 2 * 2 ** 20 } })],
      connectionProtector: o.swarmKey ? preSharedKey({ psk: swarmKeyBytes(o.swarmKey) }) : undefined,
      services: {
        identify: identify(),
        // round trips to peers behind a relay too; more than one at a time per connection (our link
        // pings, the router's and libp2p's connection monitor share the protocol: with js-libp2p's
        // one, a second ping failed while the first waited behind a 4 MB frame)
        ping: ping({ runOnLimitedConnection: true, maxOutboundStreams: 4, maxInboundStreams: 8 }),
        ...(nat?.services ?? {}),
        ...(o.dht || bootstrap.length ? {
          // our own DHT, LAN and loopback addresses included; every peer serves it (NAT: later, with AutoNAT)
          dht: kadDHT({
            protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper,
            // provider records expire DHT_VALIDITY_MS after they were last provided (checked every minute);
            // providers refresh their own records (threshold 0: the DHT's reprovider only revives expired ones)
            reprovide: { interval: 60_000, validity: DHT_VALIDITY_MS, threshold: 0 },
          }),
        } : {}),
        ...(o.mdns ? { mdns: mdns({ serviceTag: typeof o.mdns === "string" ? o.mdns : MDNS_SERVICE, interval: 5_000 }) } : {}),
      },
      connectionManager: { maxConnections: 512, maxIncomingPendingConnections: 64, maxPeerAddrsToDial: MAX_ADDRS_PER_PEER },
      // libp2p pings every connection every 10 s and, by default, aborts it when a ping fails or
      // outlasts an adaptive timeout (5 s at least). A node computing a large step holds its event
      // loop for seconds, so its pings are late: the connection, and the frame on it, were dropped,
      // and the session waited out its step timeout. Liveness is the swarm's own business (step
      // timeouts that ask each stage, record expiry, the transport's disconnect events).
      connectionMonitor: { abortConnectionOnPingFailure: false },
      connectionGater: {
        denyInboundConnection: (maConn) => !gate.allowIp(ipOf(maConn.remoteAddr)),
        denyInboundEncryptedConnection: (peer) => !gate.allowPeer(peer.toString()),
        denyDialPeer: (peer) => !gate.allowPeer(peer.toString()),
        denyInboundRelayReservation: (peer) => !gate.allowPeer(peer.toString()) || (guard?.denyReservation(peer) ?? true),
        denyOutboundRelayedConnection: (src, dst) => !gate.allowPeer(src.toString()) || !gate.allowPeer(dst.toString()) || (guard?.denyCircuit(src) ?? true),
      },
    });
    made = node;
    if (limits) {
      dialBack = new DialBack(node, logger(`nat:${node.peerId.toString().slice(-6)}`), typeof o.nat === "object" ? o.nat.relays : undefined);
      for (const a of [...bootstrap, ...(typeof o.nat === "object" ? o.nat.relays ?? [] : []).map((r) => multiaddr(r))]) {
        const id = a.getComponents().filter((c) => c.name === "p2p").at(-1)?.value;
        if (id) dialBack.trust(id);
      }
      for (const p of o.chosen ?? []) dialBack.trust(p);
      await dialBack.start();
    }
    return new Libp2pTransport(node, gate, bootstrap, store, dialBack);
  }

  private get dht(): (KadDHT & { routingTable?: { size: number } }) | undefined {
    return (this.node.services as { dht?: KadDHT & { routingTable?: { size: number } } }).dht;
  }

  // Provider records kept here for the DHT (ours and others').
  providerRecords(): number {
    return this.store.providerRecords;
  }

  // Peers in this peer's DHT routing table (0: alone).
  dhtPeers(): number {
    return this.dht?.routingTable?.size ?? 0;
  }

  // Dial the bootstrap peers not connected, now or after ms; again every 2 s
  // while this peer has no DHT peer, every 30 s after that.
  private bootstrapSoon(ms: number): void {
    clearTimeout(this.bootstrapTimer);
    this.bootstrapTimer = setTimeout(() => void this.bootstrapRound().catch(() => {}).finally(() => {
      if (!this.stopped) this.bootstrapSoon(this.dhtPeers() === 0 ? 2000 : 30_000);
    }), ms);
    this.bootstrapTimer.unref();
  }

  private async bootstrapRound(): Promise<void> {
    await Promise.all(this.bootstrapAddrs.map(async (ma) => {
      const a = ma.toString();
      const id = ma.getComponents().filter((c) => c.name === "p2p").pop()?.value ?? this.bootstrapPeers.get(a);
      if (id === this.peerId) return;
      if (id && this.node.getConnections(peerIdFromString(id)).some((c) => c.status === "open")) return;
      try {
        const c = await this.node.dial(ma, { signal: AbortSignal.timeout(10_000) });
        this.bootstrapPeers.set(a, c.remotePeer.toString());
        this.dialBack?.trust(c.remotePeer.toString());
        if (this.bootstrapWarned.delete(a)) this.log("info", "reached the bootstrap peer", { addr: a });
      } catch (e) {
        if (this.stopped || this.bootstrapWarned.has(a)) return;
        this.bootstrapWarned.add(a);
        this.log("warn", "cannot reach a bootstrap peer yet; trying again", { addr: a, error: (e as Error).message.slice(0, 200) });
      }
    }));
  }

  // A peer found on the LAN: connect, so that the DHT learns it. Anyone on the
  // LAN can answer mDNS, so: only TCP over private, link-local or loopback
  // addresses (no DNS names, no public hosts to reflect dials at), at most 4 of
  // them, at most 8 dials at once, and a peer not tried again for a minute.
  private mdnsDialing = 0;
  private mdnsTried = new Map<string, number>();
  private async dialFound(p: PeerInfo): Promise<void> {
    const id = p.id.toString(), now = Date.now();
    if (this.stopped || this.node.getConnections(p.id).length > 0 || this.mdnsDialing >= 8 || (this.mdnsTried.get(id) ?? 0) > now - 60_000) return;
    const addrs = p.multiaddrs.filter(isLanTcp).slice(0, 4);
    if (!addrs.length) return;
    this.mdnsTried.set(id, now);
    if (this.mdnsTried.size > 4096) this.mdnsTried.delete(this.mdnsTried.keys().next().value!);
    this.mdnsDialing++;
    try {
      await this.node.peerStore.merge(p.id, { multiaddrs: addrs });
      await this.node.dial(p.id, { signal: AbortSignal.timeout(10_000) });
    } catch (e) {
      this.log("debug", "cannot reach a peer found by mDNS", { peer: id, error: (e as Error).message.slice(0, 200) });
    } finally {
      this.mdnsDialing--;
    }
  }

  // Provider records carry the addresses we have when we provide: wait (at
  // most 20 s) until we know whether others can reach us and, if not, until
  // we have a relay address, so that nobody finds a record it cannot use.
  // Once only: with no --bootstrap, --relay or --join peer and fewer than 3
  // networks around (an mDNS-only LAN) nobody decides (nat.ts), and every
  // provide would wait out the 20 s.
  private settleWaited = false;
  private async addressesSettled(signal?: AbortSignal): Promise<void> {
    if (!this.dialBack || this.settleWaited) return;
    const until = Date.now() + 20_000;
    while (Date.now() < until && !signal?.aborted && !this.stopped) {
      const r = this.dialBack.state;
      if (r === "reachable" || (r === "unreachable" && this.addrs().some(isCircuit))) return;
      await new Promise((res) => setTimeout(res, 200));
    }
    if (!signal?.aborted) this.settleWaited = true;
  }

  // The swarm's DHT as Discovery (needs the dht option).
  discovery(): Discovery {
    const dht = this.dht;
    if (!dht) throw new LayerswarmError("BAD_ARGUMENT", "this transport was created without the DHT");
    return {
      provide: async (keys: Uint8Array[], signal?: AbortSignal): Promise<void> => {
        await this.addressesSettled(signal);
        const told = await Promise.all(keys.map(async (k) => {
          let n = 0;
          for await (const e of dht.provide(cidOf(k), { signal })) if (e.name === "PEER_RESPONSE" && e.messageType === MessageType.ADD_PROVIDER) n++;
          return n;
        }));
        if (told.some((n) => n === 0)) throw new LayerswarmError("UNREACHABLE", "no DHT peer took the provider record");
      },
      // its own provider records go, and it republishes none; the copies other peers hold lapse
      withdraw: async (keys: Uint8Array[], signal?: AbortSignal): Promise<void> => {
        await Promise.all(keys.map((k) => dht.cancelReprovide(cidOf(k), { signal })));
      },
      async *find(key: Uint8Array, signal?: AbortSignal): AsyncIterable<Provider> {
        const seen = new Set<string>();
        for await (const e of dht.findProviders(cidOf(key), { signal })) {
          if (e.name !== "PROVIDER") continue;
          for (const p of e.providers) {
            const peer = p.id.toString();
            if (seen.has(peer)) continue;
            seen.add(peer);
            yield { peer, addrs: [...new Set(p.multiaddrs.map(String))].slice(0, 16) };
          }
        }
      },
    };
  }

  get peerId(): string {
    return this.node.peerId.toString();
  }
  addrs(): string[] {
    return this.node.getMultiaddrs().map(String);
  }
  // Our protocols run on relayed connections too (libp2p calls them limited
  // and refuses protocols that do not opt in): a node behind a NAT is served
  // through its relay, within the relay's limits (nat.ts).
  async handle(protocols: readonly string[], handler: (ch: Channel) => void, o: HandleOptions): Promise<void> {
    for (const p of protocols)
      await this.node.handle(p, (stream, conn) => handler(this.channel(stream, conn, o.maxMessageBytes)), {
        maxInboundStreams: o.maxStreamsPerConnection, maxOutboundStreams: 64, runOnLimitedConnection: true,
      });
  }

  private channel(s: Stream, conn: Connection, maxBytes: number): StreamChannel {
    const ch = new StreamChannel(s, conn.remotePeer.toString(), remoteKey(conn.remoteAddr), maxBytes);
    ch.reach = this.reaches.of(conn);
    return ch;
  }

  // How a peer is reached now, if connected (its best open connection).
  reach(peer: string): Reach | undefined {
    const c = this.reaches.best(peerIdFromString(peer));
    return c && this.reaches.of(c);
  }

  // Whether other peers can dial this one (nat.ts); "unknown" until some peer answered, or without nat.
  reachability(): Reachability {
    return this.dialBack?.state ?? "unknown";
  }
  onReachability(cb: (r: Reachability) => void): void {
    this.dialBack?.onChange(cb);
  }

  // A peer's last connection closed. If it was a circuit and someone wants to
  // know (a gateway), try to reach the peer again at once: a relay that cut a
  // circuit at its limits left the peer there, and the sessions through it
  // replay over the new connection instead of dropping the node.
  private async disconnected(peer: string): Promise<void> {
    await new Promise((r) => setImmediate(r)); // libp2p says peer:disconnect before connection:close
    const relayed = (this.relayedClosed.get(peer) ?? 0) > Date.now() - 2000;
    this.relayedClosed.delete(peer);
    if (relayed && this.interruptCbs.length && !this.stopped) {
      try {
        // through a relay first: the peer's other addresses were no use before either
        const known = (await this.node.peerStore.get(peerIdFromString(peer)).catch(() => undefined))?.addresses.map((x) => x.multiaddr).filter(isCircuit)
          .map((m) => (m.toString().endsWith(`/p2p/${peer}`) ? m : m.encapsulate(`/p2p/${peer}`))) ?? [];
        // for 10 s: the connection to the relay may have gone with the circuit (a relay
        // restart): the first tries can meet it still closing
        const until = Date.now() + 10_000;
        let c: Connection | undefined;
        for (let i = 1; !c; i++) {
          try {
            c = await this.node.dial(known.length ? known : peerIdFromString(peer), { signal: AbortSignal.timeout(Math.max(1, until - Date.now())) });
          } catch (e) {
            if (this.stopped || Date.now() + 500 * i >= until) throw e;
            await new Promise((r) => setTimeout(r, 500 * i));
          }
        }
        this.log("info", "a circuit to a peer was cut; reached it again", { peer, via: this.reaches.of(c) });
        for (const cb of this.interruptCbs) cb(peer);
        return;
      } catch (e) {
        this.log("debug", "a circuit to a peer was cut and it cannot be reached again", { peer, error: (e as Error).message.slice(0, 200) });
      }
    }
    for (const cb of this.disconnectCbs) cb(peer);
  }
  onInterrupt(cb: (peer: string) => void): void {
    this.interruptCbs.push(cb);
  }

  private async connection(peer: string, addrs: string[], signal?: AbortSignal): Promise<Connection> {
    const id = peerIdFromString(peer);
    const open = this.reaches.best(id); // a direct one before a relayed one
    if (open) return open;
    let last: unknown;
    // A peer with relay addresses is behind a NAT: its other addresses work
    // only from its LAN, and a dial to them may hang until it times out, so
    // they get 2 s in all before the relay is tried.
    addrs = [...new Set(addrs)].slice(0, MAX_ADDRS_PER_PEER); // a record's addresses: each one is a dial a stranger aims
    const relayed = addrs.filter(isCircuit), direct = addrs.filter((a) => !isCircuit(a));
    for (const [list, budget] of [[direct, relayed.length ? 2000 : 0], [relayed, 0]] as const) {
      const sig = budget && signal ? AbortSignal.any([signal, AbortSignal.timeout(budget)]) : budget ? AbortSignal.timeout(budget) : signal;
      for (const a of list) {
        try {
          const ma = multiaddr(a.includes("/p2p/") ? a : `${a}/p2p/${peer}`);
          if (ma.getComponents().filter((c) => c.name === "p2p").at(-1)?.value !== peer) continue; // the last /p2p/: after a relay's
          return await this.node.dial(ma, { signal: sig });
        } catch (e) {
          last = e;
          if (sig?.aborted) break;
        }
      }
      if (signal?.aborted) break;
    }
    // no address given, or none worked: what the peer store (identify, the DHT) knows
    if (!signal?.aborted && (addrs.length === 0 || this.dht)) {
      try {
        return await this.node.dial(id, { signal });
      } catch (e) {
        last ??= e;
      }
    }
    throw new LayerswarmError("UNREACHABLE", `cannot reach ${peer.slice(-8)}: ${(last as Error)?.message ?? "no usable address"}`);
  }

  async dial(peer: string, addrs: string[], protocol: string, o: DialOptions): Promise<Channel> {
    const conn = await this.connection(peer, addrs, o.signal);
    const s = await conn.newStream(protocol, { signal: o.signal, maxOutboundStreams: 64, runOnLimitedConnection: true });
    return this.channel(s, conn, o.maxMessageBytes);
  }
  onDisconnect(cb: (peer: string) => void): void {
    this.disconnectCbs.push(cb);
  }
  async hangUp(peer: string): Promise<void> {
    await this.node.hangUp(peerIdFromString(peer)).catch(() => {});
  }
  async ping(peer: string, addrs: string[], signal?: AbortSignal): Promise<number> {
    await this.connection(peer, addrs, signal);
    const svc = (this.node.services as { ping: { ping(p: ReturnType<typeof peerIdFromString>, o?: { signal?: AbortSignal }): Promise<number> } }).ping;
    return svc.ping(peerIdFromString(peer), { signal });
  }
  async stop(): Promise<void> {
    this.stopped = true;
    this.dialBack?.stop();
    clearTimeout(this.bootstrapTimer);
    await this.node.stop();
  }
}

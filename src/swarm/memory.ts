// An in-memory Transport for tests: peers with real identities and made-up IP
// addresses exchange messages through bounded queues, so failover, attacks,
// limits and fairness run in milliseconds. It keeps the properties the swarm
// relies on: authenticated remote peers, per-stream order, backpressure (a
// sender waits while the receiver has not taken its messages), a size limit
// per message, per-connection stream limits, and disconnect notifications.
// MemoryDht is the swarm's DHT in memory (Discovery), for the same tests.

import { LayerswarmError } from "../errors.js";
import { Discovery, Provider } from "./discovery.js";
import { Identity } from "./identity.js";
import { DHT_VALIDITY_MS } from "./protocol/index.js";
import { Channel, ConnectionGate, DialOptions, HandleOptions, Reach, Transport } from "./transport.js";

const HIGH_WATER_MESSAGES = 8;

class Pipe {
  queue: Uint8Array[] = [];
  ended?: Error | null; // null: closed cleanly
  wake?: () => void;
  drained: (() => void)[] = [];
  push(m: Uint8Array) {
    this.queue.push(m);
    this.wake?.();
  }
  end(err: Error | null) {
    if (this.ended !== undefined) return;
    this.ended = err;
    this.wake?.();
    for (const d of this.drained.splice(0)) d();
  }
}

class MemoryChannel implements Channel {
  closed = false;
  reach: Reach = "direct";
  peer!: MemoryChannel;
  tap?: (msg: Uint8Array) => void; // tests: see what this end receives
  readonly inbox = new Pipe();
  constructor(readonly remotePeer: string, readonly remoteIp: string, private maxMessageBytes: number, private onClose: () => void, private cut: () => boolean) {}

  async send(msg: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.closed) throw new LayerswarmError("UNREACHABLE", `stream to ${this.remotePeer} is closed`);
    if (this.cut()) return; // partitioned: lost on the way, and nobody is told
    const p = this.peer;
    if (msg.length > p.maxMessageBytes) {
      // the receiver refuses an oversize message and resets the stream, as lpStream does
      const e = new LayerswarmError("BAD_MESSAGE", `message of ${msg.length} bytes exceeds the limit of ${p.maxMessageBytes}`);
      p.abort(e);
      throw e;
    }
    p.tap?.(msg);
    p.inbox.push(msg.slice()); // a copy: the sender may reuse its buffer
    while (p.inbox.queue.length > HIGH_WATER_MESSAGES && p.inbox.ended === undefined && !this.closed) {
      signal?.throwIfAborted();
      await new Promise<void>((r) => p.inbox.drained.push(r));
    }
  }

  async *messages(): AsyncIterable<Uint8Array> {
    const q = this.inbox;
    for (;;) {
      if (q.queue.length > 0) {
        const m = q.queue.shift()!;
        if (q.queue.length <= HIGH_WATER_MESSAGES) for (const d of q.drained.splice(0)) d();
        yield m;
        continue;
      }
      if (q.ended === null) return;
      if (q.ended) throw q.ended;
      await new Promise<void>((r) => (q.wake = r));
      q.wake = undefined;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.peer.inbox.end(null); // the other side reads what is queued, then the end
    this.inbox.end(null);
    this.onClose();
  }

  abort(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.inbox.end(err);
    this.peer.closed = true;
    this.peer.inbox.end(new LayerswarmError("UNREACHABLE", `stream reset by ${this.peer.remotePeer}: ${err.message}`));
    this.onClose();
    this.peer.onClose();
  }
}

export class MemoryNetwork {
  readonly peers = new Map<string, MemoryTransport>();
  // one "connection" per pair of peers: its channels, closed together
  readonly links = new Map<string, Set<MemoryChannel>>();
  static key(a: string, b: string) {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }
  disconnect(a: string, b: string): void {
    const k = MemoryNetwork.key(a, b);
    const l = this.links.get(k);
    if (!l) return;
    this.links.delete(k);
    for (const c of l) c.abort(new LayerswarmError("UNREACHABLE", "connection closed"));
    this.peers.get(a)?.notifyDisconnect(b);
    this.peers.get(b)?.notifyDisconnect(a);
  }
  // Tests: a relay cuts the circuit between a and b, and they reach each
  // other again at once: every stream between them breaks (what was in
  // flight is lost), and both are told of an interruption, not a disconnect.
  interrupt(a: string, b: string): void {
    const l = this.links.get(MemoryNetwork.key(a, b));
    if (!l) return;
    this.links.delete(MemoryNetwork.key(a, b));
    for (const c of l) c.abort(new LayerswarmError("UNREACHABLE", "the relay cut the circuit"));
    this.peers.get(a)?.notifyInterrupt(b);
    this.peers.get(b)?.notifyInterrupt(a);
  }
}

// A link is relayed (or hole-punched) if either end is reached that way.
function linkReach(a: MemoryTransport, b: MemoryTransport): Reach {
  const rank = (r: Reach) => (r === "direct" ? 0 : r === "hole-punched" ? 1 : 2);
  return rank(a.reachedAs) >= rank(b.reachedAs) ? a.reachedAs : b.reachedAs;
}

export class MemoryTransport implements Transport {
  private handlers = new Map<string, { fn: (ch: Channel) => void; o: HandleOptions; open: Map<string, number> }>();
  private disconnectCbs: ((peer: string) => void)[] = [];
  private stopped = false;
  private partitioned = false;
  // tests: every message this peer receives, with its sender and protocol
  tap?: (from: string, protocol: string, msg: Uint8Array) => void;
  // tests: how this peer is reached by others ("direct" unless set: a NATed peer behind a relay, say)
  reachedAs: Reach = "direct";
  constructor(readonly net: MemoryNetwork, readonly identity: Identity, readonly ip: string, readonly gate?: ConnectionGate) {
    net.peers.set(identity.peerId, this);
  }
  static async create(net: MemoryNetwork, ip = "10.0.0.1", gate?: ConnectionGate): Promise<MemoryTransport> {
    return new MemoryTransport(net, await Identity.generate(), ip, gate);
  }

  get peerId() {
    return this.identity.peerId;
  }
  // Running and reachable.
  get up(): boolean {
    return !this.stopped && !this.partitioned;
  }
  // Tests: the network silently stops carrying this peer's traffic (a cable
  // pulled, a machine frozen): dials fail, messages on open streams are lost,
  // and nobody is told the connection closed.
  partition(): void {
    this.partitioned = true;
  }
  addrs() {
    return [`/memory/${this.ip}/p2p/${this.peerId}`];
  }
  async handle(protocols: readonly string[], fn: (ch: Channel) => void, o: HandleOptions): Promise<void> {
    for (const p of protocols) this.handlers.set(p, { fn, o, open: new Map() });
  }

  async dial(peer: string, _addrs: string[], protocol: string, o: DialOptions): Promise<Channel> {
    o.signal?.throwIfAborted();
    await Promise.resolve(); // a dial is never synchronous
    const target = this.net.peers.get(peer);
    if (!this.up || !target || !target.up) throw new LayerswarmError("UNREACHABLE", `cannot reach ${peer}: no such peer`);
    if (this.gate && !this.gate.allowPeer(peer)) throw new LayerswarmError("FORBIDDEN", `dialling ${peer} is not allowed`);
    if (target.gate && (!target.gate.allowPeer(this.peerId) || !target.gate.allowIp(this.ip)))
      throw new LayerswarmError("UNREACHABLE", `${peer} refused the connection`);
    const h = target.handlers.get(protocol);
    if (!h) throw new LayerswarmError("UNREACHABLE", `${peer} does not speak ${protocol}`);
    const open = h.open.get(this.peerId) ?? 0;
    if (open >= h.o.maxStreamsPerConnection) throw new LayerswarmError("BUSY", `${peer}: too many ${protocol} streams open`);
    h.open.set(this.peerId, open + 1);
    const key = MemoryNetwork.key(this.peerId, peer);
    const link = this.net.links.get(key) ?? this.net.links.set(key, new Set()).get(key)!;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (h.open.get(this.peerId) ?? 1) - 1;
      if (n <= 0) h.open.delete(this.peerId);
      else h.open.set(this.peerId, n);
      link.delete(mine);
      link.delete(theirs);
    };
    const cut = () => !this.up || !target.up;
    const mine = new MemoryChannel(peer, target.ip, o.maxMessageBytes, release, cut);
    const theirs = new MemoryChannel(this.peerId, this.ip, h.o.maxMessageBytes, release, cut);
    mine.peer = theirs;
    theirs.peer = mine;
    mine.reach = theirs.reach = linkReach(this, target);
    if (target.tap) theirs.tap = (m) => target.tap?.(this.peerId, protocol, m);
    link.add(mine);
    link.add(theirs);
    queueMicrotask(() => h.fn(theirs));
    return mine;
  }

  onDisconnect(cb: (peer: string) => void) {
    this.disconnectCbs.push(cb);
  }
  reach(peer: string): Reach | undefined {
    const t = this.net.peers.get(peer);
    if (!t || !t.up || !this.net.links.has(MemoryNetwork.key(this.peerId, peer))) return undefined;
    return linkReach(this, t);
  }
  notifyDisconnect(peer: string) {
    for (const cb of this.disconnectCbs) cb(peer);
  }
  private interruptCbs: ((peer: string) => void)[] = [];
  onInterrupt(cb: (peer: string) => void) {
    this.interruptCbs.push(cb);
  }
  notifyInterrupt(peer: string) {
    for (const cb of this.interruptCbs) cb(peer);
  }
  async hangUp(peer: string): Promise<void> {
    this.net.disconnect(this.peerId, peer);
  }
  async ping(peer: string): Promise<number> {
    const t = this.net.peers.get(peer);
    if (!this.up || !t || !t.up) throw new LayerswarmError("UNREACHABLE", `cannot reach ${peer}`);
    return 0.01;
  }
  // The process dies: every link closes.
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.net.peers.delete(this.peerId);
    for (const k of [...this.net.links.keys()]) {
      const [a, b] = k.split("|");
      if (a === this.peerId || b === this.peerId) this.net.disconnect(a, b);
    }
  }
}

const hex = (k: Uint8Array) => Buffer.from(k).toString("hex");

// One DHT shared by the peers of a test. A record lasts validityMs after it was
// provided, whether or not its provider is still there (as in a real DHT); a
// peer that is down or partitioned can neither provide nor find.
export class MemoryDht {
  private records = new Map<string, Map<string, { addrs: string[]; at: number }>>();
  constructor(readonly validityMs = DHT_VALIDITY_MS) {}

  for(t: MemoryTransport): Discovery {
    const check = (signal?: AbortSignal) => {
      signal?.throwIfAborted();
      if (!t.up) throw new LayerswarmError("UNREACHABLE", `${t.peerId.slice(-8)} cannot reach the DHT`);
    };
    return {
      provide: async (keys, signal) => {
        await Promise.resolve();
        check(signal);
        for (const k of keys) {
          const m = this.records.get(hex(k)) ?? this.records.set(hex(k), new Map()).get(hex(k))!;
          m.set(t.peerId, { addrs: t.addrs(), at: Date.now() });
        }
      },
      find: (key, signal) => this.find(key, check, signal),
    };
  }

  private async *find(key: Uint8Array, check: (s?: AbortSignal) => void, signal?: AbortSignal): AsyncIterable<Provider> {
    await Promise.resolve();
    check(signal);
    const now = Date.now();
    for (const [peer, r] of [...(this.records.get(hex(key)) ?? [])]) if (now - r.at <= this.validityMs) yield { peer, addrs: [...r.addrs] };
  }

  // Tests: a peer's records vanish (as if they had expired everywhere).
  forget(peer: string): void {
    for (const m of this.records.values()) m.delete(peer);
  }
}

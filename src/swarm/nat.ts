// Nodes and gateways behind NATs, on libp2p's building blocks: circuit relay
// v2 (every reachable peer relays for others, with the limits below), DCUtR
// (a relayed connection is upgraded to a direct one where the NAT allows) and
// AutoNAT (confirms the public address of a peer behind a forwarded port).
//
// Whether this peer is reachable is decided here, by dial-back: it asks a few
// connected peers to open a new connection to the address they see it at
// (only that IP: nobody can aim the dial elsewhere). js-libp2p's AutoNAT v1
// cannot decide it for a swarm: it skips private addresses (a LAN, a Docker
// network, a CGNAT ISP) on both ends, and concludes "not reachable" only after
// 8 failed dials from peers in 8 different /8 networks, which a swarm of a
// few machines never has. Anyone can connect and answer, so the answers
// decide by majority over 3 networks, or in a small swarm by the peers we chose
// (reachabilityVerdict), and a decided state flips only on two checks in a row.
// A peer found unreachable reserves a slot on a relay (circuit-relay-v2's
// transport listening on /p2p-circuit), announces the relay address with its others, and stops
// offering relay service itself (nobody could use it).

import { circuitRelayServer, circuitRelayTransport, type CircuitRelayService } from "@libp2p/circuit-relay-v2";
import { dcutr } from "@libp2p/dcutr";
import { autoNAT } from "@libp2p/autonat";
import type { Connection, Libp2p, PeerId, Stream } from "@libp2p/interface";
import { multiaddr, Multiaddr } from "@multiformats/multiaddr";
import { DIALBACK_PROTOCOL } from "./protocol/index.js";
import { addressGroup, networkOf } from "./addrgroup.js";
import { Logger } from "./log.js";
import type { Reach } from "./transport.js";

// What a relay gives a peer behind a NAT. js-libp2p's defaults (128 KiB and
// 2 minutes per circuit, as go-libp2p's, sized for signalling and hole
// punching) would cut a model's hidden states after a few tokens: at dim 4096
// in f32 one token is 16 KiB per hop and a 2,000-token prompt 32 MB. A circuit
// carries everything between two peers (every session of one gateway with one
// node), so it gets 1 GiB and one hour; past either, the relay cuts it and the
// gateway replays its sessions exactly over a new circuit (one replay per GiB),
// while DCUtR usually moves the traffic to a direct connection in seconds.
// What one relay can be made to carry is bounded by the caps on reservations
// (in all and per address: a reservation costs nothing until used) and on
// circuits (in all, per source peer and per source address group: ids cost
// nothing). The relay cannot tell what a circuit carries (the connection
// inside is encrypted end to end), so it cannot keep to our protocols.
export interface RelayLimits {
  dataBytes: number; // per circuit, both directions together
  durationMs: number; // per circuit
  reservations: number; // peers holding a slot here at once
  reservationsPerIp: number; // from one address (a home NAT has a few machines)
  reservationTtlMs: number; // a slot lasts this long unless refreshed (the client refreshes before)
  circuits: number; // relayed connections open through this peer at once
  circuitsPerPeer: number; // of them opened by one source peer
  circuitsPerIp: number; // of them opened from one source address group (an IPv4 address, an IPv6 /64): Sybil ids cost nothing
}

export const RELAY_LIMITS: RelayLimits = {
  dataBytes: 2 ** 30,
  durationMs: 60 * 60_000,
  reservations: 128,
  reservationsPerIp: 4,
  reservationTtlMs: 30 * 60_000,
  circuits: 64,
  circuitsPerPeer: 8,
  circuitsPerIp: 16,
};

// Addresses tried per peer in one dial: a record, identify or DCUtR's CONNECT
// can list any number, each one a dial of ours that a stranger aims (libp2p's
// default is 25).
export const MAX_ADDRS_PER_PEER = 8;

const STOP = "/libp2p/circuit/relay/0.2.0/stop";
const HOP = "/libp2p/circuit/relay/0.2.0/hop";

export const isCircuit = (ma: Multiaddr | string): boolean => String(ma).includes("/p2p-circuit");

function ipOf(ma: Multiaddr): string | undefined {
  const c = ma.getComponents().find((x) => x.name === "ip4" || x.name === "ip6");
  return c?.value;
}

// The address group (addrgroup.ts) a peer connects to us from directly, if it does.
function groupOf(node: Libp2p, peer: PeerId): string | undefined {
  const ip = node.getConnections(peer).filter((c) => !isCircuit(c.remoteAddr)).map((c) => ipOf(c.remoteAddr)).find(Boolean);
  return ip && addressGroup(ip);
}

// The transports and services NAT traversal adds to a libp2p node.
export function natComponents(limits: RelayLimits) {
  return {
    transports: [circuitRelayTransport({ maxInboundStopStreams: limits.circuits, maxOutboundStopStreams: limits.circuits, reservationCompletionTimeout: 10_000 })],
    services: {
      relay: circuitRelayServer({
        hopTimeout: 15_000,
        maxInboundHopStreams: limits.circuitsPerPeer + 2, // per connection: circuits and reservation requests
        maxOutboundStopStreams: limits.circuits,
        reservations: {
          maxReservations: limits.reservations,
          reservationTtl: limits.reservationTtlMs,
          applyDefaultLimit: true,
          defaultDataLimit: BigInt(limits.dataBytes),
          defaultDurationLimit: limits.durationMs,
        },
      }),
      dcutr: dcutr({ timeout: 5_000, retries: 3 }),
      autoNAT: autoNAT({ startupDelay: 5_000, refreshInterval: 10 * 60_000 }),
    },
  };
}

export type Reachability = "unknown" | "reachable" | "unreachable";

// Connections and reservations through this peer as a relay, bounded. Called
// by the connection gate; counts what is open now (streams on live
// connections), so nothing can drift.
export class RelayGuard {
  constructor(private limits: RelayLimits, private node: () => Libp2p | undefined, private reachability: () => Reachability) {}

  private relay(): CircuitRelayService | undefined {
    return (this.node()?.services as { relay?: CircuitRelayService } | undefined)?.relay;
  }

  // A peer asks for a slot: refused when nobody can reach us (our relay
  // address would be useless), when full, or when its address holds its share.
  denyReservation(peer: PeerId): boolean {
    const node = this.node(), relay = this.relay();
    if (!node || !relay || this.reachability() === "unreachable") return true;
    if (relay.reservations.has(peer)) return false; // a refresh
    if (relay.reservations.size >= this.limits.reservations) return true;
    const ip = groupOf(node, peer);
    if (!ip) return true;
    let fromIp = 0;
    for (const r of relay.reservations.values()) if (addressGroup(ipOf(r.addr) ?? "") === ip) fromIp++;
    return fromIp >= this.limits.reservationsPerIp;
  }

  // src asks to be connected to dst through us. Circuits are counted by the
  // request stream each one runs on (a refused reservation leaves its stream
  // open: counting every open hop stream would count that too).
  private live = new Map<string, Set<Stream>>(); // source peer -> hop streams let through
  private liveByIp = new Map<string, Set<Stream>>(); // source address group -> the same
  private counted = new WeakSet<Stream>();
  denyCircuit(src: PeerId): boolean {
    const node = this.node();
    if (!node) return true;
    const group = groupOf(node, src);
    if (!group) return true; // a source reaching us only through another relay: no relaying on relays
    let all = 0;
    const fresh: Stream[] = [];
    for (const c of node.getConnections()) {
      for (const s of c.streams) {
        if (s.protocol === STOP && s.direction === "outbound" && s.status === "open") all++;
        if (s.protocol === HOP && s.direction === "inbound" && s.status === "open" && c.remotePeer.equals(src) && !this.counted.has(s)) fresh.push(s);
      }
    }
    const key = src.toString();
    const mine = this.live.get(key) ?? new Set<Stream>(), ours = this.liveByIp.get(group) ?? new Set<Stream>();
    for (const set of [mine, ours]) for (const s of set) if (s.status !== "open") set.delete(s);
    if (all >= this.limits.circuits || mine.size >= this.limits.circuitsPerPeer || ours.size >= this.limits.circuitsPerIp) return true;
    const s = fresh.at(-1); // the request being decided: the newest hop stream from src
    if (s) {
      this.counted.add(s);
      for (const [map, k, set] of [[this.live, key, mine], [this.liveByIp, group, ours]] as const) {
        set.add(s);
        map.set(k, set);
        s.addEventListener("close", () => {
          set.delete(s);
          if (set.size === 0 && map.get(k) === set) map.delete(k);
        });
      }
    }
    return false;
  }
}

// How a connection reaches its peer. DCUtR's direct connection opens while the
// relayed one it replaces is still open: that is how an upgrade is recognised.
export class ReachTracker {
  private upgraded = new Set<string>(); // connection ids
  constructor(private node: Libp2p) {
    node.addEventListener("connection:open", (e) => {
      const c = e.detail;
      if (isCircuit(c.remoteAddr)) return;
      if (node.getConnections(c.remotePeer).some((o) => o.id !== c.id && o.status === "open" && isCircuit(o.remoteAddr))) this.upgraded.add(c.id);
    });
    node.addEventListener("connection:close", (e) => this.upgraded.delete(e.detail.id));
  }
  of(c: Connection): Reach {
    return isCircuit(c.remoteAddr) ? "relayed" : this.upgraded.has(c.id) ? "hole-punched" : "direct";
  }
  // The best open connection to a peer: direct or upgraded before relayed.
  best(peer: PeerId): Connection | undefined {
    const open = this.node.getConnections(peer).filter((c) => c.status === "open");
    return open.find((c) => !isCircuit(c.remoteAddr)) ?? open[0];
  }
}

// ------------------------------------------------------------------ dial-back

// Request: a count, then that many TCP ports (u16, big-endian), at most 4.
// Answer: one byte, 1 if a new connection to one of them at the address the
// answering peer sees us at succeeded, 0 if none did.
const MAX_PORTS = 4;

async function readAll(s: Stream, max: number, signal: AbortSignal): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  return new Promise((resolve, reject) => {
    const onMsg = (e: Event) => {
      const d = (e as unknown as { data: Uint8Array | { subarray(): Uint8Array } }).data;
      const b = d instanceof Uint8Array ? d : d.subarray();
      parts.push(b);
      n += b.length;
      if (n > max) done(new Error(`more than ${max} bytes`));
    };
    const done = (err?: Error) => {
      s.removeEventListener("message", onMsg);
      s.removeEventListener("remoteCloseWrite", onEnd);
      s.removeEventListener("close", onEnd);
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve(Buffer.concat(parts));
    };
    const onEnd = () => done();
    const onAbort = () => done(new Error("timed out"));
    s.addEventListener("message", onMsg);
    s.addEventListener("remoteCloseWrite", onEnd);
    s.addEventListener("close", onEnd);
    signal.addEventListener("abort", onAbort);
  });
}

// One dial-back answer: whether the answerer could dial us, where it is, and
// whether we chose it (a --bootstrap or --relay peer we dialled ourselves).
export interface DialBackAnswer {
  ok: boolean;
  ip: string;
  trusted: boolean;
}

// What the answers say. Anyone can connect and answer, so one answer decides
// nothing: a strict majority of answerers in at least 3 distinct networks
// (IPv4 /16, IPv6 /48; one vote per network), or, where there are fewer (a
// small swarm, a LAN, tests), a strict majority of the peers we chose.
// undefined: no decision.
export function reachabilityVerdict(answers: DialBackAnswer[]): Reachability | undefined {
  const majority = (votes: boolean[]): Reachability | undefined => {
    const yes = votes.filter(Boolean).length, no = votes.length - yes;
    return yes > no ? "reachable" : no > yes ? "unreachable" : undefined;
  };
  const byNet = new Map<string, boolean>();
  for (const a of [...answers].sort((x, y) => Number(y.trusted) - Number(x.trusted))) if (!byNet.has(networkOf(a.ip))) byNet.set(networkOf(a.ip), a.ok);
  if (byNet.size >= 3) return majority([...byNet.values()]);
  const chosen = answers.filter((a) => a.trusted);
  return chosen.length ? majority(chosen.map((a) => a.ok)) : undefined;
}

// The first decision is taken at once (a peer behind a NAT needs its relay
// slot); after that the state flips only when two checks in a row say so.
export class Hysteresis {
  private pending?: Reachability;
  constructor(public state: Reachability = "unknown") {}
  get wavering(): boolean {
    return this.pending !== undefined;
  }
  // A check's verdict; returns the state after it.
  observe(v: Reachability | undefined): Reachability {
    if (v === undefined) return this.state;
    if (v === this.state || this.state === "unknown") {
      this.pending = undefined;
      this.state = v;
    } else if (this.pending === v) {
      this.pending = undefined;
      this.state = v;
    } else this.pending = v;
    return this.state;
  }
}

export class DialBack {
  state: Reachability = "unknown";
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private relaying = false;
  private checking = false;
  private served = new Map<string, number>(); // peer -> last dial-back for it
  private perIp = new Map<string, number[]>(); // ip -> dial-backs to it in the last minute
  private dialing = 0;
  private listeners: ((s: Reachability) => void)[] = [];
  private verdicts = new Hysteresis();
  private chosen = new Set<string>(); // peers we chose to ask (bootstrap, relays): their answers decide in a small swarm

  // relays: multiaddrs ending in /p2p/<relay> to reserve on; none: any peer that relays
  constructor(private node: Libp2p, private log: Logger, private relays: string[] = [], private recheckMs = 5 * 60_000) {}

  onChange(cb: (s: Reachability) => void): void {
    this.listeners.push(cb);
  }

  // A peer we chose (--bootstrap, --relay, --join): its answer counts where
  // there are too few networks for a majority (reachabilityVerdict).
  trust(peer: string): void {
    this.chosen.add(peer);
  }

  async start(): Promise<void> {
    await this.node.handle(DIALBACK_PROTOCOL, (s, c) => void this.serve(s, c).catch(() => s.abort(new Error("dial-back failed"))), { maxInboundStreams: 1, maxOutboundStreams: 1 });
    // once there is someone to ask, and again now and then (addresses change)
    this.node.addEventListener("peer:identify", (e) => {
      if (this.state === "unknown" && e.detail.protocols.includes(DIALBACK_PROTOCOL)) this.soon(500);
    });
    this.soon(1_000);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private soon(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.check().finally(() => this.soon(this.state === "unknown" ? 5_000 : this.verdicts.wavering ? Math.min(30_000, this.recheckMs) : this.recheckMs)), ms);
    this.timer.unref();
  }

  // Our TCP listening ports (0.0.0.0:P listens on P everywhere).
  private ports(): number[] {
    const ports = new Set<number>();
    for (const ma of this.node.getMultiaddrs()) {
      if (isCircuit(ma)) continue;
      const tcp = ma.getComponents().find((c) => c.name === "tcp");
      if (tcp?.value) ports.add(Number(tcp.value));
    }
    return [...ports].slice(0, MAX_PORTS);
  }

  // Ask peers connected directly: the ones we chose, and one per network of
  // the others, 5 at most; the answers decide by majority
  // (reachabilityVerdict), and a decided state flips only when two checks in a
  // row say so (Hysteresis): one hostile answerer no longer turns a peer's DHT
  // serving and relaying off.
  async check(): Promise<Reachability> {
    if (this.checking || this.stopped) return this.state;
    this.checking = true;
    try {
      const ports = this.ports();
      if (!ports.length) return this.state;
      const asked: Connection[] = [];
      const seen = new Set<string>(), nets = new Set<string>();
      const conns = this.node.getConnections().filter((c) => c.status === "open" && !isCircuit(c.remoteAddr) && ipOf(c.remoteAddr));
      conns.sort((a, b) => Number(this.chosen.has(b.remotePeer.toString())) - Number(this.chosen.has(a.remotePeer.toString())));
      for (const c of conns) {
        if (asked.length >= 5) break;
        const peer = c.remotePeer.toString(), net = networkOf(ipOf(c.remoteAddr)!);
        if (seen.has(peer) || (!this.chosen.has(peer) && nets.has(net))) continue;
        const p = await this.node.peerStore.get(c.remotePeer).catch(() => undefined);
        if (!p?.protocols.includes(DIALBACK_PROTOCOL)) continue;
        seen.add(peer);
        nets.add(net);
        asked.push(c);
      }
      if (!asked.length) return this.state;
      const req = new Uint8Array(1 + 2 * ports.length);
      req[0] = ports.length;
      ports.forEach((p, i) => new DataView(req.buffer).setUint16(1 + 2 * i, p));
      const answers = await Promise.all(asked.map(async (c) => {
        const signal = AbortSignal.timeout(12_000);
        try {
          const s = await c.newStream(DIALBACK_PROTOCOL, { signal });
          const answer = readAll(s, 1, signal);
          s.send(req);
          await s.close({ signal });
          const a = await answer;
          return a.length === 1 ? a[0] === 1 : undefined;
        } catch {
          return undefined;
        }
      }));
      const known: DialBackAnswer[] = [];
      answers.forEach((ok, i) => {
        if (ok !== undefined) known.push({ ok, ip: ipOf(asked[i].remoteAddr)!, trusted: this.chosen.has(asked[i].remotePeer.toString()) });
      });
      this.set(this.verdicts.observe(reachabilityVerdict(known)));
      return this.state;
    } finally {
      this.checking = false;
    }
  }

  private set(s: Reachability): void {
    if (s === this.state) return;
    this.state = s;
    this.log("info", s === "reachable" ? "reachable from other peers" : "not reachable from other peers (behind a NAT or a firewall): reserving a slot on a relay", {});
    if (s === "unreachable" && !this.relaying) {
      this.relaying = true;
      // the relay transport reserves a slot on a peer that offers relay service and announces its address
      const tm = (this.node as unknown as { components: { transportManager: { listen(a: Multiaddr[]): Promise<void> } } }).components.transportManager;
      const at = this.relays.length ? this.relays.map((r) => multiaddr(`${r}/p2p-circuit`)) : [multiaddr("/p2p-circuit")];
      void tm.listen(at).catch((e) => this.log("warn", "cannot listen through a relay", { error: (e as Error).message }));
    }
    for (const cb of this.listeners) cb(s);
  }

  // Someone asks us to dial it back. Only at the address its connection comes
  // from (nobody can aim our dials elsewhere), never over a relay, each peer at
  // most once per 20 s, each address at most 16 times a minute (machines behind
  // one NAT share it), at most 16 at a time.
  private async serve(s: Stream, c: Connection): Promise<void> {
    const signal = AbortSignal.timeout(10_000);
    const req = await readAll(s, 1 + 2 * MAX_PORTS, signal);
    const ip = ipOf(c.remoteAddr);
    const n = req[0] ?? 0;
    if (!ip || isCircuit(c.remoteAddr) || n < 1 || n > MAX_PORTS || req.length !== 1 + 2 * n) return void s.abort(new Error("bad dial-back request"));
    const now = Date.now(), peer = c.remotePeer.toString();
    const group = addressGroup(ip); // an IPv6 /64 is one address
    const recent = (this.perIp.get(group) ?? []).filter((t) => t > now - 60_000);
    if ((this.served.get(peer) ?? 0) > now - 20_000 || recent.length >= 16 || this.dialing >= 16) return void s.abort(new Error("dial-back refused: busy"));
    this.served.set(peer, now);
    this.perIp.set(group, [...recent, now]);
    if (this.served.size > 4096) this.served.delete(this.served.keys().next().value!);
    if (this.perIp.size > 4096) this.perIp.delete(this.perIp.keys().next().value!);
    this.dialing++;
    let ok = false;
    try {
      const v = new DataView(req.buffer, req.byteOffset, req.byteLength);
      for (let i = 0; i < n && !ok; i++) {
        const ma = multiaddr(`/${ip.includes(":") ? "ip6" : "ip4"}/${ip}/tcp/${v.getUint16(1 + 2 * i)}/p2p/${c.remotePeer}`);
        try {
          // 3 s: a TCP connection, Noise and Yamux take 3 round trips; a NAT that drops the SYN lets none through
          const back = await this.node.dial(ma, { signal: AbortSignal.timeout(3_000), force: true });
          ok = !isCircuit(back.remoteAddr);
          if (back.id !== c.id) await back.close().catch(() => back.abort(new Error("dial-back done")));
        } catch { /* not reachable there */ }
      }
    } finally {
      this.dialing--;
    }
    s.send(Uint8Array.of(ok ? 1 : 0));
    await s.close({ signal }).catch(() => {});
  }
}

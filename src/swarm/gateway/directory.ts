// The gateway's node directory: the nodes it knows, what their records say,
// whether they serve, and how they have behaved. Records arrive from the
// nodes themselves (announce, or info once discovery found them) and are
// checked against the model and the sender before anything trusts them; a
// node whose record lies about who it is or what model it serves is banned.
// A record lives RECORD_TTL_MS: a node not heard from again (announced, or
// found and asked again) within it stops serving here. Bounded in size, per
// address and in total.
//
// Pairing: each layer only with nodes whose hash for it (from the bytes they
// loaded) equals this gateway's (from its manifest). A node serving another
// fine-tune stays known, with the layers that differ named in the log and the
// view, and is routed through for none of them.

import { EventEmitter } from "node:events";
import { LayerswarmError } from "../../errors.js";
import { LayerRange } from "../../model/config.js";
import { Logger } from "../log.js";
import { PeerGate } from "../policy.js";
import { Measured, subtractRanges } from "../placement.js";
import { NUMERICS_VERSION, NodeRecord, checkRecord, differingLayers } from "../protocol/index.js";

export interface NodeEntry {
  record: NodeRecord;
  ip: string;
  state: "serving" | "lost";
  since: number;
  sessions: number; // sessions of this gateway routed through it now
  stepMs?: number; // recent step latency seen from the gateway (route-level)
  rttMs?: number; // control round trip from the gateway
  batchMs: number[]; // recent batch compute times reported by the node
  failed: { n: number; at: number }; // steps it failed while still answering (routes avoid it)
  routed: boolean; // ever part of a route
  via: "announce" | "dht"; // how its record last arrived: it announced itself, or discovery found it and we asked
  refreshedAt: number; // when its record last arrived that way
  differs: LayerDiff[]; // layers it serves with other weights than ours: never routed through for them
  otherNumerics?: number; // its kernels' numerics version when not ours: its bits would differ, so it is not routed through at all
  // this gateway's own timing of a probe session through its range (probe.ts): one row, then `rows` rows
  probe?: { ms1: number; msRows: number; rows: number; layers: number; at: number };
  // one-row steps of real sessions where it was the only stage (smoothed): a node fast on probes only gains nothing
  real?: { ms1: number; layers: number; at: number };
  // its probe output differed from other holders' of the same layers on the same input (probe.ts); not a ban
  mismatch?: { start: number; end: number; with: string[]; at: number };
  steps?: number; // steps of this gateway's sessions it has served (results that came back through it)
  banned?: { reason: string; at: number }; // caught computing or signing wrong (verify.ts): never routed through again
}

// A node's cost figures as this gateway measured them (placement.ts prices stages with them).
export interface Figures {
  hopMs: number;
  layerMs: number;
  rowMs: number;
}

export interface LayerDiff {
  layer: number;
  theirs: string; // the node's hash for the layer
  ours: string;
}

// What the gateway compares records with.
export interface DirectoryModel {
  layers: number;
  dim: number;
  fingerprint: string; // the layout
  id: string; // the model's identity (its manifest's hash)
  layerHashes: readonly string[]; // layer i's hash
}

export type SwarmEvent =
  | { type: "node-joined"; peer: string; ranges: LayerRange[] }
  | { type: "node-lost"; peer: string; reason: string }
  | { type: "node-loaded"; peer: string; ranges: LayerRange[] }
  | { type: "reroute"; session: string; from: string[]; to: string[] }
  | { type: "replay"; session: string; positions: number; ms: number }
  | { type: "node-banned"; peer: string; reason: string; proven: boolean; steps: number }
  | { type: "audit"; session: string; verdict: "clean" | "banned" | "unverified"; peer?: string };

export interface DirectoryLimits {
  maxNodes?: number; // default 1024
  maxNodesPerIp?: number; // default 64
}

export class NodeDirectory {
  readonly nodes = new Map<string, NodeEntry>();
  readonly events = new EventEmitter();
  private bannedForGood = new Map<string, string>(); // peer -> why

  constructor(
    private model: DirectoryModel,
    readonly gate: PeerGate,
    private log: Logger,
    private limits: DirectoryLimits = {},
  ) {
    this.events.on("error", () => {}); // a listener's failure never reaches the step path
  }

  emit(e: SwarmEvent): void {
    try {
      this.events.emit("event", { ...e, t: Date.now() });
    } catch (err) {
      this.log("error", "event listener failed", { error: (err as Error).message });
    }
  }

  // A node announced itself (or re-announced), or discovery found it and it answered "info".
  accept(record: NodeRecord, from: string, ip: string, via: NodeEntry["via"] = "announce"): void {
    checkRecord(record, this.model, from);
    const banned = this.bannedForGood.get(from);
    if (banned) throw new LayerswarmError("FORBIDDEN", `this gateway banned this node: ${banned}`);
    if (!this.gate.allowed(from)) throw new LayerswarmError("FORBIDDEN", "this gateway routes only through the nodes in its --allow list");
    const e = this.nodes.get(from);
    if (e) {
      const wasLost = e.state === "lost";
      this.compare(e, record);
      e.record = record;
      e.ip = ip;
      e.via = via;
      e.refreshedAt = Date.now();
      if (wasLost) {
        e.state = "serving";
        e.since = Date.now();
        this.emit({ type: "node-joined", peer: from, ranges: record.ranges });
      }
      return;
    }
    const perIp = [...this.nodes.values()].filter((n) => n.ip === ip).length;
    if (perIp >= (this.limits.maxNodesPerIp ?? 64)) throw new LayerswarmError("BUSY", `this gateway already knows ${perIp} nodes at ${ip}`);
    if (this.nodes.size >= (this.limits.maxNodes ?? 1024)) {
      // forget the node lost longest ago; else a never-used node from the address with the most
      const lost = [...this.nodes.entries()].filter(([, n]) => n.state === "lost").sort((a, b) => a[1].since - b[1].since)[0];
      const count = new Map<string, number>();
      for (const n of this.nodes.values()) count.set(n.ip, (count.get(n.ip) ?? 0) + 1);
      const unused = [...this.nodes.entries()].filter(([, n]) => !n.routed && n.sessions === 0).sort((a, b) => (count.get(b[1].ip) ?? 0) - (count.get(a[1].ip) ?? 0))[0];
      const victim = lost ?? (unused && (count.get(unused[1].ip) ?? 0) > perIp + 1 ? unused : undefined);
      if (!victim) throw new LayerswarmError("BUSY", "this gateway's node directory is full");
      this.nodes.delete(victim[0]);
    }
    const entry: NodeEntry = { record, ip, state: "serving", since: Date.now(), sessions: 0, batchMs: [], failed: { n: 0, at: 0 }, routed: false, via, refreshedAt: Date.now(), differs: [] };
    this.compare(entry, record);
    this.nodes.set(from, entry);
    this.log("info", "node joined", { peer: from, ranges: record.ranges });
    this.emit({ type: "node-joined", peer: from, ranges: record.ranges });
  }

  // A fresher record from a node we asked directly (info poll, load): same
  // checks; it keeps the node alive here however discovery fares (20 fake
  // providers crowding a DHT lookup cannot make a node that answers expire).
  update(peer: string, record: NodeRecord): void {
    const e = this.nodes.get(peer);
    if (!e) return;
    checkRecord(record, this.model, peer);
    this.compare(e, record);
    e.record = record;
    e.refreshedAt = Date.now();
  }

  // The layers this record serves with other weights than ours; said each
  // time that set changes.
  private compare(e: NodeEntry, record: NodeRecord): void {
    const differs = differingLayers(record, this.model.layerHashes);
    const key = (d: LayerDiff[]) => d.map((x) => `${x.layer}:${x.theirs}`).join(",");
    if (differs.length > 0 && key(differs) !== key(e.differs)) {
      const layers = differs.map((d) => d.layer), one = differs.length === 1;
      const shown = differs.slice(0, 8).map((d) => `layer ${d.layer}: its ${d.theirs.slice(0, 12)}…, ours ${d.ours.slice(0, 12)}…`).join("; ");
      this.log("warn", "node serves other weights", {
        peer: record.peer, name: record.name, layers, model: record.model.id || "unknown (no manifest)", ours: this.model.id,
        message: `node ${record.peer} (${record.name}) serves other weights than this gateway for ${one ? "layer" : "layers"} ${layers.join(", ")} ` +
          `(${shown}${differs.length > 8 ? `; ${differs.length - 8} more` : ""}); its model ${record.model.id.slice(0, 16) || "unknown"}…, ours ${this.model.id.slice(0, 16)}…: ` +
          `it is not routed through for ${one ? "that layer" : "those layers"}`,
      });
    }
    e.differs = differs;
    // Another numerics version computes other bits for the same rows: a route
    // through it would not give the tokens this gateway's own layers, replays
    // and audits expect. Said once per change.
    const numerics = record.capabilities.numerics;
    const other = numerics === NUMERICS_VERSION ? undefined : numerics;
    if (other !== undefined && other !== e.otherNumerics)
      this.log("warn", "node computes with other numerics", {
        peer: record.peer, name: record.name, numerics: other, ours: NUMERICS_VERSION,
        message: `node ${record.peer} (${record.name}) computes with numerics version ${other}, this gateway with ${NUMERICS_VERSION} (another layerswarm release): its results would differ in the last bits, so it is not routed through`,
      });
    e.otherNumerics = other;
  }

  // Serving nodes whose record has not arrived again within ttlMs.
  expired(ttlMs: number): string[] {
    const before = Date.now() - ttlMs;
    return this.serving().filter((n) => n.refreshedAt < before).map((n) => n.record.peer);
  }

  // Returns true when the node was serving until now.
  lose(peer: string, reason: string): boolean {
    const e = this.nodes.get(peer);
    if (!e || e.state === "lost") return false;
    e.state = "lost";
    e.since = Date.now();
    this.log("warn", "node lost", { peer, reason });
    this.emit({ type: "node-lost", peer, reason });
    return true;
  }

  // A node failed a step while still answering: routes prefer others for a while.
  penalize(peer: string): void {
    const e = this.nodes.get(peer);
    if (!e) return;
    e.failed = { n: this.failures(e) + 1, at: Date.now() };
  }

  // Recent failures (forgotten ten minutes after the last one).
  failures(e: NodeEntry): number {
    return Date.now() - e.failed.at > 10 * 60_000 ? 0 : e.failed.n;
  }

  ban(peer: string, reason: string): void {
    const e = this.nodes.get(peer);
    this.gate.ban(peer, e?.ip, reason);
    this.lose(peer, `banned: ${reason}`);
  }

  // Caught cheating (verify.ts): banned for as long as this gateway runs, and
  // kept in the directory (shown as banned) so that it cannot simply return.
  // gate: refuse its connections too (else the caller does, later: a gateway
  // still asks a cheat to reproduce its cheating on synthetic input first)
  banForGood(peer: string, reason: string, gate = true): void {
    const e = this.nodes.get(peer);
    if (e) e.banned = { reason, at: Date.now() };
    this.bannedForGood.set(peer, reason); // outlives the entry (a full directory forgets lost nodes)
    if (this.bannedForGood.size > 100_000) this.bannedForGood.delete(this.bannedForGood.keys().next().value!);
    if (gate) this.gate.ban(peer, undefined, reason, 365 * 24 * 3600_000);
    this.lose(peer, `banned: ${reason}`);
  }

  get(peer: string): NodeEntry | undefined {
    return this.nodes.get(peer);
  }

  serving(): NodeEntry[] {
    return [...this.nodes.values()].filter((n) => n.state === "serving");
  }

  // A one-row step of a real session through this node alone took ms for these layers.
  realStep(peer: string, ms: number, layers: number): void {
    const e = this.nodes.get(peer);
    if (!e || !(ms >= 0)) return;
    const old = e.real?.layers === layers ? e.real.ms1 : undefined;
    e.real = { ms1: old === undefined ? ms : (old + ms) / 2, layers, at: Date.now() };
  }

  // Routing input: a node's load counts its sessions and, heavily, its recent failures.
  // Layers it is draining (moving away from) take no new sessions, so they are left out.
  holders(): { id: string; ranges: LayerRange[]; load: number }[] {
    return this.serving().map((n) => ({ id: n.record.peer, ranges: openRanges(n), load: n.sessions + 1000 * this.failures(n) }));
  }

  // Route costs for these nodes, from this gateway's own measurements only: the
  // probe's one-row time split into the round trip (control requests it timed)
  // and compute per layer, and the further rows' time per row. A node not
  // measured yet is priced like the median measured one (like every other when
  // none is): neither preferred nor shunned until its probe comes back.
  measured(nodes: NodeEntry[]): Measured[] {
    const figs = new Map<string, Figures>();
    for (const n of this.serving()) if (n.probe) figs.set(n.record.peer, figures(n));
    const known = [...figs.values()];
    const med = (k: keyof Figures) => {
      const v = known.map((f) => f[k]).sort((a, b) => a - b);
      return v.length ? v[v.length >> 1] : k === "hopMs" ? 1 : 0;
    };
    const neutral: Figures = { hopMs: med("hopMs"), layerMs: med("layerMs"), rowMs: med("rowMs") };
    return nodes.map((n) => ({ id: n.record.peer, ranges: openRanges(n), load: n.sessions, failures: this.failures(n), ...(figs.get(n.record.peer) ?? neutral) }));
  }
}

// The ranges a node opens new sessions on: its record's, less what it is draining.
// Layers whose weights differ from ours (pairing) are left out as well.
export function openRanges(n: NodeEntry): LayerRange[] {
  if (n.otherNumerics !== undefined) return [];
  const open = n.record.draining?.length ? subtractRanges(n.record.ranges, n.record.draining) : n.record.ranges;
  return n.differs.length ? subtractRanges(open, n.differs.map((d) => ({ start: d.layer, end: d.layer + 1 }))) : open;
}

// The worse of what probes and real sessions showed: a node that answers
// probes fast and real steps slowly is priced by its real steps.
export function figures(n: NodeEntry): Figures {
  const p = n.probe!;
  const hopMs = Math.min(n.rttMs ?? p.ms1 / 2, p.ms1);
  let layerMs = Math.max(0, p.ms1 - hopMs) / Math.max(1, p.layers);
  if (n.real && Date.now() - n.real.at < 10 * 60_000) layerMs = Math.max(layerMs, Math.max(0, n.real.ms1 - hopMs) / Math.max(1, n.real.layers));
  return { hopMs, layerMs, rowMs: Math.max(0, p.msRows - p.ms1) / Math.max(1, p.rows - 1) };
}

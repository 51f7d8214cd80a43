// The gateway's node directory: the nodes it knows, what their records say,
// whether they serve, and how they have behaved. Records arrive from the
// nodes themselves (announce, or info once discovery found them) and are
// checked against the model and the sender before anything trusts them; a
// node whose record lies about who it is or what model it serves is banned.
// A record lives RECORD_TTL_MS: a node not heard from again (announced, or
// found and asked again) within it stops serving here. Bounded in size, per
// address and in total.

import { EventEmitter } from "node:events";
import { LayerswarmError } from "../../errors.js";
import { LayerRange } from "../../model/config.js";
import { Logger } from "../log.js";
import { PeerGate } from "../policy.js";
import { NodeRecord, checkRecord } from "../protocol/index.js";

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
}

export type SwarmEvent =
  | { type: "node-joined"; peer: string; ranges: LayerRange[] }
  | { type: "node-lost"; peer: string; reason: string }
  | { type: "node-loaded"; peer: string; ranges: LayerRange[] }
  | { type: "reroute"; session: string; from: string[]; to: string[] }
  | { type: "replay"; session: string; positions: number; ms: number };

export interface DirectoryLimits {
  maxNodes?: number; // default 1024
  maxNodesPerIp?: number; // default 64
}

export class NodeDirectory {
  readonly nodes = new Map<string, NodeEntry>();
  readonly events = new EventEmitter();

  constructor(
    private model: { layers: number; dim: number; fingerprint: string },
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
    if (!this.gate.allowed(from)) throw new LayerswarmError("FORBIDDEN", "this gateway routes only through the nodes in its --allow list");
    const e = this.nodes.get(from);
    if (e) {
      const wasLost = e.state === "lost";
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
    this.nodes.set(from, { record, ip, state: "serving", since: Date.now(), sessions: 0, batchMs: [], failed: { n: 0, at: 0 }, routed: false, via, refreshedAt: Date.now() });
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
    e.record = record;
    e.refreshedAt = Date.now();
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

  get(peer: string): NodeEntry | undefined {
    return this.nodes.get(peer);
  }

  serving(): NodeEntry[] {
    return [...this.nodes.values()].filter((n) => n.state === "serving");
  }

  // Routing input: a node's load counts its sessions and, heavily, its recent failures.
  holders(): { id: string; ranges: LayerRange[]; load: number }[] {
    return this.serving().map((n) => ({ id: n.record.peer, ranges: n.record.ranges, load: n.sessions + 1000 * this.failures(n) }));
  }
}

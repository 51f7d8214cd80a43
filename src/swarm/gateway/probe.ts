// The gateway's own measurements of each node, for route costs: a node's
// record says how fast it is, but a liar would win every route on its word,
// so routes are priced only by what this gateway timed itself. A probe is a
// short session of the gateway's own through one node's range, sent like any
// other (a random session id, a signed grant, rows of plausible values): one
// row to open it, one row timed three times (the stage's latency: round trip
// and compute; the least counts), then `rows` rows timed twice (what each
// further row costs: the link's throughput and batched compute). Each node is probed when it appears and again every
// everyMs; figures are smoothed, and a node that fails a probe is treated as
// it would be for failing a step.

import { randomBytes } from "node:crypto";
import { Identity } from "../identity.js";
import { Logger } from "../log.js";
import { PROTOCOL_VERSION, signGrant } from "../protocol/index.js";
import { request } from "../rpc.js";
import { Transport } from "../transport.js";
import { NodeDirectory, NodeEntry, openRanges } from "./directory.js";
import { MAX_STEP_ROWS, RouteLost, StepPipeline } from "./pipeline.js";

export interface ProbeOptions {
  everyMs: number; // probe each node again after this long (default 60 s)
  rows: number; // rows of the throughput probe (default 32)
  concurrency?: number; // probes at once (default 4)
}

export const PROBE_OWNER = "\u0000probe";

export class Prober {
  private inflight = new Set<string>();
  private timer?: NodeJS.Timeout;
  private on = false;
  stats = { probes: 0, failed: 0 };

  constructor(
    private t: Transport,
    private id: Identity,
    private dir: NodeDirectory,
    private pipe: StepPipeline,
    private log: Logger,
    private dim: number,
    private o: ProbeOptions,
    private onLost: (peer: string, reason: string) => void,
  ) {
    dir.events.on("event", (e: { type: string; peer?: string }) => {
      if (this.on && (e.type === "node-joined" || e.type === "node-loaded") && e.peer) {
        const peer = e.peer;
        setImmediate(() => void this.probe(peer));
      }
    });
  }

  start(): void {
    this.on = true;
    this.timer = setInterval(() => {
      try {
        this.sweep();
      } catch (e) {
        this.log("error", "probe sweep failed", { error: (e as Error).message });
      }
    }, Math.max(20, Math.min(5000, this.o.everyMs / 4)));
    this.timer.unref();
  }

  stop(): void {
    this.on = false;
    clearInterval(this.timer);
  }

  private sweep(): void {
    const now = Date.now();
    for (const n of this.dir.serving())
      if (!n.probe || now - n.probe.at > this.o.everyMs) void this.probe(n.record.peer);
  }

  // Probe one node now (unless it is being probed, or enough probes are running).
  async probe(peer: string): Promise<void> {
    const n = this.dir.get(peer);
    if (!n || n.state !== "serving" || this.inflight.has(peer) || this.inflight.size >= (this.o.concurrency ?? 4)) return;
    const range = openRanges(n)[0]; // not what it drains, nor layers whose weights differ from ours
    if (!range) return;
    this.inflight.add(peer);
    const sid = randomBytes(16).toString("hex");
    try {
      const hop = { peer, addrs: n.record.addrs };
      const grant = await signGrant({
        v: PROTOCOL_VERSION, gateway: this.id.peerId, gatewayAddrs: this.t.addrs().slice(0, 16), session: sid, issuedAt: Date.now(),
        hops: [{ ...hop, start: range.start, end: range.end }],
      }, this.id);
      const ws = { owner: PROBE_OWNER, sid, grant, grantSent: false };
      const rows = Math.max(2, Math.min(this.o.rows, n.record.maxRows ?? MAX_STEP_ROWS, MAX_STEP_ROWS));
      const step = async (pos: number, T: number) => {
        const t0 = performance.now();
        await this.pipe.send(ws, [hop], { session: PROBE_OWNER, pos, T, hidden: new Float32Array(T * this.dim).fill(0.01), lastRowOnly: T > 1 });
        return performance.now() - t0;
      };
      await step(0, 1); // opens the session (grant checked, caches made): not timed
      // the least of a few: a busy moment on either side is not the node's speed
      let ms1 = Infinity, msRows = Infinity, pos = 1;
      for (let i = 0; i < 3; i++) ms1 = Math.min(ms1, await step(pos++, 1));
      for (let i = 0; i < 2; i++, pos += rows) msRows = Math.min(msRows, await step(pos, rows));
      this.stats.probes++;
      this.record(n, { ms1, msRows, rows, layers: range.end - range.start });
    } catch (e) {
      this.stats.failed++;
      if (e instanceof RouteLost) {
        for (const p of e.peers) this.onLost(p, `failed a probe: ${e.message}`);
        if (e.suspects.includes(peer)) this.dir.penalize(peer);
      }
      this.log("debug", "probe failed", { peer, error: (e as Error).message.slice(0, 200) });
    } finally {
      this.inflight.delete(peer);
      const cur = this.dir.get(peer);
      if (cur?.state === "serving") void request(this.t, peer, cur.record.addrs, { type: "drop", session: sid }, 2000).catch(() => {});
    }
  }

  // Smoothed: half the old figure, half the new.
  private record(n: NodeEntry, p: { ms1: number; msRows: number; rows: number; layers: number }): void {
    const old = n.probe;
    const mix = (a: number | undefined, b: number) => (a === undefined || old?.layers !== p.layers ? b : (a + b) / 2);
    n.probe = { ms1: mix(old?.ms1, p.ms1), msRows: mix(old?.msRows, p.msRows), rows: p.rows, layers: p.layers, at: Date.now() };
  }
}

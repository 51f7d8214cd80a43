// The gateway's own measurements of each node, for route costs: a node's
// record says how fast it is, but a liar would win every route on its word,
// so routes are priced only by what this gateway timed itself (and, where
// worse, by what real sessions through it took: directory.realStep). A probe
// is a short session of the gateway's own through one node's range, sent like
// any other and hard to tell from one: a random session id, a signed grant,
// the gateway's embeddings of random tokens as input, a first step of a random
// number of rows (1-8, not timed: it opens the session), one row timed three
// times (the stage's latency: round trip and compute; the least counts), then
// a random number of rows (half of `rows` to `rows`) timed twice (what each
// further row costs). Each node is probed when it appears and again every
// everyMs; figures are smoothed.
//
// Its outputs are checked: every holder of one range is opened, within one
// round, with the same tokens, and numerics are exact, so their first outputs
// must be bit-identical; a holder whose output differs from the others' is
// noted on its entry (mismatch, shown in the view), not banned.
//
// A probe has its own deadline (timeoutMs, default 10 s): a node that stalls
// probes holds a probe slot no longer, and is priced as slow as the deadline,
// not lost: a busy node (or a stream slow to open) is not dropped for a slow
// probe; real steps decide whether it is gone.

import { createHash, randomBytes, randomInt } from "node:crypto";
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
  timeoutMs?: number; // a whole probe's deadline (default 10 s)
}

// What the prober needs of the model: the gateway's embeddings of tokens (probe inputs).
export interface ProbeInput {
  vocab: number;
  embed(tokens: number[]): Float32Array;
}

export const PROBE_OWNER = "\u0000probe";

export class Prober {
  private inflight = new Set<string>();
  private timer?: NodeJS.Timeout;
  private on = false;
  // per range: the tokens every holder is opened with this round, and each holder's output digest
  private refs = new Map<string, { tokens: number[]; at: number; digests: Map<string, string> }>();
  stats = { probes: 0, failed: 0, timedOut: 0, mismatches: 0 };

  constructor(
    private t: Transport,
    private id: Identity,
    private dir: NodeDirectory,
    private pipe: StepPipeline,
    private log: Logger,
    private o: ProbeOptions,
    private input: ProbeInput,
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
    const timeoutMs = this.o.timeoutMs ?? 10_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    const layers = range.end - range.start;
    try {
      const hop = { peer, addrs: n.record.addrs };
      const grant = await signGrant({
        v: PROTOCOL_VERSION, gateway: this.id.peerId, gatewayAddrs: this.t.addrs().slice(0, 16), session: sid, issuedAt: Date.now(),
        hops: [{ ...hop, start: range.start, end: range.end }],
      }, this.id);
      const ws = { owner: PROBE_OWNER, sid, grant, grantSent: false };
      const most = Math.max(2, Math.min(this.o.rows, n.record.maxRows ?? MAX_STEP_ROWS, MAX_STEP_ROWS));
      const rows = randomInt(Math.max(2, most >> 1), most + 1);
      const step = async (pos: number, tokens: number[]) => {
        const t0 = performance.now();
        const out = await this.pipe.send(ws, [hop], { session: PROBE_OWNER, pos, T: tokens.length, hidden: this.input.embed(tokens), lastRowOnly: tokens.length > 1 }, deadline);
        return { ms: performance.now() - t0, out };
      };
      const random = (k: number) => Array.from({ length: k }, () => randomInt(this.input.vocab));
      const ref = this.ref(range);
      const open = ref.tokens.slice(0, most); // a node taking fewer rows a step than this round's tokens is not compared
      const first = await step(0, open); // opens the session (grant checked, caches made): not timed
      if (open.length === ref.tokens.length) this.compare(n, range, ref, first.out);
      // the least of a few: a busy moment on either side is not the node's speed
      let ms1 = Infinity, msRows = Infinity, pos = open.length;
      for (let i = 0; i < 3; i++) ms1 = Math.min(ms1, (await step(pos++, random(1))).ms);
      for (let i = 0; i < 2; i++, pos += rows) msRows = Math.min(msRows, (await step(pos, random(rows))).ms);
      this.stats.probes++;
      this.record(n, { ms1, msRows, rows, layers });
    } catch (e) {
      this.stats.failed++;
      if (deadline.aborted) {
        // priced as slow as the deadline: stalling probes wins no route, and loses nothing else
        this.stats.timedOut++;
        this.record(n, { ms1: timeoutMs, msRows: timeoutMs, rows: 2, layers });
      } else if (e instanceof RouteLost && e.suspects.includes(peer)) this.dir.penalize(peer);
      this.log("debug", "probe failed", { peer, error: (e as Error).message.slice(0, 200) });
    } finally {
      this.inflight.delete(peer);
      const cur = this.dir.get(peer);
      if (cur?.state === "serving") void request(this.t, peer, cur.record.addrs, { type: "drop", session: sid }, 2000).catch(() => {});
    }
  }

  // This round's opening tokens for a range (new ones every everyMs; 1 to 8 of them).
  private ref(range: { start: number; end: number }) {
    const key = `${range.start}:${range.end}`;
    let ref = this.refs.get(key);
    if (!ref || Date.now() - ref.at > this.o.everyMs) {
      ref = { tokens: Array.from({ length: randomInt(1, 9) }, () => randomInt(this.input.vocab)), at: Date.now(), digests: new Map() };
      this.refs.set(key, ref);
      if (this.refs.size > 4096) this.refs.delete(this.refs.keys().next().value!);
    }
    return ref;
  }

  // Every holder of the range opened with the same tokens must answer the same
  // bits: those outside the largest group of equal answers are noted.
  private compare(n: NodeEntry, range: { start: number; end: number }, ref: { digests: Map<string, string> }, out: Float32Array): void {
    ref.digests.set(n.record.peer, createHash("sha256").update(new Uint8Array(out.buffer, out.byteOffset, out.byteLength)).digest("hex"));
    const groups = new Map<string, string[]>();
    for (const [p, d] of ref.digests) groups.set(d, [...(groups.get(d) ?? []), p]);
    const sizes = [...groups.values()].map((g) => g.length).sort((a, b) => b - a);
    for (const [, peers] of groups) {
      // a strict majority is right; with no majority every side is in doubt
      const agreed = peers.length === sizes[0] && (sizes.length === 1 || sizes[1] < sizes[0]);
      const others = [...ref.digests.keys()].filter((p) => !peers.includes(p));
      for (const p of peers) {
        const e = this.dir.get(p);
        if (!e) continue;
        if (agreed) {
          if (e.mismatch?.start === range.start && e.mismatch.end === range.end) e.mismatch = undefined;
        } else {
          if (!e.mismatch) this.stats.mismatches++;
          e.mismatch = { start: range.start, end: range.end, with: others.slice(0, 8), at: Date.now() };
          this.log("warn", "probe outputs differ", { peer: p, layers: `[${range.start}, ${range.end})`, others: others.slice(0, 8) });
        }
      }
    }
  }

  // Smoothed: half the old figure, half the new.
  private record(n: NodeEntry, p: { ms1: number; msRows: number; rows: number; layers: number }): void {
    const old = n.probe;
    const mix = (a: number | undefined, b: number) => (a === undefined || old?.layers !== p.layers ? b : (a + b) / 2);
    n.probe = { ms1: mix(old?.ms1, p.ms1), msRows: mix(old?.msRows, p.msRows), rows: p.rows, layers: p.layers, at: Date.now() };
  }
}

// A swarm node: holds layer slices of a model, runs forward passes for many
// sessions at once (continuous batching: everything queued when the node is
// free goes into one batched call per layer), and sends each result straight
// to the next node of its route, or back to the gateway after the last stage.
// A malformed message closes only the stream it came on.

import * as os from "node:os";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import { Kernels } from "../kernels/index.js";
import { LayerRange, ModelConfig, configFromGGUF } from "../model/config.js";
import { loadSlice } from "../model/model.js";
import { SliceRuntime } from "../model/runtime.js";
import { layerBytes } from "../model/weights.js";
import { Logger, logger } from "./log.js";
import { Outbox } from "./outbox.js";
import { Holder, chooseRange } from "./placement.js";
import { Channel, PROTOCOL_CONTROL, PROTOCOL_FORWARD, Transport } from "./transport.js";
import {
  FLAG_LAST_ROW_ONLY, Forward, Limits, MsgType, WireError, decodeForward, decodeJSON, encodeControl, encodeError, encodeForward, encodeResult,
} from "./wire.js";

export interface NodeInit {
  modelPath: string;
  ranges: LayerRange[];
  kernels: Kernels;
  maxSessions?: number;
  kvBudgetBytes?: number;
  maxContext?: number;
  maxRowsPerFrame?: number; // default 512
  maxBatchRows?: number; // rows per batched call, default 256
  name?: string;
  fetchLayers?: (r: LayerRange) => Promise<void>;
  onProgress?: (p: { layer: number; layers: number; of: number; bytes: number; totalBytes: number }) => void;
  batchWindowMs?: number;
  sessionIdleMs?: number; // drop sessions not stepped for this long (default 15 minutes) // how long to gather steps when several sessions are active (default 2) // bring the layers' bytes to modelPath first (remote models)
}

export interface NodeInfo {
  peer: string;
  addrs: string[];
  name: string;
  model: { name: string; layers: number; dim: number; fingerprint: string };
  ranges: LayerRange[];
  capacity: { layersPerSec: number; freeBytes: number; kvBudgetBytes: number; kvUsedBytes: number; sessions: number };
  stats: { frames: number; batches: number; rows: number; badFrames: number; busyMs: number };
  loading?: { start: number; end: number; layers: number; bytes: number; totalBytes: number };
  links: { peer: string; rttMs: number }[]; // round trips to the peers this node sends to (its next stages)
}

export function modelFingerprint(f: GGUFFile, cfg: ModelConfig): string {
  return `${cfg.arch}:${cfg.dim}x${cfg.nLayers}:${cfg.vocabSize}:${f.tensors.size}:${f.fileBytes}`;
}

export class SwarmNode {
  readonly file: GGUFFile;
  readonly cfg: ModelConfig;
  slices: SliceRuntime[] = [];
  private queues = new Map<string, Forward[]>();
  private busy = false;
  private outbox: Outbox;
  private control?: Channel;
  private log: Logger;
  private layersPerSec = 0;
  loading?: { start: number; end: number; layers: number; bytes: number; totalBytes: number };
  private stopped = false;
  readonly limits: Limits;
  stats = { frames: 0, batches: 0, rows: 0, badFrames: 0, busyMs: 0 };

  constructor(private init: NodeInit, private t: Transport) {
    this.file = readGGUF(init.modelPath);
    this.cfg = configFromGGUF(this.file);
    this.log = logger(`node:${t.peerId.slice(-6)}`);
    this.outbox = new Outbox(t, this.log);
    this.limits = { maxDim: this.cfg.dim, maxRows: init.maxRowsPerFrame ?? 512 };
  }

  ranges(): LayerRange[] {
    return this.slices.map((s) => s.range);
  }

  // Load a range of layers (also used when the gateway asks for lost layers).
  async loadRange(r: LayerRange): Promise<void> {
    if (this.slices.some((s) => s.range.start < r.end && r.start < s.range.end))
      throw new LayerswarmError("BAD_RANGE", `layers [${r.start}, ${r.end}) overlap what this node holds`);
    if (r.start < 0 || r.end > this.cfg.nLayers || r.start >= r.end)
      throw new LayerswarmError("BAD_RANGE", `layer range [${r.start}, ${r.end}) is not within the model's ${this.cfg.nLayers} layers`);
    await this.init.fetchLayers?.(r);
    const t0 = performance.now();
    const bytes = Array.from({ length: r.end - r.start }, (_, i) => layerBytes(this.file, r.start + i)).reduce((a, b) => a + b, 0);
    this.log("info", "loading", { start: r.start, end: r.end, bytes });
    let done = 0, doneBytes = 0;
    this.slices.push(loadSlice(this.file, this.cfg, r, this.init.kernels, {
      maxSessions: this.init.maxSessions, kvBudgetBytes: this.init.kvBudgetBytes, maxContext: this.init.maxContext,
    }, (layer, b) => {
      done++;
      doneBytes += b;
      this.loading = { start: r.start, end: r.end, layers: done, bytes: doneBytes, totalBytes: bytes };
      this.init.onProgress?.({ layer, layers: done, of: r.end - r.start, bytes: doneBytes, totalBytes: bytes });
    }));
    this.loading = undefined;
    this.slices.sort((a, b) => a.range.start - b.range.start);
    this.log("info", "loaded", { start: r.start, end: r.end, ms: Math.round(performance.now() - t0) });
  }

  // Throughput measured at start: layers per second for one decode row.
  private measure(): void {
    const s = this.slices[0];
    if (!s) return;
    const h = new Float32Array(this.cfg.dim).fill(0.01);
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < 150 || n < 2) {
      s.forward([{ session: "__measure", pos: 0, T: 1, hidden: h }]);
      n++;
    }
    s.dropSession("__measure");
    this.layersPerSec = (n * (s.range.end - s.range.start) * 1000) / (performance.now() - t0);
  }

  info(): NodeInfo {
    const kvBudget = this.slices.reduce((a, s) => a + s.budget.maxBytes, 0);
    const kvUsed = this.slices.reduce((a, s) => a + s.budget.usedBytes, 0);
    return {
      peer: this.t.peerId,
      addrs: this.t.addrs(),
      name: this.init.name ?? os.hostname(),
      model: { name: this.cfg.name, layers: this.cfg.nLayers, dim: this.cfg.dim, fingerprint: modelFingerprint(this.file, this.cfg) },
      ranges: this.ranges(),
      capacity: {
        layersPerSec: Math.round(this.layersPerSec),
        freeBytes: os.freemem(),
        kvBudgetBytes: kvBudget,
        kvUsedBytes: kvUsed,
        sessions: this.slices[0]?.sessions.size ?? 0,
      },
      stats: { ...this.stats, busyMs: Math.round(this.stats.busyMs) },
      loading: this.loading,
      links: [...this.links].map(([peer, rttMs]) => ({ peer, rttMs })),
    };
  }

  async start(join?: string[], auto?: { maxLayers: number }): Promise<void> {
    if (auto) {
      if (!join?.length) throw new LayerswarmError("BAD_ARGUMENT", "--layers auto needs --join: the gateway says which layers the swarm lacks");
      const holders = await this.askHolders(join[0]);
      const r = chooseRange(this.cfg.nLayers, holders, auto.maxLayers);
      this.log("info", "auto layers", { start: r.start, end: r.end });
      await this.loadRange(r);
    }
    for (const r of this.init.ranges) await this.loadRange(r);
    this.measure();
    const idle = this.init.sessionIdleMs ?? 15 * 60_000;
    setInterval(() => this.sweepIdle(idle), Math.min(60_000, idle)).unref();
    setInterval(() => void this.pingLinks(), 2000).unref();
    await this.t.handle(PROTOCOL_FORWARD, (ch) => void this.serveForward(ch));
    await this.t.handle(PROTOCOL_CONTROL, (ch) => void this.serveControl(ch));
    for (const addr of join ?? []) await this.joinGateway(addr);
  }

  private async askHolders(addr: string): Promise<Holder[]> {
    const ch = await this.t.dial(addr, PROTOCOL_CONTROL);
    await ch.send(encodeControl({ type: "holders", id: 0 }));
    for await (const m of ch.messages()) {
      const c = decodeJSON<{ type: string; holders?: Holder[] }>(m, "holders reply");
      await ch.close();
      if (c.type === "holders" && Array.isArray(c.holders)) return c.holders;
      break;
    }
    throw new LayerswarmError("BAD_ARGUMENT", `the gateway at ${addr} did not say what the swarm holds`);
  }

  // Register with a gateway and stay registered: when the control stream
  // closes (the gateway restarted, the network broke), join again with backoff.
  private async joinGateway(addr: string): Promise<void> {
    const ch = await this.t.dial(addr, PROTOCOL_CONTROL);
    this.control = ch;
    await ch.send(encodeControl({ type: "register", info: this.info() }));
    this.log("info", "joined", { gateway: ch.remotePeer });
    void this.serveControl(ch).then(() => this.rejoin(addr));
  }

  private async rejoin(addr: string): Promise<void> {
    this.control = undefined;
    for (let wait = 500; !this.stopped; wait = Math.min(wait * 2, 30_000)) {
      await new Promise((r) => setTimeout(r, wait).unref());
      if (this.stopped) return;
      try {
        await this.joinGateway(addr);
        return;
      } catch (e) {
        this.log("info", "gateway unreachable, retrying", { in_ms: wait * 2, error: (e as Error).message });
      }
    }
  }

  // Sessions nobody has stepped for a long time (their gateway went away) are dropped.
  private lastUsed = new Map<string, number>();
  private links = new Map<string, number>();
  // Ping the peers sent to in the last 30 s (the dashboard's link latencies).
  private async pingLinks(): Promise<void> {
    const now = Date.now();
    for (const [peer, u] of this.outbox.lastUsed) {
      if (now - u.at > 30_000) {
        this.outbox.lastUsed.delete(peer);
        this.links.delete(peer);
        continue;
      }
      const a = u.addrs[0];
      if (!a || peer === this.t.peerId) continue;
      try {
        this.links.set(peer, Math.round((await this.t.ping(a.includes("/p2p/") ? a : `${a}/p2p/${peer}`, AbortSignal.timeout(2000))) * 100) / 100);
      } catch {
        this.links.delete(peer);
      }
    }
  }
  private sweepIdle(idleMs: number): void {
    const now = Date.now();
    for (const [session, t] of this.lastUsed)
      if (now - t > idleMs) {
        for (const s of this.slices) s.dropSession(session);
        this.lastUsed.delete(session);
        this.log("info", "dropped idle session", { idle_ms: now - t });
      }
  }

  private async serveControl(ch: Channel): Promise<void> {
    try {
      for await (const m of ch.messages()) {
        if (m[0] !== MsgType.CONTROL) throw new WireError(`control stream: unexpected message type ${m[0]}`);
        const c = decodeJSON<{ type: string; id?: number; start?: number; end?: number; session?: string }>(m, "control message");
        if (c.type === "load" && Number.isInteger(c.start) && Number.isInteger(c.end)) {
          try {
            await this.loadRange({ start: c.start!, end: c.end! });
            await ch.send(encodeControl({ type: "loaded", id: c.id, info: this.info() }));
          } catch (e) {
            await ch.send(encodeControl({ type: "load-failed", id: c.id, message: (e as Error).message }));
          }
        } else if (c.type === "drop" && typeof c.session === "string") {
          for (const s of this.slices) s.dropSession(c.session);
          this.queues.delete(c.session);
          this.seen.delete(c.session);
          this.lastUsed.delete(c.session);
        } else if (c.type === "info") {
          await ch.send(encodeControl({ type: "info", id: c.id, info: this.info() }));
        } else throw new WireError(`control stream: unknown command "${String(c.type).slice(0, 40)}"`);
      }
    } catch (e) {
      this.log("warn", "control stream closed", { peer: ch.remotePeer, error: (e as Error).message });
      ch.abort(e as Error);
    }
  }

  private async serveForward(ch: Channel): Promise<void> {
    try {
      for await (const m of ch.messages()) {
        if (m[0] !== MsgType.FORWARD) throw new WireError(`forward stream: unexpected message type ${m[0]}`);
        this.enqueue(decodeForward(m, this.limits));
        this.stats.frames++;
      }
    } catch (e) {
      this.stats.badFrames++;
      this.log("warn", "bad stream closed", { peer: ch.remotePeer, error: (e as Error).message });
      ch.abort(e as Error);
    }
  }

  private seen = new Map<string, number>(); // live session -> time of its last step
  private recentSessions(): number {
    const now = Date.now();
    let n = 0;
    for (const [k, t] of this.seen) {
      if (now - t < 250) n++;
      else this.seen.delete(k);
    }
    return n;
  }

  private enqueue(f: Forward): void {
    this.seen.set(f.session, Date.now());
    this.lastUsed.set(f.session, Date.now());
    const q = this.queues.get(f.session);
    if (q) q.push(f);
    else this.queues.set(f.session, [f]);
    this.pump();
  }

  // Run queued steps in batches until the queues are empty, yielding to the
  // event loop between batches so frames that arrive meanwhile join the next one.
  private pump(): void {
    if (this.busy || this.stopped) return;
    this.busy = true;
    // With several sessions in flight, wait a moment for their steps to arrive
    // so they share one pass over the weights; alone, run at once.
    const waitMs = this.recentSessions() > 1 ? (this.init.batchWindowMs ?? Number(process.env.LAYERSWARM_BATCH_WINDOW_MS ?? 2)) : 0;
    const run = waitMs > 0 ? (f: () => void) => setTimeout(f, waitMs) : setImmediate;
    run(() => {
      const t0 = performance.now();
      try {
        this.runBatch();
        this.stats.busyMs += performance.now() - t0;
      } finally {
        this.busy = false;
        if (this.queues.size > 0) this.pump();
      }
    });
  }

  private runBatch(): void {
    const maxRows = this.init.maxBatchRows ?? 256;
    // the head of each session's queue; steps that share a layer range share a call
    const groups = new Map<string, Forward[]>();
    let rows = 0;
    for (const [session, q] of this.queues) {
      const f = q[0];
      if (rows > 0 && rows + f.T > maxRows) continue;
      q.shift();
      if (q.length === 0) this.queues.delete(session);
      const hop = f.route.hops[f.hop];
      const key = `${hop.start}:${hop.end}`;
      (groups.get(key) ?? groups.set(key, []).get(key)!).push(f);
      rows += f.T;
    }
    for (const [key, fs] of groups) {
      const [start, end] = key.split(":").map(Number);
      const slice = this.slices.find((s) => s.range.start <= start && end <= s.range.end);
      if (!slice) {
        for (const f of fs) this.fail(f, "BAD_RANGE", `this node does not hold layers [${start}, ${end})`);
        continue;
      }
      let outs: Float32Array[];
      const tb = performance.now();
      try {
        outs = slice.forward(fs.map((f) => ({ session: f.session, pos: f.pos, T: f.T, hidden: f.hidden })), undefined, { start, end });
      } catch (e) {
        // one bad step must not sink the others: retry them one by one
        // (forward validates every step before it changes any state)
        if (fs.length > 1) {
          this.runSingly(fs, slice, start, end);
          continue;
        }
        this.fail(fs[0], (e as LayerswarmError).code ?? "INTERNAL", (e as Error).message);
        continue;
      }
      this.stats.batches++;
      this.stats.rows += fs.reduce((a, f) => a + f.T, 0);
      fs.forEach((f, i) => this.emit(f, outs[i]));
      this.report(fs.map((f) => f.req), performance.now() - tb);
    }
  }

  // Tell the gateway which of its steps passed here and how long batches took
  // (the dashboard's pipeline view, the step-latency metrics), at most every
  // 100 ms so that reporting costs the hot path nothing.
  private pendingReport: { reqs: number[]; ms: number[] } | undefined;
  private report(reqs: number[], ms: number): void {
    if (!this.control) return;
    if (!this.pendingReport) {
      this.pendingReport = { reqs: [], ms: [] };
      setTimeout(() => {
        const r = this.pendingReport!;
        this.pendingReport = undefined;
        this.control?.send(encodeControl({ type: "batch", reqs: r.reqs, ms: r.ms })).catch(() => {});
      }, 100).unref();
    }
    this.pendingReport.reqs.push(...reqs);
    this.pendingReport.ms.push(Math.round(ms * 100) / 100);
  }

  private runSingly(fs: Forward[], slice: SliceRuntime, start: number, end: number): void {
    for (const f of fs) {
      try {
        const [o] = slice.forward([{ session: f.session, pos: f.pos, T: f.T, hidden: f.hidden }], undefined, { start, end });
        this.emit(f, o);
      } catch (e) {
        this.fail(f, (e as LayerswarmError).code ?? "INTERNAL", (e as Error).message);
      }
    }
  }

  private emit(f: Forward, out: Float32Array): void {
    const C = this.cfg.dim;
    if (f.hop + 1 < f.route.hops.length) {
      const next = f.route.hops[f.hop + 1];
      if (next.peer === this.t.peerId) {
        // the next stage is another of our slices (e.g. layers loaded after a failure)
        this.enqueue({ ...f, hop: f.hop + 1, hidden: out });
        return;
      }
      this.sendTo(next.peer, next.addrs, encodeForward({ ...f, hop: f.hop + 1, hidden: out }));
    } else {
      const last = (f.flags & FLAG_LAST_ROW_ONLY) !== 0;
      const hidden = last ? out.subarray((f.T - 1) * C) : out;
      this.sendTo(f.route.replyTo.peer, f.route.replyTo.addrs,
        encodeResult({ req: f.req, session: f.session, pos: f.pos, T: hidden.length / C, dim: C, dtype: f.dtype, flags: f.flags, hidden }));
    }
  }

  private fail(f: Forward, code: string, message: string): void {
    this.log("warn", "step failed", { session: f.session.slice(0, 12), code, message });
    this.sendTo(f.route.replyTo.peer, f.route.replyTo.addrs, encodeError({ req: f.req, session: f.session, code, message }));
  }

  private sendTo(peer: string, addrs: string[], msg: Uint8Array): void {
    this.outbox.send(peer, addrs, msg).catch(() => { /* logged by the outbox; the gateway notices the missing result */ });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.t.stop();
  }
}

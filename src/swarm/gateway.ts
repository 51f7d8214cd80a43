// The gateway: holds the tokenizer, embeddings, final norm, head and sampling
// (text, token ids and logits never leave it), keeps a registry of nodes, plans
// a route (a chain of nodes covering all layers) per session, and sends each
// step to the route's first node; the last node returns the result here.
//
// Failure: when a node of a route disconnects or a step times out, the
// session's waiting steps are collected, a new route is planned over the nodes
// left (asking nodes with free memory to load lost layers), the session's
// history is replayed there to rebuild the KV caches, and the waiting steps are
// resent. Kernels are deterministic, so the replayed session continues with
// exactly the tokens it would have produced.

import { EventEmitter } from "node:events";
import { LayerswarmError, throwIfAborted } from "../errors.js";
import { LayerRange } from "../model/config.js";
import { LayerStack, Model } from "../model/model.js";
import { Step } from "../model/runtime.js";
import { Logger, logger } from "./log.js";
import { NodeInfo } from "./node.js";
import { Outbox } from "./outbox.js";
import { Stage, missingLayers, planRoute } from "./placement.js";
import { Channel, PROTOCOL_CONTROL, PROTOCOL_FORWARD, Transport } from "./transport.js";
import {
  DType, FLAG_LAST_ROW_ONLY, Limits, MsgType, Route, WireError, WireErrorMsg, decodeJSON, decodeResult, encodeControl, encodeForward,
} from "./wire.js";

export interface GatewayOptions {
  stepTimeoutMs?: number; // a step that takes longer marks its route as failed (default 30 s)
  loadTimeoutMs?: number; // how long a node may take to load lost layers (default 120 s)
  dtype?: DType; // hidden-state encoding on the wire (default f32: exact)
  replayChunk?: number; // tokens per replay chunk (default 64)
  maxRecoveries?: number; // per step (default 3)
}

export interface NodeEntry {
  info: NodeInfo;
  ch: Channel;
  state: "serving" | "lost";
  since: number;
  sessions: number; // sessions routed through it now
  stepMs?: number; // recent step latency seen from the gateway (route-level)
  rttMs?: number; // control round trip from the gateway
  batchMs: number[]; // recent batch compute times reported by the node
}

class RouteLost extends Error {
  constructor(readonly peers: string[], message: string) {
    super(message);
  }
}

interface Pending {
  resolve: (h: Float32Array) => void;
  reject: (e: Error) => void;
  peers: string[];
  timer: NodeJS.Timeout;
  session: string;
  sentAt: number;
  pos: number;
  T: number;
  stage: number; // index in peers of the stage working on it (from the nodes' batch reports)
}

interface Waiting {
  step: Step;
  resolve: (h: Float32Array) => void;
  reject: (e: Error) => void;
}

interface SessionState {
  id: string;
  createdAt: number;
  firstDecodeAt?: number;
  decoded: number;
  positions: number;
  epoch: number;
  route: Stage[];
  history: { pos: number; tokens: number[] }[];
  retry: Waiting[];
  recovering?: Promise<void>;
}

export type SwarmEvent =
  | { type: "node-joined"; peer: string; ranges: LayerRange[] }
  | { type: "node-lost"; peer: string; reason: string }
  | { type: "node-loaded"; peer: string; ranges: LayerRange[] }
  | { type: "reroute"; session: string; from: string[]; to: string[] }
  | { type: "replay"; session: string; positions: number; ms: number };

export class Gateway implements LayerStack {
  readonly nodes = new Map<string, NodeEntry>();
  readonly events = new EventEmitter();
  private pending = new Map<number, Pending>();
  private sessions = new Map<string, SessionState>();
  private nextReq = 1;
  private outbox: Outbox;
  private log: Logger;
  private limits: Limits;
  private ctlReq = 1;
  private ctlWaiters = new Map<number, { peer: string; done: (m: { type: string; info?: NodeInfo; message?: string }) => void; fail: (e: Error) => void }>();
  private o: Required<GatewayOptions>;
  stats = { steps: 0, recoveries: 0, replayedPositions: 0 };

  constructor(readonly model: Model, private t: Transport, o: GatewayOptions = {}) {
    this.o = { stepTimeoutMs: 30_000, loadTimeoutMs: 120_000, dtype: DType.F32, replayChunk: 64, maxRecoveries: 3, ...o };
    this.log = logger(`gateway:${t.peerId.slice(-6)}`);
    this.outbox = new Outbox(t, this.log);
    this.limits = { maxDim: model.cfg.dim, maxRows: 1 << 16 };
  }

  get peerId(): string {
    return this.t.peerId;
  }
  addrs(): string[] {
    return this.t.addrs();
  }

  async start(): Promise<void> {
    await this.t.handle(PROTOCOL_CONTROL, (ch) => void this.serveControl(ch));
    await this.t.handle(PROTOCOL_FORWARD, (ch) => void this.serveResults(ch));
    this.t.onDisconnect((peer) => this.lose(peer, "disconnected"));
  }

  private emit(e: SwarmEvent): void {
    this.events.emit("event", { ...e, t: Date.now() });
  }

  // ------------------------------------------------------------ registry

  private async serveControl(ch: Channel): Promise<void> {
    let peer: string | undefined;
    try {
      for await (const m of ch.messages()) {
        if (m[0] !== MsgType.CONTROL) throw new WireError(`control stream: unexpected message type ${m[0]}`);
        const c = decodeJSON<{ type: string; id?: number; info?: NodeInfo; message?: string }>(m, "control message");
        if (c.type === "register" && c.info) {
          const info = c.info;
          if (info.peer !== ch.remotePeer) throw new WireError(`node claims peer id ${info.peer} but is ${ch.remotePeer}`);
          if (info.model?.dim !== this.model.cfg.dim || info.model?.layers !== this.model.cfg.nLayers)
            throw new WireError(`node serves a different model (${info.model?.name}, ${info.model?.layers} layers of ${info.model?.dim})`);
          peer = info.peer;
          this.nodes.set(peer, { info, ch, state: "serving", since: Date.now(), sessions: 0, batchMs: [] });
          this.log("info", "node joined", { peer, ranges: info.ranges });
          this.emit({ type: "node-joined", peer, ranges: info.ranges });
        } else if (c.type === "batch" && peer) {
          const b = c as unknown as { reqs: number[]; ms: number[] };
          const n = this.nodes.get(peer);
          if (n && Array.isArray(b.reqs) && Array.isArray(b.ms)) {
            for (const ms of b.ms.slice(0, 10_000)) {
              n.batchMs.push(Number(ms) || 0);
              if (n.batchMs.length > 64) n.batchMs.shift();
              this.events.emit("batch", { peer, ms: Number(ms) || 0 });
            }
            for (const r of b.reqs) {
              const p = this.pending.get(r);
              if (p) p.stage = Math.max(p.stage, p.peers.lastIndexOf(peer) + 1);
            }
          }
        } else if (c.type === "holders") {
          // a node joining with --layers auto asks what the swarm holds
          await ch.send(encodeControl({ type: "holders", id: c.id, holders: this.serving().map((n) => ({ id: n.info.peer, ranges: n.info.ranges })) }));
        } else if (c.id !== undefined && this.ctlWaiters.has(c.id)) {
          if (c.info && peer) {
            const e = this.nodes.get(peer);
            if (e) e.info = c.info;
          }
          this.ctlWaiters.get(c.id)!.done(c);
          this.ctlWaiters.delete(c.id);
        }
      }
    } catch (e) {
      this.log("warn", "control stream error", { peer: ch.remotePeer, error: (e as Error).message });
      ch.abort(e as Error);
    }
    if (peer) this.lose(peer, "control stream closed");
  }

  private control(peer: string, msg: Record<string, unknown>, timeoutMs: number): Promise<{ type: string; info?: NodeInfo; message?: string }> {
    const e = this.nodes.get(peer);
    if (!e || e.state !== "serving") return Promise.reject(new Error(`node ${peer} is not serving`));
    const id = this.ctlReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.ctlWaiters.delete(id);
        reject(new Error(`node ${peer} did not answer "${msg.type}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.ctlWaiters.set(id, {
        peer,
        done: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        fail: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      e.ch.send(encodeControl({ ...msg, id })).catch((err) => {
        clearTimeout(timer);
        this.ctlWaiters.delete(id);
        reject(err);
      });
    });
  }

  lose(peer: string, reason: string): void {
    const e = this.nodes.get(peer);
    if (!e || e.state === "lost") return;
    e.state = "lost";
    e.since = Date.now();
    this.outbox.forget(peer);
    this.log("warn", "node lost", { peer, reason });
    this.emit({ type: "node-lost", peer, reason });
    for (const [id, w] of this.ctlWaiters)
      if (w.peer === peer) {
        this.ctlWaiters.delete(id);
        w.fail(new Error(`node ${peer} ${reason}`));
      }
    for (const [req, p] of this.pending)
      if (p.peers.includes(peer)) {
        this.pending.delete(req);
        clearTimeout(p.timer);
        p.reject(new RouteLost([peer], `node ${peer} ${reason}`));
      }
  }

  serving(): NodeEntry[] {
    return [...this.nodes.values()].filter((n) => n.state === "serving");
  }

  coverage(): { covered: boolean; missing: LayerRange[] } {
    const missing = missingLayers(this.model.cfg.nLayers, this.serving().map((n) => ({ id: n.info.peer, ranges: n.info.ranges })));
    return { covered: missing.length === 0, missing };
  }

  async waitForCoverage(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!this.coverage().covered) {
      throwIfAborted(signal);
      if (Date.now() > until)
        throw new LayerswarmError("NO_ROUTE", `no route: layers ${this.coverage().missing.map((r) => `[${r.start}, ${r.end})`).join(" ")} are held by no node`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  // ------------------------------------------------------------ routing

  private plan(): Stage[] | undefined {
    return planRoute(this.model.cfg.nLayers, this.serving().map((n) => ({ id: n.info.peer, ranges: n.info.ranges, load: n.sessions })));
  }

  // A route over the serving nodes; asks nodes to load layers nobody holds.
  private async route(signal?: AbortSignal): Promise<Stage[]> {
    let r = this.plan();
    if (r) return r;
    for (const gap of this.coverage().missing) {
      const candidates = this.serving().sort((a, b) => b.info.capacity.freeBytes - a.info.capacity.freeBytes);
      let loaded = false;
      for (const c of candidates) {
        throwIfAborted(signal);
        try {
          const m = await this.control(c.info.peer, { type: "load", start: gap.start, end: gap.end }, this.o.loadTimeoutMs);
          if (m.type === "loaded" && m.info) {
            c.info = m.info;
            this.emit({ type: "node-loaded", peer: c.info.peer, ranges: m.info.ranges });
            loaded = true;
            break;
          }
          this.log("warn", "load refused", { peer: c.info.peer, message: m.message });
        } catch (e) {
          this.log("warn", "load failed", { peer: c.info.peer, error: (e as Error).message });
        }
      }
      if (!loaded) break;
    }
    r = this.plan();
    if (!r) {
      const missing = this.coverage().missing.map((g) => `[${g.start}, ${g.end})`).join(" ");
      throw new LayerswarmError("NO_ROUTE", `no route through the swarm: layers ${missing} are held by no serving node and none could load them`);
    }
    return r;
  }

  private hops(route: Stage[]): Route {
    return {
      hops: route.map((s) => ({ peer: s.id, addrs: this.nodes.get(s.id)!.info.addrs, start: s.start, end: s.end })),
      replyTo: { peer: this.t.peerId, addrs: this.t.addrs() },
    };
  }

  // Concurrent first steps of a session (the chunks of a prompt) must share one state.
  private opening = new Map<string, Promise<SessionState>>();
  private async session(id: string, signal?: AbortSignal): Promise<SessionState> {
    const s = this.sessions.get(id);
    if (s) return s;
    let p = this.opening.get(id);
    if (!p) {
      p = this.route(signal).then((route) => {
        const st: SessionState = { id, epoch: 0, route, history: [], retry: [], createdAt: Date.now(), decoded: 0, positions: 0 };
        for (const r of route) this.nodes.get(r.id)!.sessions++;
        this.sessions.set(id, st);
        return st;
      }).finally(() => this.opening.delete(id));
      this.opening.set(id, p);
    }
    return p;
  }

  // ------------------------------------------------------------ steps

  async forward(steps: Step[], signal?: AbortSignal): Promise<Float32Array[]> {
    return Promise.all(steps.map((st) => this.step(st, signal)));
  }

  private async step(st: Step, signal?: AbortSignal): Promise<Float32Array> {
    const s = await this.session(st.session, signal);
    if (st.tokens) {
      // a step at an earlier position rewrites the history from there
      s.history = s.history.filter((h) => h.pos < st.pos);
      s.history.push({ pos: st.pos, tokens: st.tokens });
    }
    this.stats.steps++;
    s.positions = Math.max(s.positions, st.pos + st.T);
    if (st.T === 1 && st.pos > 0 && s.history.length > 1) {
      s.firstDecodeAt ??= Date.now();
      s.decoded++;
    }
    if (s.recovering) await s.recovering.catch(() => {});
    try {
      return await this.send(s, st, signal);
    } catch (e) {
      if (!(e instanceof RouteLost)) throw e;
      return this.retryAfterRecovery(s, st, e, signal);
    }
  }

  private retryAfterRecovery(s: SessionState, st: Step, cause: RouteLost, signal?: AbortSignal): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      s.retry.push({ step: st, resolve, reject });
      if (!s.recovering) {
        s.recovering = new Promise<void>((r) => setImmediate(r)) // let every failed step of this session arrive
          .then(() => this.recover(s, cause, signal))
          .finally(() => (s.recovering = undefined));
        s.recovering.catch(() => {});
      }
    });
  }

  // Reroute the session, replay its history, resend its waiting steps; again
  // on the next route if that one fails too, up to maxRecoveries times.
  private async recover(s: SessionState, cause: RouteLost, signal: AbortSignal | undefined): Promise<void> {
    const waiting = s.retry.sort((a, b) => a.step.pos - b.step.pos);
    s.retry = [];
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt > this.o.maxRecoveries) throw new LayerswarmError("NO_ROUTE", `gave up after ${attempt - 1} reroutes: ${cause.message}`);
        await this.reroute(s, cause, waiting[0].step.pos, signal);
        const outs = await Promise.all(waiting.map((w) => this.send(s, w.step, signal)));
        waiting.forEach((w, i) => w.resolve(outs[i]));
        return;
      } catch (e) {
        if (e instanceof RouteLost) {
          cause = e;
          continue;
        }
        for (const w of waiting) w.reject(e as Error);
        return;
      }
    }
  }

  private async reroute(s: SessionState, cause: RouteLost, upTo: number, signal: AbortSignal | undefined): Promise<void> {
    this.stats.recoveries++;
    const t0 = Date.now();
    const old = s.route.map((x) => x.id);
    for (const st of s.route) {
      const n = this.nodes.get(st.id);
      if (n) n.sessions--;
    }
    s.route = [];
    for (const p of cause.peers) this.lose(p, "failed a step");
    // drop the old epoch's KV on the nodes still alive (best effort)
    for (const peer of new Set(old)) if (this.nodes.get(peer)?.state === "serving") this.control(peer, { type: "drop", session: this.wireSession(s) }, 1000).catch(() => {});
    s.epoch++;
    s.route = await this.route(signal);
    for (const st of s.route) this.nodes.get(st.id)!.sessions++;
    this.emit({ type: "reroute", session: s.id, from: old, to: s.route.map((x) => x.id) });
    this.log("warn", "rerouting session", { epoch: s.epoch, from: old, to: s.route.map((x) => x.id), reason: cause.message });
    // replay the history before the first waiting step, in chunks, pipelined
    const toks: number[] = [];
    for (const h of s.history) if (h.pos < upTo) toks.push(...h.tokens.slice(0, upTo - h.pos));
    if (toks.length !== upTo) throw new LayerswarmError("NO_ROUTE", `cannot replay: the gateway knows ${toks.length} of ${upTo} positions`);
    const replays: Promise<Float32Array>[] = [];
    for (let p = 0; p < toks.length; p += this.o.replayChunk) {
      const chunk = toks.slice(p, p + this.o.replayChunk);
      replays.push(this.send(s, { session: s.id, pos: p, T: chunk.length, hidden: this.model.embedder.embed(chunk), lastRowOnly: true }, signal));
    }
    await Promise.all(replays);
    this.stats.replayedPositions += toks.length;
    this.emit({ type: "replay", session: s.id, positions: toks.length, ms: Date.now() - t0 });
  }

  private wireSession(s: SessionState): string {
    return `${s.id}#${s.epoch}`;
  }

  private send(s: SessionState, st: Step, signal?: AbortSignal): Promise<Float32Array> {
    throwIfAborted(signal);
    const route = this.hops(s.route);
    const req = this.nextReq++ >>> 0;
    const peers = s.route.map((x) => x.id);
    const msg = encodeForward({
      req, session: this.wireSession(s), pos: st.pos, T: st.T, dim: this.model.cfg.dim, dtype: this.o.dtype,
      flags: st.lastRowOnly ? FLAG_LAST_ROW_ONLY : 0, hop: 0, route, hidden: st.hidden,
    });
    const onAbort = () => {
      const p = this.pending.get(req);
      if (!p) return;
      this.pending.delete(req);
      clearTimeout(p.timer);
      p.reject(new LayerswarmError("ABORTED", "request aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    return new Promise<Float32Array>((resolve, reject) => {
      const timer = setTimeout(() => this.timeout(req), this.o.stepTimeoutMs);
      this.pending.set(req, { resolve, reject, peers, timer, session: s.id, sentAt: Date.now(), pos: st.pos, T: st.T, stage: 0 });
      const first = route.hops[0];
      this.outbox.send(first.peer, first.addrs, msg).catch((e) => {
        const p = this.pending.get(req);
        if (!p) return;
        this.pending.delete(req);
        clearTimeout(p.timer);
        p.reject(new RouteLost([first.peer], `cannot reach ${first.peer}: ${(e as Error).message}`));
      });
    }).finally(() => signal?.removeEventListener("abort", onAbort)); // one listener per step must not pile up
  }

  // A step took too long: find which node of its route stopped answering.
  private async timeout(req: number): Promise<void> {
    const p = this.pending.get(req);
    if (!p) return;
    this.pending.delete(req);
    const results = await Promise.all([...new Set(p.peers)].map((peer) =>
      this.control(peer, { type: "info" }, Math.min(2000, this.o.stepTimeoutMs)).then(() => undefined, () => peer)));
    const dead = results.filter((x): x is string => !!x);
    // Nobody silent: the route is only slow (or lost a frame). Blame no one; the
    // recovery replays on the best route there is, at most maxRecoveries times.
    p.reject(new RouteLost(dead, `step timed out after ${this.o.stepTimeoutMs} ms${dead.length ? "" : " (every node still answers)"}`));
  }

  private async serveResults(ch: Channel): Promise<void> {
    try {
      for await (const m of ch.messages()) {
        if (m[0] === MsgType.RESULT) {
          const r = decodeResult(m, this.limits);
          const p = this.pending.get(r.req);
          if (!p) continue; // a late result after a reroute
          this.pending.delete(r.req);
          clearTimeout(p.timer);
          for (const peer of p.peers) {
            const n = this.nodes.get(peer);
            if (n) n.stepMs = Date.now() - p.sentAt;
          }
          p.resolve(r.hidden);
        } else if (m[0] === MsgType.ERROR) {
          const e = decodeJSON<WireErrorMsg>(m, "error message");
          const p = this.pending.get(e.req);
          if (!p) continue;
          this.pending.delete(e.req);
          clearTimeout(p.timer);
          p.reject(new LayerswarmError((e.code as never) ?? "INTERNAL", `node: ${e.message}`));
        } else throw new WireError(`result stream: unexpected message type ${m[0]}`);
      }
    } catch (e) {
      this.log("warn", "result stream error", { peer: ch.remotePeer, error: (e as Error).message });
      ch.abort(e as Error);
    }
  }

  async dropSession(id: string): Promise<void> {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessions.delete(id);
    for (const st of s.route) {
      const n = this.nodes.get(st.id);
      if (n) n.sessions--;
    }
    for (const peer of new Set(s.route.map((x) => x.id)))
      if (this.nodes.get(peer)?.state === "serving") {
        const n = this.nodes.get(peer)!;
        n.ch.send(encodeControl({ type: "drop", session: this.wireSession(s) })).catch(() => {});
      }
  }

  // Fresh information from a node (capacity, statistics) and the round trip.
  async nodeInfo(peer: string, timeoutMs = 2000): Promise<NodeInfo | undefined> {
    const t0 = performance.now();
    const m = await this.control(peer, { type: "info" }, timeoutMs).catch(() => undefined);
    const n = this.nodes.get(peer);
    if (m?.info && n) {
      n.info = m.info;
      n.rttMs = Math.round((performance.now() - t0) * 100) / 100;
    }
    return m?.info;
  }

  // Refresh every node's information every `ms` (for the dashboard); returns a stop function.
  poll(ms = 2000): () => void {
    const timer = setInterval(() => {
      for (const n of this.serving()) void this.nodeInfo(n.info.peer, Math.min(ms, 2000));
    }, ms);
    timer.unref();
    return () => clearInterval(timer);
  }

  // Where every session is: its route, and the stage each of its steps in flight is at.
  sessionsView() {
    const inflight = new Map<string, { pos: number; T: number; stage: number; ms: number }[]>();
    for (const p of this.pending.values()) {
      const l = inflight.get(p.session) ?? inflight.set(p.session, []).get(p.session)!;
      l.push({ pos: p.pos, T: p.T, stage: Math.min(p.stage, p.peers.length), ms: Date.now() - p.sentAt });
    }
    return [...this.sessions.values()].map((s) => ({
      id: s.id.replace(/^(.{4}).*(.{4})$/, "$1…$2"),
      epoch: s.epoch,
      positions: s.positions,
      route: s.route.map((r) => ({ peer: r.id, start: r.start, end: r.end })),
      inflight: inflight.get(s.id) ?? [],
      decoded: s.decoded,
      tokPerSec: s.firstDecodeAt && Date.now() > s.firstDecodeAt ? Math.round((s.decoded * 10000) / (Date.now() - s.firstDecodeAt)) / 10 : 0,
      ageMs: Date.now() - s.createdAt,
    }));
  }

  activeSessions(): number {
    return this.sessions.size;
  }

  async stop(): Promise<void> {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    await this.t.stop();
  }
}

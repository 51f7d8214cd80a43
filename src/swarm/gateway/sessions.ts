// Sessions with replay. Each session has a route and, per route (epoch), a
// fresh random wire id and a grant signed by this gateway. When a route fails
// the session's waiting steps are collected, a new route is planned, the
// session's history is replayed there to rebuild the nodes' caches, and the
// waiting steps are sent again. Kernels are deterministic, so the session
// continues with exactly the tokens it would have produced. Recovery goes on
// after every lost node it finds; attempts that lose nobody are bounded.

import { randomBytes } from "node:crypto";
import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { Step } from "../../model/runtime.js";
import { Identity } from "../identity.js";
import { Logger } from "../log.js";
import { Stage } from "../placement.js";
import { PROTOCOL_VERSION, parseReceipt, signGrant } from "../protocol/index.js";
import { request } from "../rpc.js";
import { Transport } from "../transport.js";
import { NodeDirectory } from "./directory.js";
import { RouteLost, StepPipeline, WireSession } from "./pipeline.js";
import { Router } from "./router.js";

interface Waiting {
  step: Step; // its hidden state is the remote stages' input
  resolve: (h: Float32Array) => void;
  reject: (e: Error) => void;
}

export interface SessionState {
  id: string;
  createdAt: number;
  firstDecodeAt?: number;
  decoded: number;
  positions: number;
  epoch: number;
  route: Stage[];
  wire: WireSession;
  history: { pos: number; tokens: number[] }[];
  retry: Waiting[];
  recovering?: Promise<void>;
  avoid: Set<string>; // nodes this session routes around (they failed it while still answering)
  stale?: boolean; // a node evicted it (or was banned): reroute before the next step
  nextCause?: RouteLost; // why the recovery after the running one is needed
  exclude?: () => ReadonlySet<string>; // nodes no route of it may use (strict mode: its twin's route and their address groups)
  cuts?: () => readonly number[] | undefined; // the stage boundaries its routes must have (strict mode over a rounded wire: its twin's)
}

export interface SessionOptions {
  replayChunk: number;
  maxRecoveries: number; // recoveries in a row that lose no node
  // the remote stages' input for a replayed chunk at pos (embedding, then the
  // gateway's own first layers, on a scratch session; chunks come in order from 0)
  replayInput: (sessionId: string, tokens: number[], pos: number) => Float32Array;
  replayDone: (sessionId: string) => void;
  onEpoch?: (owner: string, sid: string, route: Stage[]) => void; // a session has a new route (the receipt ledger follows it)
  // the stages of epoch `sid` rolled it back to pos and signed these receipts (per hop): a reason to move the session, or undefined
  onRollback?: (sid: string, pos: number, receipts: (Uint8Array | undefined)[]) => string | undefined;
  rollbackTimeoutMs?: number; // default 10 s
}

export class Sessions {
  readonly all = new Map<string, SessionState>();
  private opening = new Map<string, Promise<SessionState>>();
  stats = { recoveries: 0, replayedPositions: 0 };

  constructor(
    private t: Transport,
    private id: Identity,
    private dir: NodeDirectory,
    private router: Router,
    private pipe: StepPipeline,
    private log: Logger,
    private o: SessionOptions,
  ) {
    pipe.onEvicted = (sid, by) => {
      for (const s of this.all.values()) if (s.wire.sid === sid && s.route.some((r) => r.id === by)) s.stale = true;
    };
  }

  // A wire session for a route: a fresh id and a grant for it.
  async wireFor(owner: string, route: Stage[]): Promise<WireSession> {
    const sid = randomBytes(16).toString("hex");
    const grant = await signGrant({
      v: PROTOCOL_VERSION, gateway: this.id.peerId, gatewayAddrs: this.t.addrs().slice(0, 16), session: sid, issuedAt: Date.now(),
      hops: route.map((s) => ({ peer: s.id, addrs: this.dir.get(s.id)!.record.addrs, start: s.start, end: s.end })),
    }, this.id);
    return { owner, sid, grant, grantSent: false };
  }

  private hops(s: SessionState) {
    return s.route.map((r) => ({ peer: r.id, addrs: this.dir.get(r.id)?.record.addrs ?? [] }));
  }

  // Concurrent first steps of a session (the chunks of a prompt) share one state.
  // rows: the first step's, for the route's cost (a long prompt weighs link throughput).
  async open(id: string, signal?: AbortSignal, rows = 1, exclude?: () => ReadonlySet<string>, cuts?: () => readonly number[] | undefined): Promise<SessionState> {
    const s = this.all.get(id);
    if (s) return s;
    let p = this.opening.get(id);
    if (!p) {
      p = (async () => {
        const route = await this.router.route(signal, exclude?.(), rows, cuts?.());
        const wire = await this.wireFor(id, route);
        this.o.onEpoch?.(id, wire.sid, route);
        const st: SessionState = { id, epoch: 0, route, wire, history: [], retry: [], avoid: new Set(), createdAt: Date.now(), decoded: 0, positions: 0, exclude, cuts };
        this.take(route, +1);
        this.all.set(id, st);
        return st;
      })().finally(() => this.opening.delete(id));
      this.opening.set(id, p);
    }
    return p;
  }

  private take(route: Stage[], d: number) {
    for (const r of route) {
      const n = this.dir.get(r.id);
      if (n) {
        n.sessions = Math.max(0, n.sessions + d);
        n.routed = true;
      }
    }
  }

  // One step of a session, through its route; fails over as needed.
  async step(st: Step, remoteInput: Float32Array, signal?: AbortSignal): Promise<Float32Array> {
    const s = await this.open(st.session, signal, st.T);
    if (st.tokens) {
      // a step at an earlier position rewrites the history from there
      s.history = s.history.filter((h) => h.pos < st.pos);
      s.history.push({ pos: st.pos, tokens: st.tokens });
    }
    s.positions = Math.max(s.positions, st.pos + st.T);
    if (st.T === 1 && st.pos > 0 && s.history.length > 1) {
      s.firstDecodeAt ??= Date.now();
      s.decoded++;
    }
    const remote: Step = { ...st, hidden: remoteInput };
    if (s.recovering) await s.recovering.catch(() => {});
    if (s.stale && !s.recovering) {
      s.stale = false;
      return this.retryAfterRecovery(s, remote, new RouteLost([], "a node evicted the session", "BUSY"), signal);
    }
    try {
      const t0 = performance.now();
      const out = await this.pipe.send(s.wire, this.hops(s), remote, signal);
      // a real one-row step through one node alone: its time is that node's (route costs take the worse of this and its probes)
      if (st.T === 1 && s.route.length === 1) this.dir.realStep(s.route[0].id, performance.now() - t0, s.route[0].end - s.route[0].start);
      return out;
    } catch (e) {
      if (!(e instanceof RouteLost)) throw e;
      return this.retryAfterRecovery(s, remote, e, signal);
    }
  }

  private retryAfterRecovery(s: SessionState, st: Step, cause: RouteLost, signal?: AbortSignal): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      s.retry.push({ step: st, resolve, reject });
      this.kick(s, cause, signal);
    });
  }

  // One recovery at a time per session; steps that fail while it runs are
  // picked up by the next one, started as soon as this one settles.
  private kick(s: SessionState, cause: RouteLost, signal?: AbortSignal): void {
    if (s.recovering) {
      s.nextCause = cause;
      return;
    }
    s.recovering = new Promise<void>((r) => setImmediate(r)) // let every failed step of this session arrive
      .then(() => this.recover(s, cause, signal))
      .finally(() => {
        s.recovering = undefined;
        const next = s.nextCause ?? cause;
        s.nextCause = undefined;
        if (s.retry.length > 0 && this.all.has(s.id)) this.kick(s, next, signal);
      });
    s.recovering.catch(() => {});
  }

  private async recover(s: SessionState, cause: RouteLost, signal: AbortSignal | undefined): Promise<void> {
    const waiting = s.retry.sort((a, b) => a.step.pos - b.step.pos);
    s.retry = [];
    if (waiting.length === 0) return;
    let fruitless = 0;
    for (;;) {
      try {
        const lostBefore = this.dir.serving().length;
        for (const p of cause.peers) {
          if (this.dir.lose(p, "failed a step")) this.pipe.lose(p, "failed a step");
        }
        for (const p of cause.suspects) {
          s.avoid.add(p);
          this.dir.penalize(p);
        }
        for (const p of cause.avoid) s.avoid.add(p);
        if (this.dir.serving().length === lostBefore) fruitless++;
        // the same stage losing the session again: route around it
        if (fruitless > 1 && cause.reporter && cause.suspects.length === 0) s.avoid.add(cause.reporter);
        if (fruitless > this.o.maxRecoveries)
          throw new LayerswarmError(cause.code === "BUSY" ? "BUSY" : "NO_ROUTE", `gave up after ${fruitless - 1} reroutes that lost no node: ${cause.message}`);
        await this.reroute(s, cause, waiting[0].step.pos, signal);
        const outs = await Promise.all(waiting.map((w) => this.pipe.send(s.wire, this.hops(s), w.step, signal)));
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
    const old = s.route.map((x) => x.id), oldSid = s.wire.sid;
    this.take(s.route, -1);
    // s.route stays the old one until the new is chosen: a strict twin
    // rerouting at the same time must still see it (and keep away from it)
    // free the old epoch's caches on the nodes still serving (best effort);
    // its steps still in flight there are sent again after this recovery
    this.pipe.abandon(oldSid, "the session moved to a new route");
    for (const peer of new Set(old)) this.dropOn(peer, oldSid);
    s.epoch++;
    const route = await this.router.route(signal, s.exclude ? new Set([...s.avoid, ...s.exclude()]) : s.avoid, 1, s.cuts?.());
    s.route = route;
    s.wire = await this.wireFor(s.id, route);
    this.o.onEpoch?.(s.id, s.wire.sid, route);
    this.take(route, +1);
    this.dir.emit({ type: "reroute", session: s.id, from: old, to: route.map((x) => x.id) });
    this.log("warn", "rerouting session", { epoch: s.epoch, from: old, to: route.map((x) => x.id), reason: cause.message });
    // replay the history before the first waiting step, in chunks, pipelined
    const toks: number[] = [];
    for (const h of s.history) if (h.pos < upTo) toks.push(...h.tokens.slice(0, upTo - h.pos));
    if (toks.length !== upTo) throw new LayerswarmError("NO_ROUTE", `cannot replay: the gateway knows ${toks.length} of ${upTo} positions`);
    const replays: Promise<Float32Array>[] = [];
    for (let p = 0; p < toks.length; p += this.o.replayChunk) {
      const chunk = toks.slice(p, p + this.o.replayChunk);
      replays.push(this.pipe.send(s.wire, this.hops(s), { session: s.id, pos: p, T: chunk.length, hidden: this.o.replayInput(s.id, chunk, p), lastRowOnly: true }, signal));
    }
    this.o.replayDone(s.id);
    await Promise.all(replays);
    this.stats.replayedPositions += toks.length;
    this.dir.emit({ type: "replay", session: s.id, positions: toks.length, ms: Date.now() - t0 });
  }

  // Forgets a session's positions >= pos (speculation's rejected rows): in the
  // history that replays rebuild caches from, and on every stage of its route,
  // each of which signs a receipt withdrawing them. A stage that cannot (it
  // fails, is gone, or its receipt does not hold) moves the session before its
  // next step, which replays only the positions left: never a wrong token,
  // only a slower one.
  async rollback(id: string, pos: number, signal?: AbortSignal): Promise<void> {
    const s = this.all.get(id);
    if (!s) return;
    if (s.recovering) await s.recovering.catch(() => {});
    s.history = s.history.filter((h) => h.pos < pos).map((h) => (h.pos + h.tokens.length > pos ? { pos: h.pos, tokens: h.tokens.slice(0, pos - h.pos) } : h));
    if (s.positions <= pos) return;
    s.positions = pos;
    if (s.stale || s.route.length === 0) return; // the next step moves it anyway
    const wire = s.wire, route = s.route;
    const why = await (async () => {
      const receipts: (Uint8Array | undefined)[] = route.map(() => undefined);
      for (const peer of new Set(route.map((r) => r.id))) {
        const n = this.dir.get(peer);
        if (n?.state !== "serving" || !n.record.capabilities.rollback) return `stage ${peer.slice(-8)} cannot roll back`;
      }
      await Promise.all([...new Set(route.map((r) => r.id))].map(async (peer) => {
        throwIfAborted(signal);
        const m = await request(this.t, peer, this.dir.get(peer)!.record.addrs, { type: "rollback", session: wire.sid, pos }, this.o.rollbackTimeoutMs ?? 10_000);
        if (m.type !== "rolled-back") throw new LayerswarmError("BAD_MESSAGE", `answered "rollback" with "${m.type}"`);
        for (const b64 of m.receipts) {
          const bytes = Buffer.from(b64, "base64");
          const hop = parseReceipt(bytes).hop; // the ledger checks the rest
          if (route[hop]?.id === peer) receipts[hop] = bytes;
        }
      }));
      return this.o.onRollback?.(wire.sid, pos, receipts);
    })().catch((e: Error) => {
      if ((e as LayerswarmError).code === "ABORTED") throw e;
      return e.message;
    });
    if (why !== undefined && s.wire === wire) {
      this.log("warn", "rollback failed: the session moves before its next step", { reason: why.slice(0, 200) });
      s.stale = true;
    }
  }

  // A node was banned: every session routed through it moves before its next step.
  evacuate(peer: string): void {
    for (const s of this.all.values()) if (s.route.some((r) => r.id === peer)) s.stale = true;
  }

  // The session's tokens at positions [0, upTo), if the gateway knows them all.
  tokens(id: string, upTo: number): number[] | undefined {
    const s = this.all.get(id);
    if (!s) return undefined;
    const toks: number[] = [];
    for (const h of [...s.history].sort((a, b) => a.pos - b.pos)) if (h.pos === toks.length) toks.push(...h.tokens);
    return toks.length >= upTo ? toks.slice(0, upTo) : undefined;
  }

  dropWire(peer: string, sid: string): void {
    this.dropOn(peer, sid);
  }

  private dropOn(peer: string, sid: string): void {
    const n = this.dir.get(peer);
    if (n?.state === "serving") void request(this.t, peer, n.record.addrs, { type: "drop", session: sid }, 2000).catch(() => {});
  }

  drop(id: string): void {
    const s = this.all.get(id);
    if (!s) return;
    this.all.delete(id);
    this.take(s.route, -1);
    for (const peer of new Set(s.route.map((x) => x.id))) this.dropOn(peer, s.wire.sid);
  }
}

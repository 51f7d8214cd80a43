// The gateway: holds the tokenizer, embeddings, final norm, head and sampling
// (text, token ids and logits never leave it), optionally the first and last
// few layers too (so no node sees rows that invert exactly to tokens), and
// runs the rest through a route of nodes. It is put together from parts with
// one job each: the node directory (directory.ts), routing and coverage repair
// (router.ts), the step pipeline (pipeline.ts), sessions with replay
// (sessions.ts), discovery rounds (finder.ts); the dashboard reads a
// read-only view (view.ts).

import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { ModelIdentity, computeManifestSync, identityOf } from "../../format/manifest.js";
import { LayerRange } from "../../model/config.js";
import { LayerStack, Model, loadSlice, speculationStats } from "../../model/model.js";
import { SliceRuntime, Step } from "../../model/runtime.js";
import { modelFingerprint } from "../node/index.js";
import { Discovery } from "../discovery.js";
import { Identity } from "../identity.js";
import { Logger, logger } from "../log.js";
import { PeerGate } from "../policy.js";
import { DISCOVER_FAST_MS, DISCOVER_INTERVAL_MS, DType, MAX_CONTROL_BYTES, PROTOCOLS, RECORD_TTL_MS, Request, Response, providerKeys } from "../protocol/index.js";
import { Caller, request, serveRequests } from "../rpc.js";
import { Transport } from "../transport.js";
import { NodeDirectory, NodeEntry, openRanges } from "./directory.js";
import { NodeFinder } from "./finder.js";
import { StepPipeline } from "./pipeline.js";
import { Prober } from "./probe.js";
import { Router } from "./router.js";
import { Sessions } from "./sessions.js";
import { GatewayView, makeView } from "./view.js";
import { PackMode } from "../wire.js";
import { VerifyOptions, Verifier, checkLayerBytes } from "./verify.js";
import { RateLimiter } from "../limiter.js";

export type { NodeEntry, SwarmEvent } from "./directory.js";
export type { GatewayView } from "./view.js";

export interface GatewayOptions {
  stepTimeoutMs?: number; // a step that takes longer marks its route as failed (default 30 s)
  loadTimeoutMs?: number; // how long a node may take to load lost layers (default 120 s)
  dtype?: DType; // hidden-state encoding on the wire (default f32: exact; bf16/f16 round at every stage boundary, so their tokens are reproducible only for a fixed split)
  wirePack?: PackMode; // lossless packing of the values on the first hop: where the link's measured speed makes it pay (auto, the default), always, never
  replayChunk?: number; // tokens per replay chunk (default 64)
  maxRecoveries?: number; // reroutes in a row that lose no node (default 3)
  localLayers?: number; // run the first K layers here (default 0)
  localTail?: number; // run the last K' layers here (default 0)
  gate?: PeerGate; // bans, and the allow-list of nodes to route through
  discovery?: Discovery; // find nodes in the swarm's DHT (without it, only nodes that announce themselves)
  discoverMs?: number; // between discovery rounds (default DISCOVER_INTERVAL_MS)
  discoverFastMs?: number; // between rounds while some layer has no holder (default DISCOVER_FAST_MS)
  recordTtlMs?: number; // a node whose record did not arrive again for this long stops serving here (default RECORD_TTL_MS)
  // The model's identity from its manifest (format/manifest.ts): each layer
  // pairs only with nodes whose hash for it is this one's. Default: the model
  // file hashed whole now (the CLI passes its cached manifest's).
  content?: ModelIdentity;
  probeMs?: number; // time each node's stage again after this long, for route costs (default 60 s; 0: never, routes priced alike)
  probeRows?: number; // rows of the throughput probe (default 32)
  probeTimeoutMs?: number; // a probe's own deadline: one that stalls is priced this slow, not lost (default 10 s)
  verify?: VerifyOptions; // receipts, audits and strict mode (verify.ts; default: audit mode, 5% of sessions)
  // Makes layers [start, end) readable in the model's file when it is a URL's
  // sparse copy (range requests): for judging nodes. Local files hold them all.
  layerSource?: (r: LayerRange) => Promise<void>;
}

export class Gateway implements LayerStack {
  readonly dir: NodeDirectory;
  readonly router: Router;
  readonly pipe: StepPipeline;
  readonly sessions: Sessions;
  readonly view: GatewayView;
  readonly local: { head?: SliceRuntime; tail?: SliceRuntime };
  readonly finder?: NodeFinder;
  readonly content: ModelIdentity;
  readonly prober: Prober;
  readonly verifier: Verifier;
  readonly layerSource?: (r: LayerRange) => Promise<void>;
  private recordTtlMs: number;
  private inputSeq = 0;
  private probeMs: number;
  private log: Logger;
  private timers: NodeJS.Timeout[] = [];
  private tailChains = new Map<string, Promise<unknown>>();
  private disputes = new RateLimiter(4, 1); // per node: a burst of 4, then 1 a second
  private proofs = new RateLimiter(8, 1 / 60); // per peer passing fraud proofs on: a burst of 8, then 1 a minute

  constructor(readonly model: Model, private t: Transport, readonly identity: Identity, o: GatewayOptions = {}) {
    if (identity.peerId !== t.peerId) throw new LayerswarmError("BAD_ARGUMENT", "the gateway's identity must be its transport's");
    const L = model.cfg.nLayers, K = o.localLayers ?? 0, K2 = o.localTail ?? 0;
    if (!Number.isInteger(K) || !Number.isInteger(K2) || K < 0 || K2 < 0 || K + K2 >= L)
      throw new LayerswarmError("BAD_ARGUMENT", `--local-layers ${K} and --local-tail ${K2} must leave at least one of the model's ${L} layers to the swarm`);
    this.log = logger(`gateway:${t.peerId.slice(-6)}`);
    this.content = o.content ?? identityOf(model.file, computeManifestSync(model.file));
    this.layerSource = o.layerSource;
    // the gateway's own layers are the manifest's, byte for byte (a URL model's sparse copy must hold them)
    if (K > 0) checkLayerBytes(model.file, this.content.layers, 0, K);
    if (K2 > 0) checkLayerBytes(model.file, this.content.layers, L - K2, L);
    this.local = {
      head: K > 0 ? loadSlice(model.file, model.cfg, { start: 0, end: K }, model.kernels) : undefined,
      tail: K2 > 0 ? loadSlice(model.file, model.cfg, { start: L - K2, end: L }, model.kernels) : undefined,
    };
    const id = { layers: L, dim: model.cfg.dim, fingerprint: modelFingerprint(model.file, model.cfg), id: this.content.id, layerHashes: this.content.layers };
    this.dir = new NodeDirectory(id, o.gate ?? new PeerGate(), this.log);
    this.router = new Router(t, this.dir, { start: K, end: L - K2 }, this.log, o.loadTimeoutMs ?? 120_000);
    this.pipe = new StepPipeline(t, this.dir, this.log, { stepTimeoutMs: o.stepTimeoutMs ?? 30_000, dtype: o.dtype ?? DType.F32, lastRowOnlyAllowed: !this.local.tail, pack: o.wirePack }, model.cfg.dim);
    this.sessions = new Sessions(t, identity, this.dir, this.router, this.pipe, this.log, {
      replayChunk: o.replayChunk ?? 64, maxRecoveries: o.maxRecoveries ?? 3,
      replayInput: (id, tokens, pos) => this.headForward(`${id}\u0000replay`, pos, tokens.length, model.embedder.embed(tokens), pos === 0),
      replayDone: (id) => this.local.head?.dropSession(`${id}\u0000replay`),
      // every route's receipts are kept (also with --verify off: a request may still ask for strict mode)
      onEpoch: (owner, sid, route) => void this.verifier.ledger.open(owner, sid, route.map((r) => ({ peer: r.id, start: r.start, end: r.end }))),
      onRollback: (sid, pos, receipts) => this.verifier.ledger.rollback(sid, pos, receipts)?.reason,
    });
    this.verifier = new Verifier(this, this.log, o.verify);
    this.pipe.checkReceipts = (sid, pos, T, sent, chain, returned) => {
      const b = this.verifier.ledger.check(sid, pos, T, model.cfg.dim, sent, chain, returned);
      if (!b) return undefined;
      void this.verifier.chainBreak(b, () => {
        const owner = this.verifier.ledger.get(sid)?.owner, s = owner ? this.sessions.all.get(owner) : undefined;
        return s && owner ? this.sessions.tokens(owner, s.positions) : undefined;
      });
      return { peer: b.peer, reason: b.reason, certain: b.evidence.length > 0 };
    };
    this.probeMs = o.probeMs ?? 60_000;
    this.prober = new Prober(t, identity, this.dir, this.pipe, this.log, { everyMs: this.probeMs, rows: o.probeRows ?? 32, timeoutMs: o.probeTimeoutMs },
      { vocab: model.cfg.vocabSize, embed: (tokens) => model.embedder.embed(tokens) });
    this.view = makeView(this);
    this.recordTtlMs = o.recordTtlMs ?? RECORD_TTL_MS;
    if (o.discovery)
      this.finder = new NodeFinder(t, o.discovery, this.dir, id, providerKeys(id.fingerprint, [this.router.span], L), this.log, {
        intervalMs: o.discoverMs ?? DISCOVER_INTERVAL_MS, fastMs: o.discoverFastMs ?? DISCOVER_FAST_MS, ttlMs: this.recordTtlMs,
      }, () => this.router.missing().length === 0);
  }

  get peerId(): string {
    return this.t.peerId;
  }
  get transport(): Transport {
    return this.t;
  }
  addrs(): string[] {
    return this.t.addrs();
  }

  async start(): Promise<void> {
    await this.t.handle(PROTOCOLS.control, serveRequests((r, from) => this.control(r, from), (from, e) => {
      this.log("warn", "bad control request, peer banned", { peer: from.peer, error: e.message });
      this.dir.gate.ban(from.peer, from.ip, e.message);
      this.dir.lose(from.peer, "sent a malformed request");
      void this.t.hangUp(from.peer);
    }), { maxMessageBytes: MAX_CONTROL_BYTES, maxStreamsPerConnection: 16 });
    await this.pipe.start();
    this.t.onDisconnect((peer) => this.lose(peer, "disconnected"));
    const ttl = this.recordTtlMs;
    const sweep = setInterval(() => {
      try {
        for (const peer of this.dir.expired(ttl)) this.lose(peer, `its record was not refreshed for ${ttl / 1000} s`);
      } catch (e) {
        this.log("error", "record sweep failed", { error: (e as Error).message });
      }
    }, Math.max(10, Math.min(5000, ttl / 4)));
    sweep.unref();
    this.timers.push(sweep);
    this.finder?.start();
    if (this.probeMs > 0) this.prober.start();
  }

  private lose(peer: string, reason: string): void {
    if (this.dir.lose(peer, reason)) {
      this.pipe.outbox.forget(peer);
      this.pipe.lose(peer, reason);
    }
  }

  private async control(r: Request, from: Caller): Promise<Response> {
    switch (r.type) {
      case "announce":
        this.dir.accept(r.record, from.peer, from.ip);
        return { type: "ok" };
      case "holders":
        // a node joining with --layers auto asks what the swarm holds
        return { type: "holders", holders: this.dir.serving().slice(0, 4096).map((n) => holderOf(n)) };
      case "progress": {
        const n = this.dir.get(from.peer);
        if (!n) throw new LayerswarmError("FORBIDDEN", "progress from a node this gateway does not route through");
        for (const ms of r.ms.slice(0, 256)) {
          n.batchMs.push(ms);
          if (n.batchMs.length > 64) n.batchMs.shift();
          this.dir.events.emit("batch", { peer: from.peer, ms });
        }
        this.pipe.progress(from.peer, r.reqs);
        return { type: "ok" };
      }
      case "fraud-proof":
        if (!this.proofs.take(from.peer)) throw new LayerswarmError("BUSY", "too many fraud proofs");
        await this.verifier.receiveProof(from.peer, Buffer.from(r.accusation, "base64"));
        return { type: "ok" };
      case "dispute": {
        if (!this.disputes.take(from.peer)) throw new LayerswarmError("BUSY", "too many disputes");
        const owner = this.verifier.ledger.get(r.session)?.owner;
        await this.verifier.dispute(from.peer, r.session, r.hop, Buffer.from(r.receipt, "base64"), () => {
          const s = owner ? this.sessions.all.get(owner) : undefined;
          return s && owner ? this.sessions.tokens(owner, s.positions) : undefined;
        });
        return { type: "ok" };
      }
      default:
        throw new LayerswarmError("UNSUPPORTED", `a gateway does not answer "${r.type}"`);
    }
  }

  serving(): NodeEntry[] {
    return this.dir.serving();
  }

  coverage(): { covered: boolean; missing: LayerRange[] } {
    const missing = this.router.missing();
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

  // ------------------------------------------------------------ steps

  // The remote stages' input for a session's tokens from position 0 (embedding,
  // then this gateway's own first layers), computed again: for audits.
  remoteInput(tokens: number[]): Float32Array {
    const dim = this.model.cfg.dim, id = `\u0000audit-input-${++this.inputSeq}`;
    const out = new Float32Array(tokens.length * dim);
    try {
      for (let p = 0; p < tokens.length; p += 512) {
        const chunk = tokens.slice(p, p + 512);
        out.set(this.headForward(id, p, chunk.length, this.model.embedder.embed(chunk), p === 0), p * dim);
      }
    } finally {
      this.local.head?.dropSession(id);
    }
    return out;
  }

  private headForward(session: string, pos: number, T: number, hidden: Float32Array, fresh = false): Float32Array {
    const head = this.local.head;
    if (!head) return hidden;
    if (fresh) head.dropSession(session);
    return head.forward([{ session, pos, T, hidden }])[0];
  }

  async forward(steps: Step[], signal?: AbortSignal): Promise<Float32Array[]> {
    return Promise.all(steps.map((st) => this.step(st, signal)));
  }

  private async step(st: Step, signal?: AbortSignal): Promise<Float32Array> {
    const input = this.headForward(st.session, st.pos, st.T, st.hidden);
    const strict = st.verify === "strict" || this.verifier.mode === "strict";
    const remote = strict ? this.verifier.strictStep(st, input, signal) : this.sessions.step(st, input, signal);
    const tail = this.local.tail;
    if (!tail) return remote;
    // the tail needs every row, in position order, for its cache
    const prev = this.tailChains.get(st.session) ?? Promise.resolve();
    const done = prev.catch(() => {}).then(async () => {
      const h = await remote;
      const out = tail.forward([{ session: st.session, pos: st.pos, T: st.T, hidden: h }])[0];
      return st.lastRowOnly ? out.subarray((st.T - 1) * this.model.cfg.dim) : out;
    });
    this.tailChains.set(st.session, done);
    return done;
  }

  // Forgets a session's positions >= pos everywhere: this gateway's own first
  // and last layers, the history replays use, and every stage of its route
  // (and of its strict-mode twin's).
  async rollback(session: string, pos: number, signal?: AbortSignal): Promise<void> {
    await this.tailChains.get(session)?.catch(() => {});
    this.local.head?.rollback(session, pos);
    this.local.tail?.rollback(session, pos);
    await Promise.all([session, `${session}\u0000twin`].map((id) => this.sessions.rollback(id, pos, signal)));
  }

  async dropSession(id: string): Promise<void> {
    for (const sid of [id, `${id}\u0000twin`]) {
      const s = this.sessions.all.get(sid);
      const tokens = s && this.sessions.tokens(sid, s.positions);
      if (s) this.verifier.sessionDone(sid, tokens ?? []);
      if (sid !== id) this.sessions.drop(sid);
    }
    this.sessions.drop(id);
    this.local.head?.dropSession(id);
    this.local.tail?.dropSession(id);
    this.tailChains.delete(id);
  }

  // Fresh records from every serving node (capacity, statistics) and round trips.
  async refresh(peer: string, timeoutMs = 2000): Promise<void> {
    const n = this.dir.get(peer);
    if (!n || n.state !== "serving") return;
    const t0 = performance.now();
    try {
      const m = await request(this.t, peer, n.record.addrs, { type: "info" }, timeoutMs);
      if (m.type !== "record") throw new LayerswarmError("BAD_MESSAGE", `answered "info" with "${m.type}"`);
      this.dir.update(peer, m.record);
      n.rttMs = Math.round((performance.now() - t0) * 100) / 100;
    } catch (e) {
      if ((e as LayerswarmError).code === "BAD_MESSAGE") {
        this.dir.ban(peer, (e as Error).message);
        this.pipe.lose(peer, "sent a bad record");
      }
    }
  }

  poll(ms = 2000): () => void {
    const timer = setInterval(() => {
      for (const n of this.dir.serving()) void this.refresh(n.record.peer, Math.min(ms, 2000)).catch(() => {});
    }, ms);
    timer.unref();
    this.timers.push(timer);
    return () => clearInterval(timer);
  }

  get stats() {
    return {
      steps: this.pipe.stats.steps, timeouts: this.pipe.stats.timeouts, recoveries: this.sessions.stats.recoveries, replayedPositions: this.sessions.stats.replayedPositions, wire: this.pipe.wireView(),
      verify: { mode: this.verifier.mode, ...this.verifier.stats },
      speculation: { drafted: speculationStats.drafted, accepted: speculationStats.accepted }, // this process's generate() calls
    };
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.finder?.stop();
    this.prober.stop();
    this.pipe.stop();
    await this.t.stop();
  }
}

// A node as the gateway describes it to a joining node: its open layers and what its record says of its speed and demand.
function holderOf(n: NodeEntry) {
  const ranges = openRanges(n), held = n.record.ranges.reduce((a, r) => a + r.end - r.start, 0);
  return { peer: n.record.peer, ranges, tokPerSec: held ? n.record.capacity.layersPerSec / held : 0, rowsPerSec: n.record.demand?.rowsPerSec ?? 0, addrs: n.record.addrs };
}

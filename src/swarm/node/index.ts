// A swarm node: holds layer slices of a model and runs forward passes for the
// sessions of any gateway it serves (continuous batching: everything queued
// when the node is free goes into one batched call per layer), sending each
// result to the next stage of the session's signed route, or back to the
// gateway that signed it after the last stage.
//
// What a peer can make it do is bounded: a step is run only for the stage its
// session's grant names this node at, and only when it comes from the gateway
// (first stage) or the previous stage of that grant; only the owner gateway
// can drop a session; layers are loaded by the node's own policy; sessions,
// queued rows and frame sizes have limits per peer, per address and in total;
// a peer that breaks the protocol is hung up on and banned for a while.
//
// Receipts (receipt.ts, docs/security.md): the node signs what it computed,
// every step of a batch under one signature, and sends its receipt on with the
// receipts of the stages before. It refuses (BAD_RECEIPT) a step whose previous
// stage's receipt does not state exactly the rows it received, strikes that
// stage and tells the gateway (a "dispute" carrying the receipt); the
// signature of that receipt is checked after the batch is sent on, off the
// step's path.

import * as os from "node:os";
import { LayerswarmError, codeOf } from "../../errors.js";
import { GGUFFile, readGGUF } from "../../format/gguf.js";
import { Manifest, ReadHashes, identityOf, layoutId } from "../../format/manifest.js";
import { Kernels } from "../../kernels/index.js";
import { LayerRange, ModelConfig, configFromGGUF } from "../../model/config.js";
import type { FaultInjector } from "./fault.js";
import { loadSlice } from "../../model/model.js";
import { SliceRuntime } from "../../model/runtime.js";
import { layerBytes } from "../../model/weights.js";
import { Discovery } from "../discovery.js";
import { Logger, logger } from "../log.js";
import { Outbox } from "../outbox.js";
import { PackMode, WirePolicy } from "../wire.js";
import { Supply, chooseRange, clampClaims, jittered, missingLayers, planMove, subtractRanges } from "../placement.js";
import { PeerGate, PolicyKind } from "../policy.js";
import {
  CODEC_PLANES, DType, Ext, FLAG_LAST_ROW_ONLY, FLAG_PACKED, dtypeBytes, FrameLimits, FrameType, MAX_CONTROL_BYTES, NUMERICS_VERSION, NodeRecord, PROTOCOLS, PROVIDE_INTERVAL_MS, Request, Response, SUPPORTED_VERSIONS,
  ErrorFrame, StepFrame, StepHead, decodeError, decodeResultHead, decodeStepHead, resultOf, stepOf, differingLayers, encodeError, encodeResult, encodeStep, expectedSender, extension, firstNonFinite, frameType, maxFrameBytes, openGrant, providerKeys,
} from "../protocol/index.js";
import { Caller, request, serveRequests } from "../rpc.js";
import { RateLimiter } from "../limiter.js";
import {
  MAX_RECEIPT_ENTRIES, ROLLED_BACK, ROW_HASH_BYTES, Receipt, ReceiptBody, RouteGrant, hashEqual, maxReceiptBytes, parseReceipt, receiptRoot, receiptSignedSync, receiptsOf, rowHashes, signReceipts, weightsDigest, wireRound,
} from "../protocol/index.js";
import { survey } from "../survey.js";
import { accusationId } from "../protocol/proof.js";
import { Identity } from "../identity.js";
import { HolderCheck } from "./verify.js";
import { Transport } from "../transport.js";
import { NodeSession, SessionTable } from "./sessions.js";
import { groupOfClaimed } from "../addrgroup.js";

export interface NodeInit {
  modelPath: string;
  // The model's manifest (format/manifest.ts): every tensor is checked against
  // it as it loads, and the record names the model by it. Without one (a node
  // holding only its part of a remote file), the record's layer hashes are
  // still those of the bytes loaded, and its model id is "".
  manifest?: Manifest;
  ranges: LayerRange[];
  kernels: Kernels;
  maxLayers?: number; // what memory allows; loads beyond it are refused
  maxSessions?: number; // default 256
  kvBudgetBytes?: number;
  maxContext?: number;
  maxRowsPerFrame?: number; // default 512
  maxBatchRows?: number; // rows per batched call, default 256
  name?: string;
  gate?: PeerGate; // bans, and the allow-list of gateways served (undefined allow-list: any)
  policy?: PolicyKind;
  fetchLayers?: (r: LayerRange) => Promise<void>; // bring the layers' bytes to modelPath first (remote models)
  onProgress?: (p: { layer: number; layers: number; of: number; bytes: number; totalBytes: number }) => void;
  batchWindowMs?: number; // how long to gather steps when several sessions are active (default 2)
  sessionIdleMs?: number; // drop sessions not stepped for this long (default 15 minutes)
  announceMs?: number; // how often to announce to --join gateways (default 10 s)
  discovery?: Discovery; // announce this node in the swarm's DHT (and find holders for --layers auto)
  provideMs?: number; // how often to provide its block keys again (default PROVIDE_INTERVAL_MS)
  maxUnsentBytes?: number; // bytes waiting for one destination before its sessions pause (default 16 MiB)
  strikesBeforeBan?: number; // refused frames from one peer before it is banned (default 32)
  unknownSessionBurst?: number; // steps for sessions not held here that one peer may send at once before they are strikes (default 256)
  unknownSessionPerSec?: number; // ... and the rate at which that budget refills (default 64 a second)
  wirePack?: PackMode; // pack values for next stages that take it: where the link's measured speed makes it pay (auto, the default), always, never
  identity: Identity; // this node's key (its transport's): it signs its receipts and the grants of the checks it makes of other holders (verify.ts)
  rebalanceMs?: number; // look about this often (jittered: x0.5 to x1.5) whether moving elsewhere would help the swarm, and move (default 0: never)
  rebalanceWindowMs?: number; // at most one move of its own (rebalance) per this long (default 30 min)
  settleMs?: number; // a move waits this long after saying it drains before it looks again who else holds and drains (default 1 s)
  drainMs?: number; // a move waits this long for live sessions to finish, then hands them over (default 60 s)
  fault?: FaultInjector; // LAYERSWARM_TEST_FAULT: computes wrong on purpose, for tests of the defences (fault.ts)
}

// The address group (addrgroup.ts) of the first of these multiaddrs, if any:
// IPv6 by /64 (whatever its spelling), a relay address as relay:<relay>/<peer>.
export function ipOfAddrs(addrs: string[], peer = "?"): string | undefined {
  return groupOfClaimed(addrs, peer);
}

// The model's layout (no weights): what DHT keys and records name, so a
// gateway finds the holders of any model of this shape and compares their
// layer hashes with its own.
const layouts = new WeakMap<GGUFFile, string>();
// The ACCEPTS extension of a session's first frame: one byte of codec bits per hop (else none).
function acceptsOf(f: { ext: StepFrame["ext"] }, hops: number): Uint8Array | undefined {
  const a = extension(f, Ext.ACCEPTS);
  return a && a.length === hops ? a.slice() : undefined;
}

export function modelFingerprint(f: GGUFFile, cfg: ModelConfig): string {
  let l = layouts.get(f);
  if (!l) layouts.set(f, (l = layoutId(f)));
  return `${cfg.arch}:${cfg.dim}x${cfg.nLayers}:${l.slice(0, 32)}`;
}

interface AuthContext {
  gateway?: { peer: string; addrs: string[] }; // the session's gateway, once known for sure
  announce?: boolean; // refused for layers it does not open: send that gateway our record first
}

interface Queued {
  f: StepFrame;
  s: NodeSession;
  from: string; // peer whose rows these are (for limits); "" for our own next stage
  ip: string;
  inHashes: Uint8Array[]; // rowHash of each input row as decoded here (T of them)
  prev?: Receipt; // the previous stage's receipt, checked against the rows; its signature is checked after the step is sent on
}

// A step refused for the previous stage's receipt: what to accuse it with.
class ReceiptRefused extends LayerswarmError {
  constructor(message: string, readonly receipt: Uint8Array | undefined) {
    super("BAD_RECEIPT", message);
  }
}

export class SwarmNode {
  readonly file: GGUFFile;
  readonly cfg: ModelConfig;
  slices: SliceRuntime[] = [];
  private cheap = new Map<SliceRuntime, SliceRuntime>(); // LAYERSWARM_TEST_FAULT=cheap-model: what it computes with instead
  readonly sessions: SessionTable;
  readonly gate: PeerGate;
  readonly limits: FrameLimits;
  readonly modelId: string; // "" without a manifest
  private reads: ReadHashes;
  private layerHashes = new Map<number, string>(); // of the layers loaded, from the bytes read
  private queues = new Map<string, Queued[]>();
  private queuedRows = { peer: new Map<string, number>(), ip: new Map<string, number>(), total: 0 };
  private roomWaiters: (() => void)[] = [];
  private busy = false;
  private outbox: Outbox;
  private log: Logger;
  private layersPerSec = 0;
  private loadingNow = false;
  loading?: { start: number; end: number; layers: number; bytes: number; totalBytes: number };
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private providing?: Promise<boolean>;
  private provided = false; // announced in the DHT at least once
  private provideTimer?: NodeJS.Timeout;
  private strikes = new Map<string, { n: number; since: number }>();
  private manifestReply?: Uint8Array; // the manifest answer, encoded once
  private proofAsks = new RateLimiter(8, 1 / 30); // fraud proofs passed on, per sender
  private proofsSeen = new Set<string>();
  private manifestAsks = { peer: new RateLimiter(2, 1 / 30), ip: new RateLimiter(32, 1) };
  private unknown = new Map<string, { tokens: number; at: number }>(); // per peer: steps for sessions it may not know are gone
  private dropped = new Set<string>(); // recently dropped or evicted session ids: their grants may not open them again
  private pinging = false;
  private links = new Map<string, number>();
  // the next stages this node sent steps to (the dashboard's link latencies), at most 64; never whoever it refused
  private nextStages = new Map<string, { addrs: string[]; at: number }>();
  private recent = new Map<string, number>(); // session -> time of its last step (batch window)
  // rebalancing (move): layers being given up, whom to tell, and the demand seen
  private draining: LayerRange[] = [];
  private leaving = false; // leave() began: every layer drains, for good
  private paused = false; // pause(): every layer drains until resume(); the slices stay loaded
  private moving = false; // one lock for moves and a peer's load (a load during a drain would take the new layers' memory)
  private rebalanceTimer?: NodeJS.Timeout;
  private checks?: HolderCheck; // other holders checked by a real step before they count as cover for a move
  private lastRebalanceMove = -Infinity; // when rebalance last moved this node (performance.now)
  private join: { peer: string; addrs: string[] }[] = [];
  private gateways = new Map<string, string[]>(); // gateways whose sessions it served lately (at most 64)
  private demand = { rowsPerSec: 0, at: Date.now(), rows: 0 };
  stats = { frames: 0, batches: 0, rows: 0, badFrames: 0, busyMs: 0, refused: 0, opened: 0, evicted: 0, receiptSteps: 0, receiptMs: 0, badReceipts: 0 };
  readonly wire: WirePolicy;
  private readonly identity: Identity; // signs receipts (and the grants of checks of other holders)
  private weights = new Map<string, Uint8Array>(); // "start:end" -> weightsDigest of those layers' hashes
  private verified = new Set<string>(); // signature + root of receipts already verified (one signature covers a batch), at most 1024

  constructor(private init: NodeInit, private t: Transport) {
    this.file = readGGUF(init.modelPath);
    this.cfg = configFromGGUF(this.file);
    this.modelId = init.manifest ? identityOf(this.file, init.manifest).id : "";
    this.reads = new ReadHashes(this.file, init.manifest);
    this.log = logger(`node:${t.peerId.slice(-6)}`);
    this.outbox = new Outbox(t, this.log, 10_000, init.maxUnsentBytes);
    this.wire = new WirePolicy(init.wirePack);
    // a step's receipt covers every row it computed: at most MAX_RECEIPT_ENTRIES rows a frame
    this.limits = { dim: this.cfg.dim, maxRows: Math.min(init.maxRowsPerFrame ?? 512, MAX_RECEIPT_ENTRIES) };
    this.sessions = new SessionTable(init.maxSessions ?? 256);
    this.gate = init.gate ?? new PeerGate();
    if (init.identity?.peerId !== t.peerId)
      throw new LayerswarmError("BAD_ARGUMENT", "a node signs its receipts with its transport's key: NodeInit.identity must be that key");
    this.identity = init.identity;
    this.checks = new HolderCheck({ t, identity: init.identity, outbox: this.outbox, dim: this.cfg.dim, compute: (r, hidden, T) => this.computeCheck(r, hidden, T) });
  }

  // This node's own result for a check of another holder: a fresh session through its copy of the layers, dropped after.
  private computeCheck(r: LayerRange, hidden: Float32Array, T: number): Float32Array {
    const slice = this.slices.find((s) => s.range.start <= r.start && r.end <= s.range.end);
    if (!slice) throw new LayerswarmError("BAD_RANGE", `this node does not hold layers [${r.start}, ${r.end})`);
    const id = `\u0000check:${Math.random().toString(36).slice(2)}`;
    try {
      return slice.forward([{ session: id, pos: 0, T, hidden }], undefined, r)[0];
    } finally {
      slice.dropSession(id);
    }
  }

  // Of these holders, what this node checked itself: for each layer range it
  // gives up, the part of each holder's range there that answered a real step
  // with the bits this node computes (checked in batches of 8 until the layers are covered).
  private async checkedCover(others: Supply[], leaving: LayerRange[]): Promise<Supply[]> {
    const checks = this.checks;
    if (!checks) return [];
    const out: Supply[] = [];
    for (const lr of leaving) {
      const cands = others.flatMap((h) => h.ranges.map((x) => ({ h, r: { start: Math.max(x.start, lr.start), end: Math.min(x.end, lr.end) } }))).filter((c) => c.r.start < c.r.end);
      const covered = () => missingLayers(lr.end, out.filter((o) => o.ranges.some((x) => x.start < lr.end && lr.start < x.end)), lr.start).length === 0;
      // those already checked first, then the widest
      cands.sort((a, b) => Number(checks.known(b.h.id, b.r)) - Number(checks.known(a.h.id, a.r)) || (b.r.end - b.r.start) - (a.r.end - a.r.start));
      for (let i = 0; i < cands.length && !covered(); i += 8) {
        const batch = cands.slice(i, i + 8);
        const ok = await Promise.all(batch.map((c) => (c.h.addrs?.length ? checks.check(c.h.id, c.h.addrs, c.r) : Promise.resolve(false))));
        batch.forEach((c, k) => ok[k] && out.push({ id: c.h.id, ranges: [c.r] }));
      }
    }
    return out;
  }

  get peerId(): string {
    return this.t.peerId;
  }
  ranges(): LayerRange[] {
    return this.slices.map((s) => s.range);
  }
  private get maxBatchRows() {
    return this.init.maxBatchRows ?? 256;
  }

  // ------------------------------------------------------------ layers

  // Load a range of layers: at start, or when a gateway asks (failover) and our policy agrees.
  async loadRange(r: LayerRange): Promise<void> {
    if (r.start < 0 || r.end > this.cfg.nLayers || r.start >= r.end)
      throw new LayerswarmError("BAD_RANGE", `layer range [${r.start}, ${r.end}) is not within the model's ${this.cfg.nLayers} layers`);
    if (this.slices.some((s) => s.range.start < r.end && r.start < s.range.end))
      throw new LayerswarmError("BAD_RANGE", `layers [${r.start}, ${r.end}) overlap what this node holds`);
    const held = this.slices.reduce((a, s) => a + s.range.end - s.range.start, 0);
    if (this.init.maxLayers !== undefined && held + r.end - r.start > this.init.maxLayers)
      throw new LayerswarmError("OUT_OF_MEMORY", `this node holds ${held} layers and its memory allows ${this.init.maxLayers}`);
    await this.init.fetchLayers?.(r);
    const t0 = performance.now();
    const bytes = Array.from({ length: r.end - r.start }, (_, i) => layerBytes(this.file, r.start + i)).reduce((a, b) => a + b, 0);
    this.log("info", "loading", { start: r.start, end: r.end, bytes });
    let done = 0, doneBytes = 0;
    let slice: SliceRuntime;
    try {
      // every tensor hashed as it is read (and refused when it differs from the manifest)
      slice = loadSlice(this.file, this.cfg, r, this.init.kernels, {
        // the session table admits (fairly); the runtime's own cap must never be what refuses
        maxSessions: 1 << 20, kvBudgetBytes: this.init.kvBudgetBytes, maxContext: this.init.maxContext,
      }, (layer, b) => {
        done++;
        doneBytes += b;
        this.loading = { start: r.start, end: r.end, layers: done, bytes: doneBytes, totalBytes: bytes };
        this.init.onProgress?.({ layer, layers: done, of: r.end - r.start, bytes: doneBytes, totalBytes: bytes });
      });
      for (let i = r.start; i < r.end; i++) this.layerHashes.set(i, this.reads.layer(i));
      this.weights.clear();
    } finally {
      this.loading = undefined;
    }
    this.slices.push(slice);
    if (this.init.fault?.fault.kind === "cheap-model") this.cheap.set(slice, this.loadCheap(this.init.fault.fault.file, r));
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
      s.forward([{ session: "measure", pos: 0, T: 1, hidden: h }]);
      n++;
    }
    s.dropSession("measure");
    this.layersPerSec = (n * (s.range.end - s.range.start) * 1000) / (performance.now() - t0);
  }

  record(): NodeRecord {
    const kvBudget = this.slices.reduce((a, s) => a + s.budget.maxBytes, 0);
    const kvUsed = this.slices.reduce((a, s) => a + s.budget.usedBytes, 0);
    return {
      peer: this.t.peerId,
      addrs: this.t.addrs().slice(0, 16),
      name: (this.init.name ?? os.hostname()).slice(0, 64),
      versions: [...SUPPORTED_VERSIONS],
      model: {
        name: this.cfg.name.slice(0, 128), layers: this.cfg.nLayers, dim: this.cfg.dim, fingerprint: modelFingerprint(this.file, this.cfg), id: this.modelId,
        layerHashes: this.ranges().flatMap((r) => Array.from({ length: r.end - r.start }, (_, k) => ({ layer: r.start + k, sha256: this.layerHashes.get(r.start + k)! }))),
      },
      ranges: this.ranges(),
      capabilities: {
        numerics: NUMERICS_VERSION, backend: this.init.kernels.name, archs: [this.cfg.arch], dtypes: ["f32", "f16", "bf16"], codecs: ["planes"],
        receipts: true, rollback: true, verifySteps: false,
      },
      policy: this.init.policy ?? this.gate.kind,
      maxRows: this.limits.maxRows,
      capacity: { layersPerSec: Math.round(this.layersPerSec), freeBytes: os.freemem(), kvBudgetBytes: kvBudget, kvUsedBytes: kvUsed, sessions: this.sessions.size },
      stats: {
        ...this.stats, busyMs: Math.round(this.stats.busyMs), receiptMs: Math.round(this.stats.receiptMs * 100) / 100,
        wireBytes: this.wire.stats.wireBytes, wireRawBytes: this.wire.stats.rawBytes, wireRows: this.wire.stats.rows, packedFrames: this.wire.stats.packedFrames,
      },
      loading: this.loading,
      links: [...this.links].slice(0, 64).map(([peer, rttMs]) => ({ peer, rttMs })),
      draining: this.drainingNow().length ? this.drainingNow().map((r) => ({ ...r })) : undefined,
      demand: { rowsPerSec: Math.round(this.demand.rowsPerSec * 100) / 100 },
    };
  }

  // ------------------------------------------------------------ lifecycle

  async start(join: { peer: string; addrs: string[] }[] = [], auto?: { maxLayers: number; surveyMs?: number }): Promise<void> {
    this.join = join;
    if (auto) {
      const holders = await this.holders(join, auto.surveyMs ?? 10_000);
      const r = chooseRange(this.cfg.nLayers, clampClaims(holders), auto.maxLayers);
      this.log("info", "auto layers", { start: r.start, end: r.end, holders: holders.length });
      await this.loadRange(r);
    }
    for (const r of this.init.ranges) await this.loadRange(r);
    this.measure();
    // the link to a next stage broke (a relay cut its circuit, or it went away):
    // frames just sent on it may be lost, and only the gateway can replay them
    this.t.onInterrupt?.((peer) => this.nextStageCut(peer, "was cut (its relay closed the circuit)"));
    this.t.onDisconnect((peer) => this.nextStageCut(peer, "closed"));
    const idle = this.init.sessionIdleMs ?? 15 * 60_000;
    this.every(Math.min(60_000, idle), () => this.sweepIdle(idle));
    this.every(2000, () => void this.pingLinks());
    this.every(10_000, () => this.sampleDemand());
    if (this.init.rebalanceMs) this.rebalanceSoon(this.init.rebalanceMs);
    await this.t.handle(PROTOCOLS.steps, (ch) => void this.serveSteps(ch), { maxMessageBytes: maxFrameBytes(this.limits), maxStreamsPerConnection: 4 });
    await this.t.handle(PROTOCOLS.control, serveRequests((r, from) => this.control(r, from), (from, e) => this.misbehaved(from.peer, from.ip, e.message)),
      { maxMessageBytes: MAX_CONTROL_BYTES, maxStreamsPerConnection: 32 });
    for (const g of join) await this.announce(g);
    if (join.length) this.every(this.init.announceMs ?? 10_000, () => join.forEach((g) => void this.announce(g).catch(() => {})));
    if (this.init.discovery) this.provideSoon(0);
  }

  // Who else holds what, for --layers auto and moves: the --join gateway says,
  // or the DHT's providers do (each asked directly for its record: its
  // throughput and the demand it saw come with it; layers it is draining do not count).
  // enough: stop asking once what was found answers the question (a move whose old layers others hold).
  private async holders(join: { peer: string; addrs: string[] }[], surveyMs: number, enough?: (found: Supply[]) => boolean): Promise<Supply[]> {
    const inModel = (rs: LayerRange[]) => rs.filter((x) => x.end <= this.cfg.nLayers);
    if (join.length) {
      const res = await request(this.t, join[0].peer, join[0].addrs, { type: "holders" }, 10_000);
      if (res.type !== "holders") throw new LayerswarmError("BAD_MESSAGE", `the gateway answered "holders" with "${res.type}"`);
      return res.holders.filter((h) => h.peer !== this.t.peerId).map((h) => ({ id: h.peer, ranges: inModel(h.ranges), tokPerSec: h.tokPerSec || 1e-3, rowsPerSec: h.rowsPerSec ?? 0, addrs: h.addrs }));
    }
    const d = this.init.discovery;
    if (!d) throw new LayerswarmError("BAD_ARGUMENT", "--layers auto needs --join or discovery (--bootstrap, or mDNS): something must say which layers the swarm lacks");
    const model = { layers: this.cfg.nLayers, dim: this.cfg.dim, fingerprint: modelFingerprint(this.file, this.cfg) };
    const out: Supply[] = [];
    const ours = this.init.manifest ? identityOf(this.file, this.init.manifest).layers : undefined;
    const done = new AbortController();
    await survey(d, this.t, model, providerKeys(model.fingerprint, [{ start: 0, end: model.layers }], model.layers), {
      found: (f) => {
        const rec = f.record, held = rec.ranges.reduce((a, r) => a + r.end - r.start, 0);
        // layers it serves with other weights than ours (a fine-tune) are no cover for ours
        const other = ours ? differingLayers(rec, ours).map((d) => ({ start: d.layer, end: d.layer + 1 })) : [];
        out.push({ id: rec.peer, ranges: inModel(subtractRanges(rec.ranges, [...(rec.draining ?? []), ...other])), tokPerSec: held ? Math.max(1e-3, rec.capacity.layersPerSec) / held : 1, rowsPerSec: rec.demand?.rowsPerSec ?? 0, addrs: rec.addrs });
        if (enough?.(out)) done.abort();
      },
      refused: () => {},
    }, {}, AbortSignal.any([done.signal, AbortSignal.timeout(surveyMs)]));
    return out;
  }

  // ------------------------------------------------------------ discovery

  // Provide this node's block keys in the DHT now or after ms, then every
  // provideMs (every 5 s until the first time works: the swarm may not be reachable yet).
  private provideSoon(ms: number): void {
    clearTimeout(this.provideTimer);
    this.provideTimer = setTimeout(() => void this.provideRound().catch(() => false).then((ok) => {
      if (!this.stopped) this.provideSoon(ok ? this.init.provideMs ?? PROVIDE_INTERVAL_MS : Math.min(5000, this.init.provideMs ?? PROVIDE_INTERVAL_MS));
    }), ms);
    this.provideTimer.unref();
  }

  private provideRound(): Promise<boolean> {
    const d = this.init.discovery;
    if (!d || this.stopped) return Promise.resolve(false);
    if (this.providing) return this.providing.then(() => this.provideRound()); // the ranges may have changed since it began
    this.providing = (async () => {
      try {
        const keys = providerKeys(modelFingerprint(this.file, this.cfg), this.ranges(), this.cfg.nLayers);
        await d.provide(keys, AbortSignal.timeout(Math.max(1000, Math.min(30_000, this.init.provideMs ?? PROVIDE_INTERVAL_MS))));
        if (!this.provided) this.log("info", "announced in the swarm's DHT", { keys: keys.length, ranges: this.ranges() });
        this.provided = true;
        return true;
      } catch (e) {
        this.log(this.provided ? "debug" : "warn", "not announced in the DHT this time", { error: (e as Error).message.slice(0, 200) });
        return false;
      } finally {
        this.providing = undefined;
      }
    })();
    return this.providing;
  }

  // The rebalance timer, jittered each round: nodes started together do not look (and move) at once.
  private rebalanceSoon(periodMs: number): void {
    const t = setTimeout(() => void this.rebalance().catch((e) => this.log("warn", "rebalancing failed", { error: (e as Error).message }))
      .finally(() => { if (!this.stopped) this.rebalanceSoon(periodMs); }), jittered(periodMs));
    t.unref();
    this.rebalanceTimer = t;
  }

  private every(ms: number, f: () => void): void {
    const t = setInterval(() => {
      try {
        f();
      } catch (e) {
        this.log("error", "timer failed", { error: (e as Error).message });
      }
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  // Tell a gateway what we serve (again every few seconds: a restarted gateway learns it back).
  async announce(g: { peer: string; addrs: string[] }, timeoutMs = 10_000): Promise<void> {
    await request(this.t, g.peer, g.addrs, { type: "announce", record: this.record() }, timeoutMs);
  }

  // ------------------------------------------------------------ rebalancing

  private sampleDemand(): void {
    const now = Date.now(), dt = (now - this.demand.at) / 1000;
    if (dt <= 0) return;
    this.demand = { rowsPerSec: (this.stats.rows - this.demand.rows) / dt, at: now, rows: this.stats.rows };
  }

  // Tell every gateway we know (--join, and those whose sessions we served lately) our record now.
  // One that does not answer is forgotten (it comes back with its next session here).
  private async tellGateways(): Promise<void> {
    const all = new Map([...this.gateways, ...this.join.map((g) => [g.peer, g.addrs] as const)]);
    await Promise.all([...all].map(([peer, addrs]) => this.announce({ peer, addrs }, 2000).catch(() => void this.gateways.delete(peer))));
  }

  // Decided by the node itself: if moving would ease the swarm's bottleneck
  // (placement.planMove: its layers stay held by others, the gain is clear), move.
  async rebalance(surveyMs = 10_000): Promise<LayerRange[] | undefined> {
    if (this.moving || this.loadingNow || this.stopped || this.leaving || this.paused || !this.slices.length || (!this.join.length && !this.init.discovery)) return undefined; // nothing says what others hold
    // at most one move of its own per window: a swarm of liars cannot keep it moving
    if (performance.now() - this.lastRebalanceMove < (this.init.rebalanceWindowMs ?? 30 * 60_000)) return undefined;
    const others = await this.holders(this.join, surveyMs);
    const held = this.slices.reduce((a, sl) => a + sl.range.end - sl.range.start, 0);
    const me: Supply = { id: this.t.peerId, ranges: this.ranges(), tokPerSec: Math.max(1e-3, this.layersPerSec) / held, rowsPerSec: this.demand.rowsPerSec };
    const target = planMove(this.cfg.nLayers, [...others, me], me.id, Math.min(this.init.maxLayers ?? held, this.cfg.nLayers));
    if (!target) return undefined;
    this.log("info", "rebalancing", { from: this.ranges(), to: target });
    this.lastRebalanceMove = performance.now();
    return this.move(target, { others });
  }

  // Move to other layers without failing anyone's session: announce the
  // layers being given up as draining (the record says so; gateways open no
  // new sessions there, and a stale one that tries is refused with our record),
  // let the sessions using them finish for up to drainMs, evict the rest (their
  // gateways replay them exactly on another route), and only then drop those
  // layers and load the new ones. Refused if it would leave layers held by
  // nobody else, unless force. Its own operator or its own policy decides; no
  // message from a peer can start it.
  // Unless forced, once it has said it drains it waits settleMs, asks again who
  // holds what (layers others drain do not count) and gives the move up if its
  // old layers would then be held by nobody else: two nodes draining one range
  // at once both see it and stay.
  async move(to: LayerRange | "auto", o: { drainMs?: number; force?: boolean; surveyMs?: number; others?: Supply[] } = {}): Promise<LayerRange[]> {
    if (this.moving) throw new LayerswarmError("BUSY", "this node is already moving");
    if (this.loadingNow) throw new LayerswarmError("BUSY", "this node is loading layers a gateway asked for");
    this.moving = true;
    try {
      const L = this.cfg.nLayers, maxLayers = Math.min(this.init.maxLayers ?? L, L);
      const fits = (t: LayerRange) => {
        if (!(t.start >= 0 && t.end <= L && t.start < t.end)) throw new LayerswarmError("BAD_RANGE", `layer range [${t.start}, ${t.end}) is not within the model's ${L} layers`);
        if (t.end - t.start > maxLayers) throw new LayerswarmError("OUT_OF_MEMORY", `layers [${t.start}, ${t.end}): this node's memory allows ${maxLayers} layers`);
      };
      if (to !== "auto") fits(to); // before asking anyone
      // every slice touching a layer it gives up is dropped whole (its sessions' caches live there)
      const leavingFor = (t: LayerRange) => {
        const giving = subtractRanges(this.ranges(), [t]);
        return this.slices.filter((sl) => giving.some((g) => g.start < sl.range.end && sl.range.start < g.end)).map((sl) => sl.range);
      };
      // the layers it gives up that nobody else holds (cut to those layers: cover is checked only there)
      const holes = (others: Supply[], t: LayerRange) => {
        const lv = leavingFor(t);
        return missingLayers(L, [...others, { id: this.t.peerId, ranges: [t] }])
          .flatMap((h) => lv.map((r) => ({ start: Math.max(h.start, r.start), end: Math.min(h.end, r.end) }))).filter((x) => x.start < x.end);
      };
      // to a given range: the survey stops once others are found holding every layer it gives up
      const enough = to === "auto" ? undefined : (found: Supply[]) => holes(found, to).length === 0;
      const others = o.others ?? (o.force && to !== "auto" ? [] : await this.holders(this.join, o.surveyMs ?? 10_000, enough));
      const target = to === "auto" ? chooseRange(L, clampClaims(others), maxLayers) : to;
      fits(target);
      const leaving = leavingFor(target);
      // only holders this node checked itself (a real step, the same bits) count: records can lie
      const unheld = o.force ? [] : holes(await this.checkedCover(others, leaving), target);
      if (unheld.length)
        throw new LayerswarmError("BAD_ARGUMENT", `moving to [${target.start}, ${target.end}) would leave layers ${unheld.map((h) => `[${h.start}, ${h.end})`).join(" ")} held by nobody else (nobody this node could check answered for them; use force to move anyway)`);
      if (leaving.length) {
        this.draining = leaving;
        this.log("info", "draining", { ranges: leaving, to: target });
        await this.tellGateways();
        if (!o.force) {
          await new Promise((r) => setTimeout(r, this.init.settleMs ?? 1000));
          const now = await this.holders(this.join, o.surveyMs ?? 10_000, (found) => holes(found, target).length === 0);
          const broken = holes(await this.checkedCover(now, leaving), target);
          if (broken.length) {
            this.draining = [];
            await this.tellGateways();
            this.log("warn", "move given up", { to: target, unheld: broken });
            throw new LayerswarmError("BUSY", `move to [${target.start}, ${target.end}) given up: layers ${broken.map((h) => `[${h.start}, ${h.end})`).join(" ")} would be held by nobody else (others drain them too, or left)`);
          }
        }
        await this.drain(leaving, o.drainMs ?? this.init.drainMs ?? 60_000);
        for (const sl of this.slices) if (leaving.includes(sl.range)) this.cheap.delete(sl);
        this.slices = this.slices.filter((sl) => !leaving.includes(sl.range));
      }
      for (const r of subtractRanges([target], this.ranges())) await this.loadRange(r);
      this.draining = [];
      this.measure();
      if (this.init.discovery) this.provideSoon(0);
      await this.tellGateways();
      this.log("info", "moved", { ranges: this.ranges() });
      return this.ranges();
    } finally {
      this.draining = [];
      this.moving = false;
    }
  }

  // The layers it opens no new sessions on: those a move gives up, or all of them once it leaves.
  private drainingNow(): LayerRange[] {
    return this.leaving || this.paused ? this.ranges() : this.draining;
  }

  // Leave the swarm without failing anyone's session (its operator's SIGTERM):
  // every layer drains (the record says so: gateways open no new sessions
  // here, and a stale one that tries is refused with the record), live
  // sessions finish for up to drainMs and the rest are handed over (their
  // gateways replay them exactly on other routes), it stops providing its
  // keys in the DHT, and stops. A move under way is overtaken: its layers drain too.
  async leave(o: { drainMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    if (this.leaving || this.stopped) return;
    this.leaving = true;
    clearTimeout(this.rebalanceTimer);
    clearTimeout(this.provideTimer);
    this.log("info", "leaving the swarm: draining", { ranges: this.ranges(), drainMs: o.drainMs ?? this.init.drainMs ?? 60_000 });
    await this.tellGateways();
    await this.drain(this.ranges(), o.drainMs ?? this.init.drainMs ?? 60_000, "session handed over: the node is stopping", o.signal);
    await this.tellGateways(); // its sessions are gone: gateways can forget it before it goes
    await this.init.discovery?.withdraw?.(providerKeys(modelFingerprint(this.file, this.cfg), this.ranges(), this.cfg.nLayers));
    this.log("info", "left the swarm");
    await this.stop();
  }

  // Its owner lends the machine back for a while (layerswarm node pause): as
  // leave() does, but the slices stay loaded and it stays in the swarm, so
  // resume() serves again at once. Resolves once its sessions are gone.
  async pause(o: { drainMs?: number } = {}): Promise<void> {
    if (this.leaving || this.stopped) throw new LayerswarmError("BUSY", "this node is stopping");
    if (!this.paused) {
      this.paused = true;
      this.log("info", "paused: draining", { ranges: this.ranges() });
      await this.tellGateways();
    }
    await this.drain(this.ranges(), o.drainMs ?? this.init.drainMs ?? 60_000, "session handed over: the node is paused by its owner", undefined, () => !this.paused);
  }

  async resume(): Promise<void> {
    if (!this.paused) return;
    this.paused = false;
    this.log("info", "resumed", { ranges: this.ranges() });
    await this.tellGateways();
  }

  // Wait until no session uses these slices, or drainMs has passed; then evict
  // those left (none if cancelled meanwhile: a paused node resumed).
  private async drain(leaving: LayerRange[], drainMs: number, why = "session handed over: the node is moving to other layers", signal?: AbortSignal, cancelled = () => false): Promise<void> {
    const me = this.t.peerId;
    const using = () => [...this.sessions.values()].filter((s) =>
      s.grant.grant.hops.some((h) => h.peer === me && leaving.some((r) => r.start <= h.start && h.end <= r.end)));
    const until = Date.now() + drainMs;
    while (using().length && Date.now() < until && !this.stopped && !signal?.aborted && !cancelled()) await new Promise((r) => setTimeout(r, 20));
    if (cancelled()) return;
    const left = using();
    for (const s of left) this.evict(s, why);
    if (left.length) this.log("info", "handed sessions over", { sessions: left.length });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.rebalanceTimer);
    clearTimeout(this.provideTimer);
    await this.t.stop();
  }

  // ------------------------------------------------------------ control

  private async control(r: Request, from: Caller): Promise<Response | Uint8Array> {
    switch (r.type) {
      case "info":
        return { type: "record", record: this.record() };
      case "drop": {
        const s = this.sessions.get(r.session);
        // not yours and not here get the same answer: session ids are not disclosed
        if (!s || s.gateway !== from.peer) throw new LayerswarmError("UNKNOWN_SESSION", "no such session");
        this.dropSession(s.id);
        return { type: "ok" };
      }
      case "load": {
        if (!this.gate.allowed(from.peer)) throw new LayerswarmError("FORBIDDEN", "this node serves only the gateways in its --allow list");
        if (this.loadingNow) throw new LayerswarmError("BUSY", "already loading layers");
        if (this.moving) throw new LayerswarmError("BUSY", "this node is moving to other layers; ask again once it has moved");
        if (this.leaving) throw new LayerswarmError("BUSY", "this node is stopping");
        if (this.paused) throw new LayerswarmError("BUSY", "this node is paused by its owner");
        this.loadingNow = true;
        try {
          await this.loadRange({ start: r.start, end: r.end });
        } finally {
          this.loadingNow = false;
        }
        if (this.init.discovery) this.provideSoon(0); // the new layers' blocks
        return { type: "record", record: this.record() };
      }
      case "fraud-proof": {
        // Passed on to the gateways this node served lately, once, without
        // judging it (a node holds too few layers to check it; each gateway
        // checks it by recomputation and ignores accusers whose proofs fail)
        if (!this.proofAsks.take(from.peer)) throw new LayerswarmError("BUSY", "too many fraud proofs; pass them on later");
        const id = accusationId(Buffer.from(r.accusation, "base64"));
        if (this.proofsSeen.has(id)) return { type: "ok" };
        this.proofsSeen.add(id);
        if (this.proofsSeen.size > 1024) this.proofsSeen.delete(this.proofsSeen.values().next().value!);
        for (const [gw, addrs] of this.gateways) if (gw !== from.peer) void request(this.t, gw, addrs, r, 5000).catch(() => {});
        return { type: "ok" };
      }
      case "rollback": {
        const s = this.sessions.get(r.session);
        // not yours and not here get the same answer: session ids are not disclosed
        if (!s || s.gateway !== from.peer) throw new LayerswarmError("UNKNOWN_SESSION", "no such session");
        if (this.queues.get(s.id)?.length) throw new LayerswarmError("BUSY", "steps of this session are still queued here: roll back once their results are in");
        return { type: "rolled-back", receipts: this.rollback(s, r.pos).map((x) => Buffer.from(x.bytes).toString("base64")) };
      }
      case "manifest": {
        // for peers holding only part of the file: they check it against a model id they trust.
        // Tens of KB for a 100-byte ask: the allowed only, a few a peer and an address, encoded once.
        const m = this.init.manifest;
        if (!m) throw new LayerswarmError("UNSUPPORTED", "this node has no manifest of its model (it holds only part of a remote file)");
        if (!this.gate.allowed(from.peer)) throw new LayerswarmError("FORBIDDEN", "this node serves only the gateways in its --allow list");
        if (!this.manifestAsks.peer.take(from.peer) || !this.manifestAsks.ip.take(from.ip)) throw new LayerswarmError("BUSY", "manifest asked for too often; ask again later");
        const reply = (this.manifestReply ??= Buffer.from(JSON.stringify({ type: "manifest", manifest: m } satisfies Response), "utf8"));
        if (reply.length > MAX_CONTROL_BYTES - 1024) throw new LayerswarmError("UNSUPPORTED", `the manifest of ${m.tensors.length} tensors does not fit in one control message`);
        return reply;
      }
      default:
        throw new LayerswarmError("UNSUPPORTED", `a node does not answer "${r.type}"`);
    }
  }

  // Forgets a session's positions >= pos (speculation's rejected rows): its
  // caches and KV memory as if they had never been sent, its next step at pos,
  // and per hop it serves that held them, a signed receipt whose one
  // ROLLED_BACK entry at pos withdraws them (receipt.ts claimedRows).
  private rollback(s: NodeSession, pos: number): Receipt[] {
    // positions each slice held (a hop of ours fed by our own previous slice has no nextPos: it never came over the network)
    const had = new Map(this.slices.map((sl) => [sl, (this.cheap.get(sl) ?? sl).rollback(s.id, pos)]));
    const me = this.t.peerId, bodies: ReceiptBody[] = [], none = new Uint8Array(ROW_HASH_BYTES);
    s.grant.grant.hops.forEach((hop, h) => {
      if (hop.peer !== me) return;
      const sl = this.slices.find((x) => x.range.start <= hop.start && hop.end <= x.range.end);
      if (Math.max(sl ? had.get(sl)! : 0, s.nextPos?.[h] ?? 0) <= pos) return;
      if (s.nextPos?.[h] !== undefined) s.nextPos[h] = Math.min(s.nextPos[h], pos);
      bodies.push({
        numerics: NUMERICS_VERSION, dtype: s.dtypes?.[h] ?? DType.F32, session: s.id, hop: h, start: hop.start, end: hop.end, weights: this.weightsOf(hop.start, hop.end),
        seq: ((s.receiptSeq ??= {})[h] = (s.receiptSeq[h] ?? -1) + 1),
        entries: [{ pos, flags: ROLLED_BACK, input: none, output: none }],
      });
    });
    return signReceipts(bodies, this.identity);
  }

  private dropSession(id: string): void {
    for (const s of this.slices) (this.cheap.get(s) ?? s).dropSession(id);
    if (this.sessions.delete(id)) {
      this.dropped.add(id);
      if (this.dropped.size > 65_536) this.dropped.delete(this.dropped.values().next().value!);
    }
    this.recent.delete(id);
    const q = this.queues.get(id);
    if (q) {
      this.queues.delete(id);
      for (const x of q) this.release(x);
    }
  }

  private sweepIdle(idleMs: number): void {
    for (const s of this.sessions.idle(Date.now() - idleMs)) {
      this.dropSession(s.id);
      this.log("info", "dropped idle session", { idle_ms: Date.now() - s.lastStep });
    }
  }

  // A peer broke the protocol: hang up, keep it out for a while.
  private misbehaved(peer: string, ip: string, why: string): void {
    this.stats.badFrames++;
    this.log("warn", "peer banned", { peer, reason: why.slice(0, 200) });
    this.gate.ban(peer, ip, why);
    void this.t.hangUp(peer);
  }

  // Frames refused for what their sender chose (FORBIDDEN: not its hop, not
  // its session, not allowed): ban a peer that keeps doing it. Strikes fade
  // after ten minutes. Refusals an honest forwarder cannot help (the next
  // stage is full, a session was evicted) are never strikes.
  private strike(peer: string, ip: string, why: string): void {
    const now = Date.now();
    let st = this.strikes.get(peer);
    if (!st || now - st.since > 10 * 60_000) st = { n: 0, since: now };
    st.n++;
    this.strikes.delete(peer);
    this.strikes.set(peer, st);
    if (this.strikes.size > 10_000) this.strikes.delete(this.strikes.keys().next().value!); // the oldest, not everyone's
    if (st.n >= (this.init.strikesBeforeBan ?? 32)) {
      this.strikes.delete(peer);
      this.misbehaved(peer, ip, `${st.n} forbidden frames, the last: ${why}`);
    }
  }

  // Steps for sessions this node does not hold cost a header's parse and an
  // error frame each. Late ones after a drop or an eviction are honest (a
  // gateway has a few steps in flight per session), so they are not strikes:
  // each peer has a budget (a burst, refilled at a steady rate), and only the
  // frames beyond it count as strikes (and go unanswered).
  private unknownBudget(peer: string): boolean {
    const burst = this.init.unknownSessionBurst ?? 256, perSec = this.init.unknownSessionPerSec ?? 64;
    const now = Date.now();
    let b = this.unknown.get(peer);
    b = { tokens: Math.min(burst, (b?.tokens ?? burst) + ((now - (b?.at ?? now)) / 1000) * perSec), at: now };
    this.unknown.delete(peer);
    if (this.unknown.size >= 10_000) this.unknown.delete(this.unknown.keys().next().value!); // the least recent
    const ok = b.tokens >= 1;
    if (ok) b.tokens--;
    this.unknown.set(peer, b);
    return ok;
  }

  // ------------------------------------------------------------ steps

  private async serveSteps(ch: import("../transport.js").Channel): Promise<void> {
    const from = ch.remotePeer, ip = ch.remoteIp;
    try {
      for await (const m of ch.messages()) {
        const type = frameType(m);
        if (type === FrameType.ERROR) {
          const e = decodeError(m);
          if (!this.checks?.onError(e, from)) this.relayError(e, from);
          continue;
        }
        if (type === FrameType.RESULT) {
          // only the answers to this node's own checks of other holders (verify.ts); others are ignored
          const h = decodeResultHead(m, this.limits);
          if (this.checks?.pending(h.session)) this.checks.onResult(resultOf(h), from);
          continue;
        }
        if (type !== FrameType.STEP) throw new LayerswarmError("BAD_MESSAGE", `steps stream: unexpected frame type ${m[0]}`);
        const f = decodeStepHead(m, this.limits); // the values are unpacked only once the frame is authorized
        this.stats.frames++;
        let q: Queued;
        const ctx: AuthContext = {};
        try {
          q = await this.authorize(f, from, ip, ctx);
        } catch (e) {
          if (codeOf(e) === "BAD_MESSAGE") throw e;
          this.stats.refused++;
          if (codeOf(e) === "FORBIDDEN") this.strike(from, ip, (e as Error).message);
          if (e instanceof ReceiptRefused) this.badReceipt(f, from, ip, e, ctx.gateway);
          if (codeOf(e) === "UNKNOWN_SESSION" && !this.unknownBudget(from)) {
            this.strike(from, ip, "steps for unknown sessions faster than its budget");
            continue; // unanswered: answering a flood costs us more than it
          }
          const gw = ctx.gateway;
          // a new session on layers we no longer open: the gateway gets our record first, so it reroutes knowing why
          if (ctx.announce && gw) void this.announce(gw, 2000).catch(() => {}).finally(() => this.refuse(f, from, e, gw));
          else this.refuse(f, from, e, gw);
          continue;
        }
        this.enqueue(q);
        await this.room(from, ip); // stop reading this stream while its sender has too much queued here
      }
    } catch (e) {
      if (this.stopped) return;
      if (codeOf(e) === "BAD_MESSAGE") this.misbehaved(from, ip, (e as Error).message);
      ch.abort(e as Error);
    }
  }

  // Is this step allowed, and for which session? Throws FORBIDDEN, UNKNOWN_SESSION, BAD_RANGE, BAD_ARGUMENT, BUSY or BAD_MESSAGE.
  // ctx.gateway: set once the session's gateway is known for sure (a verified grant naming this hop and sender).
  // The values are unpacked only after every check of the sender and the session, and before any session changes.
  private async authorize(f: StepHead, from: string, ip: string, ctx: AuthContext): Promise<Queued> {
    const grantBytes = extension(f, Ext.ROUTE_GRANT);
    let s = this.sessions.get(f.session);
    let full: StepFrame | undefined;
    let checked: { inHashes: Uint8Array[]; prev?: Receipt } | undefined;
    const values = (g: RouteGrant) => {
      full = stepOf(f);
      const bad = firstNonFinite(full.hidden);
      if (bad >= 0) throw new LayerswarmError("BAD_ARGUMENT", `hidden value ${bad} of the step is not finite (an f16 overflow?)`);
      checked = this.checkPrevious(full, g);
    };
    if (grantBytes) {
      const g = await openGrant(grantBytes, this.cfg.nLayers);
      if (g.grant.session !== f.session) throw new LayerswarmError("BAD_MESSAGE", "route grant is for another session");
      this.checkHop(g.grant, f, from);
      ctx.gateway = { peer: g.grant.gateway, addrs: g.grant.gatewayAddrs };
      if (!this.gate.allowed(g.grant.gateway)) throw new LayerswarmError("FORBIDDEN", "this node serves only the gateways in its --allow list");
      const hop = g.grant.hops[f.hop];
      ctx.announce = !s; // a stale record sent it here: it hears the fresh one with the refusal
      this.checkRange(hop);
      const leaving = this.drainingNow().find((d) => d.start < hop.end && hop.start < d.end);
      if (!s && leaving) throw new LayerswarmError("BUSY", this.leaving ? "this node is stopping: it opens no new sessions" : this.paused ? "this node is paused by its owner: it opens no new sessions" : `this node is moving away from layers [${leaving.start}, ${leaving.end}): it opens no new sessions there`);
      ctx.announce = false;
      if (s) {
        if (s.gateway !== g.grant.gateway) throw new LayerswarmError("FORBIDDEN", "session id already in use");
        values(g.grant);
        if (g.grant.issuedAt >= s.grant.grant.issuedAt) {
          s.grant = g;
          s.accepts = acceptsOf(f, g.grant.hops.length);
        }
      } else {
        if (this.dropped.has(f.session)) throw new LayerswarmError("UNKNOWN_SESSION", "this session was dropped here; open a new one");
        if (f.pos !== 0) throw new LayerswarmError(f.hop === 0 ? "BAD_ARGUMENT" : "FORBIDDEN", `a new session's first step is at position ${f.pos}, not 0`);
        values(g.grant);
        // a session counts against its gateway's address: where hop 0 came from, or what its grant says
        const owner = f.hop === 0 ? ip : ipOfAddrs(g.grant.gatewayAddrs, g.grant.gateway) ?? `gateway:${g.grant.gateway}`;
        s = { id: f.session, gateway: g.grant.gateway, grant: g, accepts: acceptsOf(f, g.grant.hops.length), ip: owner, createdAt: Date.now(), lastStep: Date.now() };
        const evicted = this.sessions.admit(s);
        this.stats.opened++;
        this.gateways.delete(g.grant.gateway);
        this.gateways.set(g.grant.gateway, g.grant.gatewayAddrs);
        if (this.gateways.size > 64) this.gateways.delete(this.gateways.keys().next().value!);
        if (evicted) this.evict(evicted);
      }
    } else {
      if (!s) throw new LayerswarmError("UNKNOWN_SESSION", "no such session (it was dropped, evicted or never opened here)");
      this.checkHop(s.grant.grant, f, from);
      ctx.gateway = { peer: s.gateway, addrs: s.grant.grant.gatewayAddrs };
      this.checkRange(s.grant.grant.hops[f.hop]);
      values(s.grant.grant);
    }
    const next = s.nextPos?.[f.hop] ?? 0;
    if (f.pos !== next)
      throw new LayerswarmError(f.hop === 0 ? "BAD_ARGUMENT" : "FORBIDDEN", `a step at position ${f.pos} of hop ${f.hop}, where this session's next position is ${next}: positions only grow (going back takes a rollback)`);
    (s.nextPos ??= {})[f.hop] = f.pos + f.T;
    (s.dtypes ??= {})[f.hop] = f.dtype; // what its receipts there say (a rollback's too)
    s.lastStep = Date.now();
    return { f: full!, s, from, ip, inHashes: checked!.inHashes, prev: checked!.prev };
  }

  // The rows' hashes, and at hop h >= 1 the check of the previous stage's
  // receipt: the frame carries h receipts, and the last is that stage's own,
  // for this session, hop and layers, in our numerics, stating as its output
  // exactly the rows received here, position by position. Synchronous and
  // cheap (the hashes are needed for our own receipt anyway); the signature is
  // verified later (verifyLater). Throws ReceiptRefused (BAD_RECEIPT).
  private checkPrevious(f: StepFrame, g: RouteGrant): { inHashes: Uint8Array[]; prev?: Receipt } {
    const t0 = performance.now();
    try {
      const inHashes = rowHashes(f.pos, f.T, f.dim, f.hidden);
      if (f.hop === 0) return { inHashes }; // from the gateway, which signs no receipts
      const all = receiptsOf(f), bytes = all[f.hop - 1], prevHop = g.hops[f.hop - 1];
      const refuse = (why: string): never => {
        throw new ReceiptRefused(`the receipt of hop ${f.hop - 1} (${expectedSender(g, f.hop).slice(-8)}) ${why}`, bytes);
      };
      if (all.length !== f.hop) refuse(`is missing: a step at hop ${f.hop} carries ${f.hop} receipts, this one ${all.length}`);
      let r: Receipt;
      try {
        r = parseReceipt(bytes);
      } catch (e) {
        return refuse(`is malformed (${(e as Error).message})`);
      }
      if (r.signer !== expectedSender(g, f.hop)) refuse(`is signed by ${r.signer.slice(-8)}`);
      if (r.session !== f.session || r.hop !== f.hop - 1) refuse(`is about another step (session ${r.session.slice(0, 8)}…, hop ${r.hop})`);
      if (r.numerics !== NUMERICS_VERSION) refuse(`is in numerics version ${r.numerics}, this node's is ${NUMERICS_VERSION}`);
      if (r.start !== prevHop.start || r.end !== prevHop.end) refuse(`covers layers [${r.start}, ${r.end}), the route's hop has [${prevHop.start}, ${prevHop.end})`);
      if (r.entries.length !== f.T || r.entries.some((e, t) => e.pos !== f.pos + t || e.flags !== 0))
        refuse(`does not cover exactly positions ${f.pos} .. ${f.pos + f.T - 1}`);
      const t = r.entries.findIndex((e, i) => !hashEqual(e.output, inHashes[i]));
      if (t >= 0) refuse(`states another row at position ${f.pos + t} than the one it sent`);
      return { inHashes, prev: r };
    } finally {
      this.stats.receiptMs += performance.now() - t0;
    }
  }

  // The previous stage sent a receipt that does not hold: the step is refused
  // (by the caller), the sender struck, and the session's gateway told, with
  // the receipt, so that it can check and act (best effort, like progress).
  private badReceipt(f: { req: number; session: string; hop: number }, from: string, ip: string, e: ReceiptRefused, gateway?: { peer: string; addrs: string[] }): void {
    this.stats.badReceipts++;
    this.log("warn", "bad receipt from the previous stage", { peer: from.slice(-8), why: e.message.slice(0, 200) });
    this.strike(from, ip, e.message);
    if (!gateway || !e.receipt || e.receipt.length > maxReceiptBytes(MAX_RECEIPT_ENTRIES)) return;
    const dispute: Request = { type: "dispute", session: f.session, req: f.req, hop: f.hop - 1, receipt: Buffer.from(e.receipt).toString("base64") };
    void request(this.t, gateway.peer, gateway.addrs, dispute, 5000).catch(() => {});
  }

  // The signatures of the previous stages' receipts of steps already sent on:
  // checked now, off the step path (one check per batch they signed). A bad
  // one is refused as a mismatch would have been, late.
  private verifyLater(xs: Queued[]): void {
    const todo = xs.filter((x) => x.prev);
    if (!todo.length) return;
    setImmediate(() => {
      for (const x of todo) {
        const r = x.prev!, root = receiptRoot(r);
        const key = `${Buffer.from(r.signature).toString("base64")}|${r.path.length}|${Buffer.from(root).toString("base64")}`;
        if (this.verified.has(key)) continue;
        if (receiptSignedSync(r, root)) {
          this.verified.add(key);
          if (this.verified.size > 1024) this.verified.delete(this.verified.values().next().value!);
          continue;
        }
        const e = new ReceiptRefused(`the receipt of hop ${x.f.hop - 1} (${r.signer.slice(-8)}) is not signed by its key`, r.bytes);
        const g = x.s.grant.grant, gw = { peer: g.gateway, addrs: g.gatewayAddrs };
        this.stats.refused++;
        this.badReceipt(x.f, x.from, x.ip, e, gw);
        this.refuse(x.f, x.from, e, gw);
      }
    });
  }


  private checkRange(hop: { start: number; end: number }): void {
    if (!this.slices.some((x) => x.range.start <= hop.start && hop.end <= x.range.end))
      throw new LayerswarmError("BAD_RANGE", `this node does not hold layers [${hop.start}, ${hop.end})`);
  }

  private checkHop(g: import("../protocol/index.js").RouteGrant, f: { hop: number }, from: string): void {
    if (f.hop >= g.hops.length || g.hops[f.hop].peer !== this.t.peerId) throw new LayerswarmError("FORBIDDEN", `hop ${f.hop} of this route is not this node`);
    if (expectedSender(g, f.hop) !== from) throw new LayerswarmError("FORBIDDEN", `hop ${f.hop} of this route is sent by ${expectedSender(g, f.hop).slice(-8)}, not by ${from.slice(-8)}`);
  }

  // The owner (address, then gateway) holding the most KV memory gives up its
  // least recently stepped session, unless that is the asker's own owner and
  // it holds no more than the asker. Returns whether anything was freed.
  private evictForMemory(asker: NodeSession): boolean {
    const bytes = (id: string) => this.slices.reduce((a, sl) => a + (sl.sessions.get(id)?.bytes ?? 0), 0);
    const all = [...this.sessions.values()].map((x) => ({ x, b: bytes(x.id) }));
    const sum = (pred: (y: NodeSession) => boolean) => all.filter((y) => pred(y.x)).reduce((a, y) => a + y.b, 0);
    const ips = [...new Set(all.map((y) => y.x.ip))].map((ip) => ({ ip, b: sum((y) => y.ip === ip) })).sort((a, b) => b.b - a.b);
    const top = ips[0];
    if (!top) return false;
    let pool = all.filter((y) => y.x.ip === top.ip && y.x.id !== asker.id && y.b > 0);
    if (top.ip === asker.ip) {
      const gws = [...new Set(pool.map((y) => y.x.gateway))].map((g) => ({ g, b: sum((y) => y.gateway === g && y.ip === top.ip) })).sort((a, b) => b.b - a.b);
      const mine = sum((y) => y.gateway === asker.gateway && y.ip === asker.ip);
      if (!gws[0] || (gws[0].g === asker.gateway && gws.length === 1) || gws[0].b <= mine) return false;
      pool = pool.filter((y) => y.x.gateway === gws[0].g);
    } else if (top.b <= sum((y) => y.ip === asker.ip)) return false;
    const victim = pool.sort((a, b) => a.x.lastStep - b.x.lastStep)[0];
    if (!victim) return false;
    this.evict(victim.x);
    return true;
  }

  // Evicted: the gateway hears of it at once, for the session and for every
  // step of it that was waiting here, so it reroutes without a timeout.
  private evict(s: NodeSession, message = "session evicted: the node is full and its owner held more than its share"): void {
    this.stats.evicted++;
    const g = s.grant.grant;
    for (const x of this.queues.get(s.id) ?? []) this.sendTo(g.gateway, g.gatewayAddrs, encodeError({ req: x.f.req, session: s.id, code: "BUSY", message }));
    this.dropSession(s.id);
    this.log("info", "evicted a session", { gateway: s.gateway.slice(-8), why: message });
    this.sendTo(g.gateway, g.gatewayAddrs, encodeError({ req: 0, session: s.id, code: "BUSY", message }));
  }

  // A refused step: the error goes to the session's gateway when we know it
  // for sure (so it reroutes at once instead of waiting out a timeout), else
  // back to the sender (a gateway, or a stage that then ignores it).
  private refuse(f: { req: number; session: string }, from: string, e: unknown, gateway?: { peer: string; addrs: string[] }): void {
    const to = gateway ?? { peer: from, addrs: [] };
    this.sendTo(to.peer, to.addrs, encodeError({ req: f.req, session: f.session, code: codeOf(e), message: (e as Error).message }));
  }

  // The next stage refused a step of one of our sessions (it lost the session:
  // evicted, restarted): tell the session's gateway, which reroutes at once.
  private relayError(e: ErrorFrame, from: string): void {
    const s = this.sessions.get(e.session);
    if (!s || !s.grant.grant.hops.some((h) => h.peer === from) || (e.code !== "UNKNOWN_SESSION" && e.code !== "BUSY")) return;
    const g = s.grant.grant;
    this.sendTo(g.gateway, g.gatewayAddrs, encodeError({ ...e, message: `next stage ${from.slice(-8)}: ${e.message}`.slice(0, 1000) }));
  }

  private enqueue(q: Queued): void {
    // evicted or dropped between its admission and now: nothing of it may run (its cache would outlive it)
    if (this.sessions.get(q.s.id) !== q.s) {
      this.refuse(q.f, q.from, new LayerswarmError("BUSY", "session evicted before its step ran"), { peer: q.s.gateway, addrs: q.s.grant.grant.gatewayAddrs });
      return;
    }
    this.recent.set(q.s.id, Date.now());
    const list = this.queues.get(q.s.id);
    if (list) list.push(q);
    else this.queues.set(q.s.id, [q]);
    const rows = q.f.T;
    this.queuedRows.total += rows;
    if (q.from) {
      this.queuedRows.peer.set(q.from, (this.queuedRows.peer.get(q.from) ?? 0) + rows);
      this.queuedRows.ip.set(q.ip, (this.queuedRows.ip.get(q.ip) ?? 0) + rows);
    }
    this.pump();
  }

  private release(q: Queued): void {
    this.queuedRows.total -= q.f.T;
    if (q.from) {
      const p = (this.queuedRows.peer.get(q.from) ?? 0) - q.f.T, i = (this.queuedRows.ip.get(q.ip) ?? 0) - q.f.T;
      if (p > 0) this.queuedRows.peer.set(q.from, p);
      else this.queuedRows.peer.delete(q.from);
      if (i > 0) this.queuedRows.ip.set(q.ip, i);
      else this.queuedRows.ip.delete(q.ip);
    }
    for (const w of this.roomWaiters.splice(0)) w();
  }

  // Resolves when this sender, its address and the node as a whole are under their queued-row limits.
  private async room(from: string, ip: string): Promise<void> {
    const B = this.maxBatchRows;
    const full = () => (this.queuedRows.peer.get(from) ?? 0) >= 4 * B || (this.queuedRows.ip.get(ip) ?? 0) >= 8 * B || this.queuedRows.total >= 32 * B;
    while (full() && !this.stopped) await new Promise<void>((r) => this.roomWaiters.push(r));
  }

  private recentSessions(): number {
    const now = Date.now();
    let n = 0;
    for (const [k, t] of this.recent) {
      if (now - t < 250) n++;
      else this.recent.delete(k);
    }
    return n;
  }

  // Run queued steps in batches until the queues are empty, yielding to the
  // event loop between batches so frames that arrive meanwhile join the next one.
  // next: called again after a batch (it yields to the event loop even alone).
  private pump(next = false): void {
    if (this.busy || this.stopped) return;
    this.busy = true;
    // With several sessions in flight, wait a moment for their steps to arrive
    // so they share one pass over the weights; alone, run at once: in this
    // turn's microtasks, not after the event loop's next round of I/O (a lone
    // session has nothing to wait for, and each step's hop paid for that turn).
    const waitMs = this.recentSessions() > 1 ? (this.init.batchWindowMs ?? Number(process.env.LAYERSWARM_BATCH_WINDOW_MS ?? 2)) : 0;
    const run = waitMs > 0 ? (f: () => void) => setTimeout(f, waitMs) : next ? setImmediate : queueMicrotask;
    run(() => {
      const t0 = performance.now();
      let rows = 0;
      try {
        rows = this.runBatch();
      } catch (e) {
        this.log("error", "batch failed", { error: (e as Error).message });
      } finally {
        this.stats.busyMs += performance.now() - t0;
        this.busy = false;
        // everything left waits on a congested destination: look again shortly
        if (this.queues.size > 0) {
          if (rows > 0) this.pump(true);
          else setTimeout(() => this.pump(true), 5).unref();
        }
      }
    });
  }

  // One batch: rows taken in rounds, one session's next step per owner (the
  // gateway) per round, starting each batch with the next owner, so a peer
  // with big or many steps gets its share and not everyone's. A session whose
  // next destination has too many bytes unsent waits (its sender is held back
  // by room()); it never holds up the others.
  private ownerCursor = 0;
  private runBatch(): number {
    const byOwner = new Map<string, string[]>();
    for (const [id, q] of this.queues) {
      const x = q[0];
      if (this.outbox.congested(this.destination(x))) continue;
      (byOwner.get(x.s.gateway) ?? byOwner.set(x.s.gateway, []).get(x.s.gateway)!).push(id);
    }
    const owners = [...byOwner.keys()];
    const start = owners.length ? this.ownerCursor++ % owners.length : 0;
    const order = [...owners.slice(start), ...owners.slice(0, start)];
    const groups = new Map<string, Queued[]>();
    let rows = 0;
    for (let round = 0, took = true; took; round++) {
      took = false;
      for (const o of order) {
        const id = byOwner.get(o)![round];
        if (id === undefined) continue;
        const q = this.queues.get(id)!;
        const x = q[0];
        if (rows > 0 && rows + x.f.T > this.maxBatchRows) continue;
        q.shift();
        this.queues.delete(id);
        if (q.length > 0) this.queues.set(id, q); // to the back: sessions take turns
        this.release(x);
        const hop = x.s.grant.grant.hops[x.f.hop];
        const key = `${hop.start}:${hop.end}`;
        (groups.get(key) ?? groups.set(key, []).get(key)!).push(x);
        rows += x.f.T;
        took = true;
      }
    }
    for (const [key, xs] of groups) {
      const [start, end] = key.split(":").map(Number);
      const held = this.slices.find((s) => s.range.start <= start && end <= s.range.end);
      const slice = held && (this.cheap.get(held) ?? held);
      if (!slice) {
        for (const x of xs) this.fail(x, new LayerswarmError("BAD_RANGE", `this node does not hold layers [${start}, ${end})`));
        continue;
      }
      const tb = performance.now();
      let outs: Float32Array[];
      try {
        outs = slice.forward(xs.map((x) => ({ session: x.s.id, pos: x.f.pos, T: x.f.T, hidden: x.f.hidden })), undefined, this.faultyLayers(start, end));
        if (this.init.fault) for (const o of outs) this.init.fault.afterStep(o);
      } catch (e) {
        // one bad step must not sink the others: run them one by one
        // (forward validates every step before it changes any state)
        void e;
        for (const x of xs) {
          const one = () => {
            const o = slice.forward([{ session: x.s.id, pos: x.f.pos, T: x.f.T, hidden: x.f.hidden }], undefined, this.faultyLayers(start, end))[0];
            this.init.fault?.afterStep(o);
            return o;
          };
          try {
            this.finish([x], [one()]);
          } catch (e1) {
            // KV memory is shared fairly: make room by evicting from whoever holds the most, then try once more
            if (codeOf(e1) === "OUT_OF_MEMORY" && this.evictForMemory(x.s)) {
              try {
                this.finish([x], [one()]);
                continue;
              } catch (e2) {
                this.fail(x, e2);
                continue;
              }
            }
            this.fail(x, e1);
          }
        }
        continue;
      }
      this.stats.batches++;
      this.stats.rows += xs.reduce((a, x) => a + x.f.T, 0);
      this.finish(xs, outs);
      this.report(xs, performance.now() - tb);
    }
    return rows;
  }

  // cheap-model: the same layers from another file of the same shape, computed
  // instead of ours while the record still names ours (a node cheating on its weights)
  private loadCheap(file: string, r: LayerRange): SliceRuntime {
    const f = readGGUF(file), cfg = configFromGGUF(f);
    if (cfg.dim !== this.cfg.dim || cfg.nLayers !== this.cfg.nLayers || cfg.arch !== this.cfg.arch)
      throw new LayerswarmError("BAD_ARGUMENT", `cheap-model ${file}: ${cfg.arch} ${cfg.nLayers} layers of width ${cfg.dim}, not this model's shape`);
    return loadSlice(f, cfg, r, this.init.kernels, { maxSessions: 1 << 20, kvBudgetBytes: this.init.kvBudgetBytes, maxContext: this.init.maxContext });
  }

  // The layers actually computed for [start, end): all of them, unless this node is faulty on purpose.
  private faultyLayers(start: number, end: number): LayerRange {
    return this.init.fault ? this.init.fault.layers(start, end) : { start, end };
  }

  // Tell the gateways whose last step went on to `peer` that the link broke,
  // naming that step: they replay it at once instead of waiting out their step
  // timeout. Said as UNREACHABLE, which a gateway does not hold against the
  // reporter (it replays on the same route; a stage that keeps saying so only
  // slows the sessions it is already on).
  private nextStageCut(peer: string, how: string): void {
    const recent = Date.now() - 120_000;
    for (const s of this.sessions.values()) {
      if (s.sent?.to !== peer || s.sent.at < recent) continue;
      const g = s.grant.grant;
      this.sendTo(g.gateway, g.gatewayAddrs, encodeError({ req: s.sent.req, session: s.id, code: "UNREACHABLE", message: `the link to the next stage ${peer.slice(-8)} ${how}: the step sent on it may be lost` }));
      s.sent = undefined;
    }
  }

  private destination(x: Queued): string {
    const g = x.s.grant.grant;
    return x.f.hop + 1 < g.hops.length ? g.hops[x.f.hop + 1].peer : g.gateway;
  }

  // Steps computed: signed (one signature for all of them), sent on, and the
  // previous stages' signatures checked after.
  private finish(xs: Queued[], outs: Float32Array[]): void {
    const signed = this.sign(xs, outs);
    xs.forEach((x, i) => {
      try {
        this.emit(x, signed.wire[i], signed.receipts[i], signed.outHashes[i]);
      } catch (e) {
        this.fail(x, e); // its frame cannot be made (receipts of many wide steps over many hops): that step alone fails
      }
    });
    this.verifyLater(xs);
  }

  // This node's receipts for steps it computed: per step, its hop's layers and
  // our hashes of them, this session's next number, and for every row (all T,
  // sent or not: LAST_ROW_ONLY) the hash of its input and of its output exactly
  // as the receiver decodes it (wire: the outputs rounded to the frame's dtype).
  private sign(xs: Queued[], outs: Float32Array[]): { wire: Float32Array[]; receipts: Receipt[]; outHashes: Uint8Array[][] } {
    const t0 = performance.now();
    const wire = xs.map((x, i) => wireRound(outs[i], x.f.dtype));
    const outHashes = xs.map((x, i) => rowHashes(x.f.pos, x.f.T, x.f.dim, wire[i]));
    const bodies = xs.map((x, i): ReceiptBody => {
      const hop = x.s.grant.grant.hops[x.f.hop], fault = this.init.fault;
      return {
        numerics: NUMERICS_VERSION, dtype: x.f.dtype, session: x.f.session, hop: x.f.hop, start: hop.start, end: hop.end, weights: this.weightsOf(hop.start, hop.end),
        seq: ((x.s.receiptSeq ??= {})[x.f.hop] = (x.s.receiptSeq[x.f.hop] ?? -1) + 1),
        entries: outHashes[i].map((out, t) => ({ pos: x.f.pos + t, flags: 0, input: x.inHashes[t], output: fault ? fault.receiptHash(out) : out })),
      };
    });
    const receipts = signReceipts(bodies, this.identity);
    this.stats.receiptSteps += xs.length;
    this.stats.receiptMs += performance.now() - t0;
    return { wire, receipts, outHashes };
  }

  // What this node's receipts say of its weights for layers [start, end): the digest of the hashes of the bytes it loaded.
  private weightsOf(start: number, end: number): Uint8Array {
    const key = `${start}:${end}`;
    let w = this.weights.get(key);
    if (!w) this.weights.set(key, (w = weightsDigest(Array.from({ length: end - start }, (_, k) => this.layerHashes.get(start + k) ?? ""))));
    return w;
  }

  // out: the outputs as the receiver decodes them; receipt: this node's for
  // the step, sent on after the receipts of the stages before (none from hop 0:
  // whatever a gateway put there is not a stage's).
  private emit(x: Queued, out: Float32Array, receipt: Receipt, outHashes: Uint8Array[]): void {
    const { f, s } = x, g = s.grant.grant, C = this.cfg.dim;
    const receipts = [...(f.hop === 0 ? [] : f.ext.filter((e) => e.kind === Ext.RECEIPT)), { kind: Ext.RECEIPT, data: receipt.bytes }];
    if (f.hop + 1 < g.hops.length) {
      const next = g.hops[f.hop + 1];
      const ext = [...f.ext.filter((e) => e.kind === Ext.ROUTE_GRANT || e.kind === Ext.ACCEPTS), ...receipts]; // the grant and accepts travel on with the session's first frame
      const nf: StepFrame = { ...f, hop: f.hop + 1, hidden: out, ext };
      if (next.peer === this.t.peerId) this.enqueue({ f: nf, s, from: "", ip: "", inHashes: outHashes }); // our own next slice
      else {
        this.nextStages.delete(next.peer);
        this.nextStages.set(next.peer, { addrs: next.addrs, at: Date.now() });
        if (this.nextStages.size > 64) this.nextStages.delete(this.nextStages.keys().next().value!);
        s.sent = { req: f.req, to: next.peer, at: Date.now() };
        this.sendTo(next.peer, next.addrs, this.encodeFor(next.peer, s, f.hop, nf, encodeStep));
      }
    } else {
      const hidden = f.flags & FLAG_LAST_ROW_ONLY ? out.subarray((f.T - 1) * C) : out;
      const r = { req: f.req, session: f.session, pos: f.pos, T: hidden.length / C, dim: C, dtype: f.dtype, flags: f.flags, ext: receipts, hidden };
      this.sendTo(g.gateway, g.gatewayAddrs, this.encodeFor(g.gateway, s, f.hop, r, encodeResult));
    }
  }

  // A frame for the receiver of this hop's output, packed where that receiver
  // takes it and the link to it makes it pay (wire.ts).
  private encodeFor<F extends { T: number; hidden: Float32Array; dtype: DType }>(to: string, s: NodeSession, hop: number, fr: F, enc: (fr: F, pack: boolean) => Uint8Array): Uint8Array {
    const raw = fr.hidden.length * dtypeBytes(fr.dtype);
    const pack = this.wire.shouldPack(raw, ((s.accepts?.[hop] ?? 0) & CODEC_PLANES) !== 0, this.outbox.bytesPerMs(to));
    const t0 = pack ? performance.now() : 0;
    const b = enc(fr, pack);
    this.wire.sent(raw, b.length, fr.T, pack ? performance.now() - t0 : undefined, (b[3] & FLAG_PACKED) !== 0);
    return b;
  }

  private fail(x: Queued, e: unknown): void {
    const g = x.s.grant.grant;
    this.log("warn", "step failed", { code: codeOf(e), message: (e as Error).message });
    this.sendTo(g.gateway, g.gatewayAddrs, encodeError({ req: x.f.req, session: x.f.session, code: codeOf(e), message: (e as Error).message }));
  }

  private sendTo(peer: string, addrs: string[], msg: Uint8Array): void {
    this.outbox.send(peer, addrs, msg).catch(() => { /* logged by the outbox; the gateway notices the missing result */ });
  }

  // Tell each gateway which of its steps passed here and how long batches
  // took (its dashboard's pipeline view), at most every 100 ms per gateway.
  private pendingReports = new Map<string, { addrs: string[]; reqs: number[]; ms: number[] }>();
  private report(xs: Queued[], ms: number): void {
    for (const x of xs) {
      const g = x.s.grant.grant;
      let r = this.pendingReports.get(g.gateway);
      if (!r) {
        r = { addrs: g.gatewayAddrs, reqs: [], ms: [] };
        this.pendingReports.set(g.gateway, r);
        const gw = g.gateway;
        setTimeout(() => {
          const rep = this.pendingReports.get(gw)!;
          this.pendingReports.delete(gw);
          void request(this.t, gw, rep.addrs, { type: "progress", reqs: rep.reqs.slice(0, 4096), ms: rep.ms.slice(0, 4096) }, 2000).catch(() => {});
        }, 100).unref();
      }
      r.reqs.push(x.f.req);
      if (r.ms.length === 0 || r.ms[r.ms.length - 1] !== Math.round(ms * 100) / 100) r.ms.push(Math.round(ms * 100) / 100);
    }
  }

  // Ping the peers sent to in the last 30 s (the dashboard's link latencies).
  private async pingLinks(): Promise<void> {
    if (this.pinging) return; // one round at a time
    this.pinging = true;
    try {
      await this.pingRound();
    } finally {
      this.pinging = false;
    }
  }
  private async pingRound(): Promise<void> {
    const now = Date.now();
    for (const [peer, u] of [...this.nextStages]) {
      if (now - u.at > 30_000) {
        this.nextStages.delete(peer);
        this.links.delete(peer);
        continue;
      }
      try {
        this.links.set(peer, Math.round((await this.t.ping(peer, u.addrs, AbortSignal.timeout(2000))) * 100) / 100);
      } catch {
        this.links.delete(peer);
      }
    }
  }
}

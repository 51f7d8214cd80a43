// The step pipeline: sends a step's hidden state to the first stage of its
// route and waits for the last stage's result. A result is taken only from
// the last stage of that request's route and for that request's session; an
// error only from a stage of that route. Anything else is dropped (and a peer
// that sends frames that do not parse is banned). A step that outlives its
// timeout is blamed on the stages that no longer answer.

import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { Step } from "../../model/runtime.js";
import { Logger } from "../log.js";
import { Outbox } from "../outbox.js";
import { PackMode, WirePolicy } from "../wire.js";
import {
  wireRound, CODECS, CODEC_PLANES, FLAG_PACKED, DType, ErrorFrame, Ext, dtypeBytes, FLAG_LAST_ROW_ONLY, FrameLimits, FrameType, PROTOCOLS, ResultHead, SignedGrant, decodeError, decodeResultHead, encodeStep, resultOf, firstNonFinite, frameType, maxFrameBytes,
} from "../protocol/index.js";
import { request } from "../rpc.js";
import { Channel, Reach, Transport } from "../transport.js";
import { NodeDirectory } from "./directory.js";

// The route failed. `peers` are stages that are gone (unreachable: lost for
// every session); `suspects` are stages this session should route around
// (they refused, erred or sat on a step while still answering).
// `avoid`: stages this session routes around without holding it against them
// elsewhere (one of them lied, and which is for an audit to say).
export class RouteLost extends Error {
  constructor(readonly peers: string[], message: string, readonly code = "UNREACHABLE", readonly suspects: string[] = [], readonly reporter?: string, readonly avoid: string[] = []) {
    super(message);
  }
}

export interface WireSession {
  owner: string; // the local session id (for views)
  sid: string; // the wire session id of this epoch: 128 random bits
  grant: SignedGrant;
  grantSent: boolean; // attached to the epoch's first frame, then travels with it
}

interface Pending {
  resolve: (h: Float32Array) => void;
  reject: (e: Error) => void;
  peers: string[];
  last: string;
  sid: string;
  owner: string;
  timer: NodeJS.Timeout;
  sentAt: number;
  pos: number;
  T: number;
  stage: number; // stages passed so far (from the nodes' progress reports)
  sent: Float32Array; // what hop 0 was sent (its receipt names these rows as it decoded them: wireRound(sent, dtype))
  dtype: DType;
}

// Checks the receipts a result carried (verify.ts, ledger.ts): a break names
// the stage blamed, and whether the break itself proves that stage lied.
export type ReceiptCheck = (sid: string, pos: number, T: number, sent: Float32Array, chain: Uint8Array[], returned: Float32Array) => { peer: string; reason: string; certain: boolean } | undefined;

export interface PipelineOptions {
  stepTimeoutMs: number;
  dtype: DType;
  lastRowOnlyAllowed: boolean; // false when the gateway runs tail layers: they need every row
  pack?: PackMode; // pack values on the first hop where it pays (wire.ts; default auto)
}

// The most rows one step may carry (a node accepts 512 by default; longer prompts go in chunks).
export const MAX_STEP_ROWS = 512;

// Codes after which the session moves to a new route (and the step is sent again).
const RETRYABLE = new Set(["UNKNOWN_SESSION", "BUSY", "UNREACHABLE", "BAD_RANGE", "FORBIDDEN"]);

export class StepPipeline {
  private pending = new Map<number, Pending>();
  private nextReq = 1;
  readonly limits: FrameLimits;
  readonly outbox: Outbox;
  onEvicted: (sid: string, by: string) => void = () => {};
  checkReceipts?: ReceiptCheck;
  stats = { steps: 0, strayFrames: 0, timeouts: 0, resultBytes: 0, resultRows: 0 };
  readonly wire: WirePolicy;

  constructor(private t: Transport, private dir: NodeDirectory, private log: Logger, private o: PipelineOptions, dim: number) {
    this.limits = { dim, maxRows: MAX_STEP_ROWS };
    this.outbox = new Outbox(t, log);
    this.wire = new WirePolicy(o.pack);
  }

  // How hidden states travel (rows arrive rounded to it).
  get dtype(): DType {
    return this.o.dtype;
  }

  // Codec bits a node says it takes (its record's codecs).
  private takes(peer: string): number {
    return (this.dir.get(peer)?.record.capabilities.codecs ?? []).reduce((a, c) => a | (CODECS[c] ?? 0), 0);
  }

  // Bytes per token on the gateway's own hops: what it sends to first stages
  // (per row) and what last stages send back (per row returned).
  wireView(): { sentBytesPerRow: number; rawBytesPerRow: number; resultBytesPerRow: number; packedFrames: number; frames: number } {
    const w = this.wire.stats, r = (a: number, b: number) => (b > 0 ? Math.round(a / b) : 0);
    return { sentBytesPerRow: r(w.wireBytes, w.rows), rawBytesPerRow: r(w.rawBytes, w.rows), resultBytesPerRow: r(this.stats.resultBytes, this.stats.resultRows), packedFrames: w.packedFrames, frames: w.frames };
  }

  async start(): Promise<void> {
    await this.t.handle(PROTOCOLS.steps, (ch) => void this.serveResults(ch), { maxMessageBytes: maxFrameBytes(this.limits), maxStreamsPerConnection: 4 });
    this.t.onInterrupt?.((peer) => {
      this.outbox.forget(peer);
      this.interrupt(peer, "was reached again after its relay cut the circuit");
    });
  }

  send(ws: WireSession, route: { peer: string; addrs: string[] }[], st: Step, signal?: AbortSignal): Promise<Float32Array> {
    throwIfAborted(signal);
    if (st.T > this.limits.maxRows) return Promise.reject(new LayerswarmError("BAD_ARGUMENT", `a step of ${st.T} rows: at most ${this.limits.maxRows} per step (use smaller prefill chunks)`));
    this.stats.steps++;
    const req = this.nextReq++ >>> 0 || this.nextReq++;
    const peers = route.map((h) => h.peer);
    // the epoch's first frame carries the grant, and what each stage's next receiver takes (the last's: this gateway)
    const ext = ws.grantSent ? [] : [
      { kind: Ext.ROUTE_GRANT, data: ws.grant.bytes },
      { kind: Ext.ACCEPTS, data: Uint8Array.from(peers, (_, i) => (i + 1 < peers.length ? this.takes(peers[i + 1]) : CODEC_PLANES)) },
    ];
    ws.grantSent = true;
    const lastRowOnly = !!st.lastRowOnly && this.o.lastRowOnlyAllowed;
    const frame = {
      req, session: ws.sid, pos: st.pos, T: st.T, dim: this.limits.dim, dtype: this.o.dtype, flags: lastRowOnly ? FLAG_LAST_ROW_ONLY : 0, hop: 0, ext, hidden: st.hidden,
    };
    const raw = st.hidden.length * dtypeBytes(this.o.dtype);
    const pack = this.wire.shouldPack(raw, (this.takes(route[0].peer) & CODEC_PLANES) !== 0, this.outbox.bytesPerMs(route[0].peer));
    const t0 = pack ? performance.now() : 0;
    const msg = encodeStep(frame, pack);
    this.wire.sent(raw, msg.length, st.T, pack ? performance.now() - t0 : undefined, (msg[3] & FLAG_PACKED) !== 0);
    const onAbort = () => this.settle(req, undefined, new LayerswarmError("ABORTED", "request aborted"));
    signal?.addEventListener("abort", onAbort, { once: true });
    return new Promise<Float32Array>((resolve, reject) => {
      const timer = setTimeout(() => void this.timeout(req), this.o.stepTimeoutMs);
      this.pending.set(req, { resolve, reject, peers, last: peers[peers.length - 1], sid: ws.sid, owner: ws.owner, timer, sentAt: Date.now(), pos: st.pos, T: st.T, stage: 0, sent: st.hidden, dtype: this.o.dtype });
      this.outbox.send(route[0].peer, route[0].addrs, msg).catch((e) =>
        this.settle(req, undefined, new RouteLost([route[0].peer], `cannot reach ${route[0].peer.slice(-8)}: ${(e as Error).message}`)));
    }).finally(() => signal?.removeEventListener("abort", onAbort)); // one listener per step must not pile up
  }

  private settle(req: number, value: Float32Array | undefined, err?: Error): Pending | undefined {
    const p = this.pending.get(req);
    if (!p) return undefined;
    this.pending.delete(req);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value!);
    return p;
  }

  // A node of these routes is gone: their steps fail over.
  lose(peer: string, reason: string): void {
    for (const [req, p] of this.pending) if (p.peers.includes(peer)) this.settle(req, undefined, new RouteLost([peer], `node ${peer.slice(-8)} ${reason}`));
  }

  // How a peer is reached now (direct, relayed, hole-punched), if connected: for views, not steps.
  reachOf(peer: string): Reach | undefined {
    return this.t.reach?.(peer);
  }

  // The connection to a node broke and was made again (a relay cut a circuit
  // at its limits): steps in flight through it are lost, the node is not.
  // They fail now, their sessions replay on the same route.
  interrupt(peer: string, reason: string): void {
    for (const [req, p] of this.pending) if (p.peers.includes(peer)) this.settle(req, undefined, new RouteLost([], `node ${peer.slice(-8)} ${reason}`));
  }

  // A session moved to a new route: its steps still in flight on the old one
  // will never be answered there (the old stages drop it); fail them now so
  // they are sent again, instead of waiting out their timeout.
  abandon(sid: string, reason: string): void {
    for (const [req, p] of this.pending) if (p.sid === sid) this.settle(req, undefined, new RouteLost([], reason, "UNKNOWN_SESSION"));
  }

  progress(from: string, reqs: number[]): void {
    for (const r of reqs) {
      const p = this.pending.get(r);
      if (p && p.peers.includes(from)) p.stage = Math.max(p.stage, p.peers.lastIndexOf(from) + 1);
    }
  }

  // A step took too long: find which stage of its route stopped answering.
  // Stages that answer no more are gone; if all still answer, the stage the
  // step was last reported at (or the first) is the session's suspect: a
  // node that takes steps and never returns them is routed around.
  private async timeout(req: number): Promise<void> {
    const p = this.pending.get(req);
    if (!p) return;
    this.pending.delete(req);
    this.stats.timeouts++;
    const dead = (await Promise.all([...new Set(p.peers)].map((peer) => {
      const n = this.dir.get(peer);
      return request(this.t, peer, n?.record.addrs ?? [], { type: "info" }, Math.min(2000, this.o.stepTimeoutMs)).then(
        () => undefined,
        (e) => ((e as LayerswarmError).code === "UNREACHABLE" || (e as LayerswarmError).code === "ABORTED" ? peer : undefined), // BUSY and the like: alive
      );
    }))).filter((x): x is string => !!x);
    const stuck = p.peers[Math.min(p.stage, p.peers.length - 1)];
    p.reject(new RouteLost(dead, `step timed out after ${this.o.stepTimeoutMs} ms${dead.length ? "" : ` (every node still answers; suspected: ${stuck.slice(-8)})`}`, "UNREACHABLE", dead.length ? [] : [stuck]));
  }

  private async serveResults(ch: Channel): Promise<void> {
    const from = ch.remotePeer;
    try {
      for await (const m of ch.messages()) {
        const type = frameType(m);
        if (type === FrameType.RESULT) this.onResult(decodeResultHead(m, this.limits), from);
        else if (type === FrameType.ERROR) this.onError(decodeError(m), from);
        else if (type === FrameType.STEP) this.stats.strayFrames++; // gateways run no remote steps
        else throw new LayerswarmError("BAD_MESSAGE", `unexpected frame type ${m[0]}`);
      }
    } catch (e) {
      if ((e as LayerswarmError).code === "BAD_MESSAGE") {
        this.log("warn", "bad frames, peer banned", { peer: from, error: (e as Error).message });
        this.dir.ban(from, (e as Error).message);
        void this.t.hangUp(from);
      }
      ch.abort(e as Error);
    }
  }

  // The values are unpacked only once the frame is matched to its request and sender.
  private onResult(h: ResultHead, from: string): void {
    const p = this.pending.get(h.req);
    // only the last stage of this request's route may answer it (late results after a reroute land here too)
    if (!p || p.sid !== h.session || p.last !== from || h.pos !== p.pos || (h.T !== p.T && h.T !== 1)) {
      this.stats.strayFrames++;
      return;
    }
    const r = resultOf(h);
    this.stats.resultBytes += r.wireBytes ?? 0;
    this.stats.resultRows += r.T;
    const bad = firstNonFinite(r.hidden);
    if (bad >= 0) return void this.settle(r.req, undefined, new RouteLost([], `node ${from.slice(-8)} returned a value that is not finite (${bad})`, "BAD_ARGUMENT", [from]));
    const broken = this.checkReceipts?.(p.sid, p.pos, p.T, wireRound(p.sent, p.dtype), r.ext.filter((x) => x.kind === Ext.RECEIPT).map((x) => x.data), r.hidden);
    if (broken) return void this.settle(r.req, undefined, new RouteLost([], `node ${broken.peer.slice(-8)}: ${broken.reason}`, "BAD_RECEIPT", [broken.peer]));
    for (const peer of p.peers) {
      const n = this.dir.get(peer);
      if (n) {
        n.stepMs = Date.now() - p.sentAt;
        n.steps = (n.steps ?? 0) + 1;
      }
    }
    this.settle(r.req, r.hidden);
  }

  private onError(e: ErrorFrame, from: string): void {
    if (e.req === 0) {
      // a node of the route evicted a session of ours: its steps in flight there are lost
      if ([...this.pending.values()].some((p) => p.sid === e.session && p.peers.includes(from))) this.abandon(e.session, `node ${from.slice(-8)}: ${e.message}`);
      return this.onEvicted(e.session, from);
    }
    const p = this.pending.get(e.req);
    if (!p || p.sid !== e.session || !p.peers.includes(from)) {
      this.stats.strayFrames++;
      return;
    }
    const msg = `node ${from.slice(-8)}: ${e.message}`;
    // a stage refused its sender's frame, whose rows were not what the sender
    // signed: the sender is routed around (the dispute it sent decides the rest)
    if (e.code === "BAD_RECEIPT") {
      const accused = p.peers[p.peers.indexOf(from) - 1];
      return void this.settle(e.req, undefined, new RouteLost([], msg, e.code, [], from, accused ? [accused] : [from]));
    }
    // The last stage's word is taken for the step (context overflow, memory);
    // a stage before it that cannot serve is routed around instead, so an
    // insider's injected errors only ever cost it its own place on the route.
    // a stage before the last that lost the session (evicted, restarted) is not to blame at first; one that erred is
    // one that says its link to the next stage broke (UNREACHABLE) is not blamed: the step is replayed on the same route
    const sessionGone = e.code === "UNKNOWN_SESSION" || e.code === "BUSY" || e.code === "UNREACHABLE";
    if (from !== p.last) this.settle(e.req, undefined, new RouteLost([], msg, e.code, sessionGone ? [] : [from], from));
    else if (RETRYABLE.has(e.code)) this.settle(e.req, undefined, new RouteLost([], msg, e.code, e.code === "FORBIDDEN" || e.code === "BAD_RANGE" ? [from] : [], from));
    else this.settle(e.req, undefined, new LayerswarmError(e.code, msg));
  }

  // Where every step in flight is (the dashboard's pipeline view).
  inflight(): { owner: string; pos: number; T: number; stage: number; peers: number; ms: number }[] {
    return [...this.pending.values()].map((p) => ({ owner: p.owner, pos: p.pos, T: p.T, stage: Math.min(p.stage, p.peers.length), peers: p.peers.length, ms: Date.now() - p.sentAt }));
  }

  stop(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
  }
}

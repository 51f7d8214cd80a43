// Verification of untrusted nodes, on the gateway (docs/security.md):
//
//   - every result's receipts are checked as they arrive (ledger.ts): a break
//     in the chain of signed hashes sends the step elsewhere, and where the
//     break itself proves a stage lied (it signed rows other than it sent or
//     received) that stage is banned at once;
//   - audit mode (the default): when a session ends, it is audited (audit.ts)
//     with probability `auditRate`, and always while any of its nodes is new
//     here (fewer than `newIdentitySessions` clean audits: identities cost
//     nothing, so a banned cheat that comes back under a new key is audited
//     from its first session);
//   - strict mode (per gateway or per request): every step runs on two routes
//     disjoint by peer and by address group, and its rows are released only
//     when both agree bit for bit; when they differ, both routes are audited
//     by a third set of nodes, judged by this gateway's own recomputation, the
//     liar is banned and the step's answer is the honest route's;
//   - a dispute (a stage refusing a frame whose rows its sender's receipt does
//     not match sends the receipt here) is audited at once.
//
// Bans are decided only by this gateway's own recomputation or by signed
// statements that contradict what it saw itself: with exact kernels, an
// honest node is never banned.

import { randomInt } from "node:crypto";
import { LayerswarmError } from "../../errors.js";
import { RateLimiter } from "../limiter.js";
import { LayerRange } from "../../model/config.js";
import { SliceRuntime, Step } from "../../model/runtime.js";
import { loadSlice } from "../../model/model.js";
import { GGUFFile } from "../../format/gguf.js";
import { hashTensor, layerHash } from "../../format/manifest.js";
import { addressGroup } from "../addrgroup.js";
import { Logger } from "../log.js";
import { FraudProof, Receipt, checkFraudProof, hashEqual, openReceipt, rowHash, weightsDigest } from "../protocol/receipt.js";
import { Accusation, MAX_PROOF_BYTES, accusationId, decodeProof, encodeProof, openAccusation, signAccusation } from "../protocol/proof.js";
import { request } from "../rpc.js";
import { DType, wireRound } from "../protocol/frames.js";
import { AuditDeps, AuditOutcome, auditEpoch } from "./audit.js";
import { ChainBreak, EpochLedger, MAX_DISPUTED_PER_HOP, ReceiptLedger } from "./ledger.js";
import { openRanges } from "./directory.js";
import type { Gateway } from "./index.js";

export type VerifyMode = "off" | "audit" | "strict";

export function parseVerifyMode(s: string): VerifyMode {
  if (s === "off" || s === "audit" || s === "strict") return s;
  throw new LayerswarmError("BAD_ARGUMENT", `--verify ${s}: off, audit (the default: some sessions re-computed by other nodes) or strict (every step on two disjoint routes)`);
}

export interface VerifyOptions {
  mode?: VerifyMode; // default audit
  auditRate?: number; // the fraction of sessions audited in audit mode (default 0.05)
  newIdentitySessions?: number; // sessions audited in full while a node is new here (default 3)
}

export interface BanRecord {
  peer: string;
  reason: string;
  at: number;
  proven: boolean; // a fraud proof anyone can check by recomputation (else: this gateway's own observation)
  proof?: FraudProof;
  steps: number; // steps this gateway had routed through it when it was banned
  by: "audit" | "strict" | "dispute" | "receipts" | "proof"; // "proof": another gateway's fraud proof, checked here
  published?: boolean; // a proof reproduced on synthetic input was sent on to the swarm
}

const MAX_QUEUED_AUDITS = 64;
interface QueuedAudit {
  run: () => Promise<void>;
  key: string;
}
const BAN_FOR_GOOD_MS = 365 * 24 * 3600_000;
const isLoopback = (ip: string) => ip.startsWith("127.") || ip === "::1";

export class Verifier {
  readonly ledger: ReceiptLedger;
  readonly bans = new Map<string, BanRecord>();
  readonly outcomes: (AuditOutcome & { session: string; at: number; by: BanRecord["by"] })[] = []; // the last 64
  mode: VerifyMode; // may change while running (takes effect for new steps and sessions)
  auditRate: number;
  private newSessions: number;
  private clean = new Map<string, number>(); // peer -> sessions audited clean
  // audits of ended sessions, and the rest (disputes, broken chains, other
  // gateways' proofs): apart, so that a flood of the second kind cannot push
  // the first out
  private queues: { sessions: QueuedAudit[]; urgent: QueuedAudit[] } = { sessions: [], urgent: [] };
  private turn = 0;
  private proofsIn = new RateLimiter(8, 1 / 10); // proofs checked, from everyone together
  private weightsCache = new Map<string, Uint8Array>();
  private running = false;
  private local?: { start: number; end: number; rt: SliceRuntime };
  private localSeq = 0;
  private scratchSeq = 0;
  private seenAccusations = new Set<string>();
  readonly ignoredAccusers = new Set<string>(); // gateways that sent a proof that did not hold
  stats = {
    audits: 0, clean: 0, bans: 0, unverified: 0, sessionsSkipped: 0, auditsDropped: 0, strictSteps: 0, disagreements: 0, chainBreaks: 0, disputes: 0,
    proofsPublished: 0, proofsReceived: 0, proofsForged: 0,
  };

  constructor(private gw: Gateway, private log: Logger, o: VerifyOptions = {}) {
    this.mode = o.mode ?? "audit";
    this.auditRate = o.auditRate ?? 0.05;
    this.newSessions = o.newIdentitySessions ?? 3;
    if (!(this.auditRate >= 0 && this.auditRate <= 1)) throw new LayerswarmError("BAD_ARGUMENT", `the audit rate ${o.auditRate} is not a fraction between 0 and 1`);
    this.ledger = new ReceiptLedger({ weights: (start, end) => this.weightsOf(start, end), dtype: () => gw.pipe.dtype });
  }

  // The digest a receipt for layers [start, end) must carry: of this gateway's own hashes of them.
  weightsOf(start: number, end: number): Uint8Array {
    const key = `${start}:${end}`;
    let w = this.weightsCache.get(key);
    if (!w) {
      w = weightsDigest(this.gw.content.layers.slice(start, end));
      if (this.weightsCache.size > 4096) this.weightsCache.clear();
      this.weightsCache.set(key, w);
    }
    return w;
  }

  // ------------------------------------------------------------ bans

  banned(peer: string): boolean {
    return this.bans.has(peer);
  }

  // Routed around at once; with a proof, the proof is reproduced on synthetic
  // input and published before the node's connections are refused too.
  ban(peer: string, reason: string, by: BanRecord["by"], proof?: FraudProof, accusation?: Accusation): void {
    if (this.bans.has(peer)) return;
    const n = this.gw.dir.get(peer);
    const rec: BanRecord = { peer, reason, at: Date.now(), proven: !!proof, proof, steps: n?.steps ?? 0, by };
    this.bans.set(peer, rec);
    this.stats.bans++;
    this.log("warn", "node banned", { peer, reason, proven: rec.proven, steps: rec.steps });
    this.gw.dir.banForGood(peer, reason, false);
    this.gw.pipe.lose(peer, `was banned: ${reason}`);
    this.gw.sessions.evacuate(peer);
    this.gw.dir.emit({ type: "node-banned", peer, reason, proven: rec.proven, steps: rec.steps });
    if (accusation) {
      // someone else's proof, checked here: passed on as it came
      this.gossip(accusation);
      this.gw.dir.gate.ban(peer, undefined, reason, BAN_FOR_GOOD_MS);
    } else if (proof) {
      void this.publish(peer, proof)
        .then((ok) => {
          rec.published = ok;
          rec.proof = undefined; // it holds a session's rows: kept no longer than needed
        })
        .catch((e) => this.log("warn", "could not publish a fraud proof", { peer, error: (e as Error).message }))
        .finally(() => this.gw.dir.gate.ban(peer, undefined, reason, BAN_FOR_GOOD_MS));
    } else this.gw.dir.gate.ban(peer, undefined, reason, BAN_FOR_GOOD_MS);
  }

  // ------------------------------------------------------------ fraud proofs between gateways

  // Proofs hold hidden rows, which invert to text: only a proof reproduced on
  // random tokens leaves this gateway. The cheat is asked again, on its layers
  // alone, a few small steps at a time (a cheat that cheats only now and then
  // is caught by one of them); a cheat that answers synthetic input honestly
  // stays banned here and nowhere else.
  private async publish(peer: string, real: FraudProof): Promise<boolean> {
    const gw = this.gw, dim = gw.model.cfg.dim, r0 = real.receipts[0];
    const T = Math.max(1, Math.min(16, Math.floor((MAX_PROOF_BYTES * 0.6) / (dim * 4))));
    for (let attempt = 0; attempt < 3; attempt++) {
      const tokens = Array.from({ length: T }, () => Math.floor(Math.random() * gw.model.cfg.vocabSize));
      const input = gw.model.embedder.embed(tokens);
      let receipts: Receipt[];
      try {
        receipts = (await this.computeOn(peer, r0.start, r0.end, input, T, AbortSignal.timeout(10_000), 2)).receipts;
      } catch {
        return false; // it no longer answers: nothing to publish
      }
      const local = wireRound(await this.computeLocal(r0.start, r0.end, input, T), gw.pipe.dtype);
      const claims = new Map<number, { output: Uint8Array }>();
      for (const r of receipts) for (const e of r.entries) claims.set(e.pos, e);
      let bad = -1;
      for (let p = 0; p < T && bad < 0; p++) if (claims.has(p) && !hashEqual(claims.get(p)!.output, rowHash(p, local.subarray(p * dim, (p + 1) * dim)))) bad = p;
      if (bad < 0) continue;
      const proof: FraudProof = { receipts, dim, input: input.slice(0, (bad + 1) * dim) };
      const v = await checkFraudProof(proof, (s, e, x, n) => this.computeLocal(s, e, x, n));
      if (!v.proven) continue;
      const acc = await signAccusation(encodeProof(proof), gw.identity);
      this.seenAccusations.add(acc.id);
      this.gossip(acc);
      this.stats.proofsPublished++;
      this.log("info", "fraud proof published", { peer, rows: bad + 1 });
      return true;
    }
    return false;
  }

  private gossip(acc: Accusation, except?: string): void {
    const msg = { type: "fraud-proof" as const, accusation: Buffer.from(acc.bytes).toString("base64") };
    for (const n of this.gw.dir.serving())
      if (n.record.peer !== except && !this.banned(n.record.peer)) void request(this.gw.transport, n.record.peer, n.record.addrs, msg, 5000).catch(() => {});
  }

  // Another gateway's accusation, passed on by `from`: checked here by
  // recomputation before anything is done about it. One that does not hold
  // gets its accuser ignored from then on; nobody is banned on its word.
  async receiveProof(from: string, bytes: Uint8Array): Promise<void> {
    const id = accusationId(bytes);
    if (this.seenAccusations.has(id)) return;
    this.seenAccusations.add(id);
    if (this.seenAccusations.size > 4096) this.seenAccusations.delete(this.seenAccusations.values().next().value!);
    const acc = await openAccusation(bytes);
    if (acc.accuser === this.gw.identity.peerId || this.ignoredAccusers.has(acc.accuser)) return;
    if (!this.proofsIn.take("all")) throw new LayerswarmError("BUSY", "this gateway checks a few fraud proofs a minute; pass it on later");
    this.stats.proofsReceived++;
    let proof: FraudProof;
    try {
      proof = await decodeProof(acc.proof, this.gw.model.cfg.dim);
    } catch (e) {
      if ((e as LayerswarmError).code === "BAD_ARGUMENT") return; // about another model
      return this.forged(acc.accuser, from, (e as Error).message);
    }
    const r0 = proof.receipts[0];
    const layers = this.gw.content.layers;
    if (r0.end > layers.length || !hashEqual(r0.weights, this.weightsOf(r0.start, r0.end))) return; // another model's layers: not ours to judge
    // only about a node this gateway knows, for layers it says it serves: checking costs a recomputation of them
    const known = this.gw.dir.get(r0.signer);
    if (!known || !known.record.ranges.some((x) => x.start <= r0.start && r0.end <= x.end)) return;
    this.enqueue(`proof:${id}`, async () => {
      const v = await checkFraudProof(proof, (s, e, x, n) => this.computeLocal(s, e, x, n));
      if (!v.proven) return this.forged(acc.accuser, from, v.reason);
      if (this.banned(v.signer)) return;
      this.ban(v.signer, `a fraud proof from gateway ${acc.accuser.slice(-8)}, checked here: wrong output for layers [${v.layers.start}, ${v.layers.end}) at position ${v.pos}`, "proof", proof, acc);
    });
  }

  private forged(accuser: string, from: string, why: string): void {
    this.stats.proofsForged++;
    this.ignoredAccusers.add(accuser);
    if (this.ignoredAccusers.size > 10_000) this.ignoredAccusers.delete(this.ignoredAccusers.values().next().value!);
    this.log("warn", "a fraud proof that does not hold: its accuser is ignored from now on", { accuser, from, why });
  }

  // ------------------------------------------------------------ audit plumbing

  private groupOf(peer: string): string {
    const ip = this.gw.dir.get(peer)?.ip ?? "";
    return !ip || isLoopback(ip) ? `peer:${peer}` : addressGroup(ip);
  }

  // Peers that share a peer id or an address group with any of these.
  related(peers: Iterable<string>): Set<string> {
    const groups = new Set([...peers].map((p) => this.groupOf(p)));
    const out = new Set(peers);
    for (const n of this.gw.dir.nodes.values()) if (groups.has(this.groupOf(n.record.peer))) out.add(n.record.peer);
    return out;
  }

  private deps(by: BanRecord["by"]): AuditDeps {
    const gw = this.gw, dim = gw.model.cfg.dim;
    return {
      dim,
      // rows as the nodes decode them: with f16 or bf16 on the wire, every boundary is rounded
      inputRows: (tokens) => wireRound(gw.remoteInput(tokens), gw.pipe.dtype),
      computeOn: (peer, start, end, input, T, signal) => this.computeOn(peer, start, end, input, T, signal),
      computeLocal: async (start, end, input, T) => wireRound(await this.computeLocal(start, end, input, T), gw.pipe.dtype),
      auditors: (start, end, exclude) => {
        const ex = this.related(exclude);
        return gw.dir.serving()
          .filter((n) => !ex.has(n.record.peer) && !this.banned(n.record.peer) && gw.dir.failures(n) === 0 && openRanges(n).some((r) => r.start <= start && end <= r.end))
          .map((n) => n.record.peer)
          .map((p) => ({ p, r: randomInt(2 ** 30) }))
          .sort((a, b) => a.r - b.r) // at random: a node cannot make itself every audit's auditor (by pricing itself idle, say)
          .map((x) => x.p);
      },
      ban: (peer, reason, proof) => this.ban(peer, reason, by, proof),
    };
  }

  // Layers [start, end) on one node over T rows from position 0, in chunks, on a scratch session.
  private async computeOn(peer: string, start: number, end: number, input: Float32Array, T: number, signal?: AbortSignal, chunk = this.gw.pipe.limits.maxRows): Promise<{ out: Float32Array; receipts: Receipt[] }> {
    const gw = this.gw, dim = gw.model.cfg.dim;
    const owner = `audit-${++this.scratchSeq}`;
    const route = [{ id: peer, start, end }];
    const ws = await gw.sessions.wireFor(owner, route);
    const e = this.ledger.open(owner, ws.sid, [{ peer, start, end }]);
    const addrs = gw.dir.get(peer)?.record.addrs ?? [];
    try {
      const parts: Promise<Float32Array>[] = [];
      for (let p = 0; p < T; p += chunk) {
        const n = Math.min(chunk, T - p);
        parts.push(gw.pipe.send(ws, [{ peer, addrs }], { session: owner, pos: p, T: n, hidden: input.subarray(p * dim, (p + n) * dim) }, signal));
      }
      const outs = await Promise.all(parts);
      const out = new Float32Array(T * dim);
      let o = 0;
      for (const x of outs) {
        out.set(x, o);
        o += x.length;
      }
      return { out, receipts: [...e.hops[0]] };
    } finally {
      this.ledger.forget(owner);
      gw.sessions.dropWire(peer, ws.sid);
    }
  }

  // The judge: this gateway's own copy of layers [start, end) (one range kept
  // loaded at a time), in chunks of 64 rows with the event loop served between
  // them (a long session's recomputation must not stall every other session).
  private async computeLocal(start: number, end: number, input: Float32Array, T: number): Promise<Float32Array> {
    const gw = this.gw, dim = gw.model.cfg.dim;
    if (!this.local || this.local.start !== start || this.local.end !== end) {
      this.local = undefined;
      // the judge's weights must be the model's: fetched where the file is a
      // URL's sparse copy (range requests), and checked against the manifest
      // (a judge with other or missing weights would find everyone wrong)
      await gw.layerSource?.({ start, end });
      checkLayerBytes(gw.model.file, gw.content.layers, start, end);
      this.local = { start, end, rt: loadSlice(gw.model.file, gw.model.cfg, { start, end } as LayerRange, gw.model.kernels, { maxSessions: 4, maxContext: gw.model.cfg.contextLength }) };
    }
    const rt = this.local.rt, session = `judge-${++this.localSeq}`;
    const out = new Float32Array(T * dim);
    try {
      for (let p = 0; p < T; p += 64) {
        const n = Math.min(64, T - p);
        out.set(rt.forward([{ session, pos: p, T: n, hidden: input.subarray(p * dim, (p + n) * dim) }])[0], p * dim);
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      rt.dropSession(session);
    }
    return out;
  }

  private enqueue(key: string, run: () => Promise<void>, kind: keyof Verifier["queues"] = "urgent"): void {
    const q = this.queues[kind];
    if (q.some((x) => x.key === key)) return;
    if (q.length >= MAX_QUEUED_AUDITS) {
      q.shift();
      this.stats.auditsDropped++;
    }
    q.push({ key, run });
    void this.drain();
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const { sessions, urgent } = this.queues;
        if (!sessions.length && !urgent.length) break;
        const q = (this.turn++ % 2 === 0 && sessions.length) || !urgent.length ? sessions.shift()! : urgent.shift()!; // taking turns
        try {
          await q.run();
        } catch (e) {
          this.log("warn", "audit failed", { error: (e as Error).message });
        }
      }
    } finally {
      this.running = false;
    }
  }

  // Resolves when every queued audit has run (tests, bench).
  async idle(): Promise<void> {
    while (this.running || this.queues.sessions.length || this.queues.urgent.length) await new Promise((r) => setTimeout(r, 5));
  }

  private record(session: string, o: AuditOutcome, by: BanRecord["by"]): void {
    this.stats.audits++;
    if (o.verdict === "clean") this.stats.clean++;
    else if (o.verdict === "unverified") this.stats.unverified++;
    this.outcomes.push({ ...o, session, at: Date.now(), by });
    if (this.outcomes.length > 64) this.outcomes.shift();
    this.gw.dir.emit({ type: "audit", session, verdict: o.verdict, ...(o.verdict === "banned" ? { peer: o.peer } : {}) });
  }

  async auditEpochs(session: string, epochs: EpochLedger[], tokens: number[], by: BanRecord["by"], exclude: ReadonlySet<string> = new Set(), signal?: AbortSignal): Promise<AuditOutcome[]> {
    const out: AuditOutcome[] = [];
    for (const e of epochs) {
      if (e.route.some((h) => this.banned(h.peer)) && by === "audit") continue; // already decided
      const o = await auditEpoch(e, tokens, this.deps(by), exclude, signal);
      this.record(session, o, by);
      out.push(o);
      if (o.verdict === "clean")
        for (const h of e.route) {
          this.clean.set(h.peer, (this.clean.get(h.peer) ?? 0) + 1);
          if (this.clean.size > 10_000) this.clean.delete(this.clean.keys().next().value!); // forgotten: audited as new again
        }
      if (o.verdict === "banned") break;
    }
    return out;
  }

  // ------------------------------------------------------------ events from the gateway

  // A session ended: audit it (sometimes, or always while its nodes are new).
  sessionDone(session: string, tokens: number[]): void {
    const epochs = this.ledger.epochs(session).filter((e) => e.steps > 0);
    if (this.mode === "off" || epochs.length === 0) return this.ledger.forget(session);
    const peers = new Set(epochs.flatMap((e) => e.route.map((h) => h.peer)));
    const fresh = [...peers].some((p) => (this.clean.get(p) ?? 0) < this.newSessions);
    if (!fresh && Math.random() >= this.auditRate) {
      this.stats.sessionsSkipped++;
      return this.ledger.forget(session);
    }
    this.enqueue(`done:${session}`, async () => {
      try {
        await this.auditEpochs(session, epochs, tokens, "audit");
      } finally {
        this.ledger.forget(session);
      }
    }, "sessions");
  }

  // The receipts of a result did not chain (ledger.check): the step goes
  // elsewhere; where the break proves who lied (the receipts it rests on
  // verify), that stage is banned.
  async chainBreak(b: ChainBreak, tokens: () => number[] | undefined): Promise<void> {
    this.stats.chainBreaks++;
    this.log("warn", "receipts do not chain", { peer: b.peer, hop: b.hop, reason: b.reason });
    if (this.mode === "off") return;
    if (b.audit) {
      const e = this.ledger.get(b.sid), toks = tokens();
      if (e && toks) this.enqueue(`break:${b.sid}`, async () => void (await this.auditEpochs(e.owner, [e], toks, "receipts")));
    }
    if (b.evidence.length === 0) return;
    try {
      await Promise.all(b.evidence.map((x) => openReceipt(x)));
    } catch {
      return; // a receipt in the chain is forged: by a later stage, not certainly by the blamed one
    }
    this.ban(b.peer, b.reason, "receipts");
  }

  // ------------------------------------------------------------ strict mode

  // One step on two routes disjoint by peer and address group; its rows only
  // when both agree bit for bit. On disagreement both routes are audited by
  // nodes of neither (the third computation), the gateway judges, the liar is
  // banned, and the honest route's rows are the answer.
  async strictStep(st: Step, input: Float32Array, signal?: AbortSignal, depth = 0): Promise<Float32Array> {
    const S = this.gw.sessions, twin = `${st.session}\u0000twin`;
    const routeOf = (id: string) => S.all.get(id)?.route.map((r) => r.id) ?? [];
    // f16 or bf16 on the wire round at every stage boundary: two routes agree only if they round at the same layers
    const rounded = this.gw.pipe.dtype !== DType.F32;
    const cutsOf = (id: string) => (rounded ? S.all.get(id)?.route.slice(1).map((r) => r.start) : undefined);
    const a = await S.open(st.session, signal, st.T, () => this.related(routeOf(twin)), () => cutsOf(twin));
    const b = await S.open(twin, signal, st.T, () => this.related(routeOf(st.session)), () => cutsOf(st.session)).catch((e) => {
      if ((e as LayerswarmError).code !== "NO_ROUTE") throw e;
      throw new LayerswarmError("NO_ROUTE", `strict verification needs a second route that shares no node and no address group with the first${rounded ? ", with the same stage boundaries (the wire rounds at each)" : ""}: ${(e as Error).message}`);
    });
    if (rounded && cutsOf(st.session)?.join() !== cutsOf(twin)?.join())
      throw new LayerswarmError("NO_ROUTE", "strict verification over a rounded wire (f16, bf16) needs two routes with the same stage boundaries; the swarm has none: use --wire f32, or hold the layers alike on two sets of nodes");
    const shared = [...this.related(a.route.map((r) => r.id))].filter((p) => b.route.some((r) => r.id === p));
    if (shared.length)
      throw new LayerswarmError("NO_ROUTE", `strict verification needs two routes that share no node and no address group; the swarm has no second route without ${shared.map((p) => p.slice(-8)).join(", ")}`);
    let [ra, rb] = await Promise.all([S.step(st, input, signal), S.step({ ...st, session: twin }, input, signal)]);
    // both may have rerouted during the step, each away from the other's old
    // route: the routes that answered must still share nothing, or the twin
    // computes the step again elsewhere (replayed) before anything is released
    for (let again = 0; ; again++) {
      const A = S.all.get(st.session), B = S.all.get(twin);
      if (!A || !B) throw new LayerswarmError("ABORTED", "the session was dropped");
      const overlap = [...this.related(A.route.map((r) => r.id))].filter((p) => B.route.some((r) => r.id === p));
      if (overlap.length === 0) break;
      if (again >= 2) throw new LayerswarmError("NO_ROUTE", `strict verification: after rerouting, the two routes share ${overlap.map((p) => p.slice(-8)).join(", ")} and no disjoint route was found; no token was released`);
      B.stale = true;
      rb = await S.step({ ...st, session: twin }, input, signal);
    }
    this.stats.strictSteps++;
    if (sameBits(ra, rb)) return ra;
    this.stats.disagreements++;
    this.log("warn", "strict: the two routes disagree", { pos: st.pos, rows: st.T });
    const A = S.all.get(st.session)!, B = S.all.get(twin)!;
    const tokens = S.tokens(st.session, st.pos + st.T);
    if (!tokens) throw new LayerswarmError("INTERNAL", "strict: the two routes disagree and the gateway does not know the session's tokens to audit them");
    const exclude = new Set([...A.route, ...B.route].map((r) => r.id));
    const audit = async (s: typeof A) => {
      const e = this.ledger.get(s.wire.sid);
      return e ? (await this.auditEpochs(st.session, [e], tokens, "strict", exclude, signal))[0] : undefined;
    };
    const oa = await audit(A), ob = await audit(B);
    const bad = (o?: AuditOutcome) => o?.verdict === "banned", good = (o?: AuditOutcome) => o?.verdict === "clean";
    if (bad(oa) && good(ob)) return rb;
    if (bad(ob) && good(oa)) return ra;
    if (bad(oa) && bad(ob) && depth < 2) return this.strictStep(st, input, signal, depth + 1); // both moved: again on two new routes (replayed)
    throw new LayerswarmError("VERIFY_FAILED", `strict: the two routes gave different rows at positions ${st.pos}..${st.pos + st.T - 1} and the audits could not tell which is right (${oa?.verdict ?? "none"}, ${ob?.verdict ?? "none"}); no token was released`);
  }

  // A stage refused a frame whose rows its sender's receipt does not match, and sent that receipt.
  async dispute(from: string, session: string, hop: number, receiptBytes: Uint8Array, tokens: () => number[] | undefined): Promise<void> {
    const e = this.ledger.get(session);
    if (!e) throw new LayerswarmError("UNKNOWN_SESSION", "no such session here");
    if (hop + 1 >= e.route.length || e.route[hop + 1].peer !== from) throw new LayerswarmError("FORBIDDEN", `a dispute about hop ${hop} comes from hop ${hop + 1} of the route`);
    const r = await openReceipt(receiptBytes);
    const h = e.route[hop];
    if (r.signer !== h.peer || r.session !== session || r.hop !== hop || r.start !== h.start || r.end !== h.end)
      throw new LayerswarmError("BAD_ARGUMENT", `the disputed receipt is not ${h.peer.slice(-8)}'s for this session and hop`);
    this.stats.disputes++;
    if (this.mode === "off") return;
    // the same number twice: the same receipt again (nothing new), or two
    // different bodies signed for one step (equivocation, proven by the two)
    const same = [...e.hops[hop], ...e.disputed[hop]].find((x) => x.seq === r.seq);
    if (same) {
      if (!hashEqual(same.body, r.body) && (await openReceipt(same.bytes).then(() => true, () => false)))
        this.ban(h.peer, `signed two different receipts numbered ${r.seq} for one step`, "dispute");
      return;
    }
    if (e.disputed[hop].length >= MAX_DISPUTED_PER_HOP) return;
    e.disputed[hop].push(r);
    const toks = tokens(); // now: the session may end before the audit runs
    if (!toks) return;
    this.enqueue(`dispute:${session}:${hop}`, async () => {
      await this.auditEpochs(e.owner, [e], toks, "dispute");
    });
  }
}

const sameBits = (a: Float32Array, b: Float32Array): boolean =>
  a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

// Refuses layers [start, end) of `f` whose bytes are not the model's (BAD_FILE,
// naming the layer): what this gateway computes with itself, to judge nodes or
// to run its own first and last layers, must be exactly the manifest's weights.
export function checkLayerBytes(f: GGUFFile, layers: readonly string[], start: number, end: number): void {
  for (let i = start; i < end; i++) {
    const got = layerHash(f, i, (n) => hashTensor(f, n));
    if (got !== layers[i])
      throw new LayerswarmError("BAD_FILE", `${f.path}: layer ${i}'s bytes hash to ${got.slice(0, 16)}…, the model's manifest says ${String(layers[i]).slice(0, 16)}… (not fetched, or another file)`);
  }
}

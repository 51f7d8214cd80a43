// Audits by exact recomputation. A session's route is checked stage by stage:
// the rows at each stage boundary are computed again by other nodes holding
// the same layers (one batched prefill of the whole session per stage, cut at
// the same boundaries), and each stage's signed receipts are compared with
// them, position by position, exactly. Our kernels give the same bits for a
// row alone, batched or in a prefill, so an honest stage always matches and
// nobody is accused by rounding.
//
// The first stage whose signed outputs differ is accused, and the accusation
// is decided by this gateway itself, not by the auditor's word: it checks a
// fraud proof (the accused's own signed receipts and the input rows it
// received, which its receipts' input hashes confirm) by running those layers
// on its own copy of the weights (checkFraudProof; the weights are read from
// the model's file or URL, one stage's layers at a time). Proven: the accused
// is banned with the proof. Not proven: the auditor computed wrong, and is
// checked the same way. A stage no other node holds is computed by the
// gateway itself.

import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { FraudProof, ProofVerdict, Receipt, ReceiptEntry, RecomputeLayers, checkFraudProof, claimedRows, hashEqual, openReceipt, rowHash } from "../protocol/receipt.js";
import { EpochLedger } from "./ledger.js";

export interface AuditDeps {
  dim: number;
  // the route's input for positions 0 .. tokens.length-1 (embedding, then the gateway's own first layers)
  inputRows(tokens: number[]): Float32Array;
  // layers [start, end) on one node, over T rows from position 0 as a prefill: its output rows and its receipts
  computeOn(peer: string, start: number, end: number, input: Float32Array, T: number, signal?: AbortSignal): Promise<{ out: Float32Array; receipts: Receipt[] }>;
  // the same on this gateway's own copy of the weights: the judge
  computeLocal: RecomputeLayers;
  // nodes that could audit layers [start, end), best first, none of `exclude` (nor sharing an address group with them)
  auditors(start: number, end: number, exclude: ReadonlySet<string>): string[];
  // a proven cheat: ban it (proof: what anyone can check); a stage whose word this gateway itself disproved: ban without a proof to pass on
  ban(peer: string, reason: string, proof?: FraudProof): void;
}

export type AuditOutcome =
  | { verdict: "clean"; positions: number; stages: number; auditors: string[] }
  | { verdict: "banned"; peer: string; hop: number; pos: number; reason: string; proven: boolean }
  | { verdict: "unverified"; reason: string };

// Receipts whose signatures verify; a receipt that does not verify was forged
// by whoever forwarded it (the stage after its signer accepts only frames whose
// receipts match: the break is its).
async function opened(receipts: Receipt[]): Promise<Receipt[] | undefined> {
  try {
    return await Promise.all(receipts.map((r) => openReceipt(r.bytes)));
  } catch {
    return undefined;
  }
}

const row = (x: Float32Array, p: number, dim: number) => x.subarray(p * dim, (p + 1) * dim);

// Checks one epoch of a session: `tokens` are the session's tokens (at least
// e.upTo, or the disputed receipts' positions). `exclude`: nodes that may not
// audit (the route's own, and in strict mode the other route's).
export async function auditEpoch(e: EpochLedger, tokens: readonly number[], deps: AuditDeps, exclude: ReadonlySet<string> = new Set(), signal?: AbortSignal): Promise<AuditOutcome> {
  const dim = deps.dim;
  // each stage's claims; a stage whose receipts do not make one history (a
  // gap, two numbered alike) is checked no further than the stages before it
  const claims = e.route.map((_, k): Map<number, ReceiptEntry> | Error => {
    try {
      return claimedRows([...e.hops[k], ...e.disputed[k]]);
    } catch (err) {
      return err as Error;
    }
  });
  let N = e.upTo;
  for (const c of claims) if (!(c instanceof Error)) for (const p of c.keys()) N = Math.max(N, p + 1);
  if (N === 0) return { verdict: "unverified", reason: "no receipts" };
  if (tokens.length < N) return { verdict: "unverified", reason: `the gateway knows ${tokens.length} of the ${N} positions` };
  let input = deps.inputRows(tokens.slice(0, N));
  const noAudit = new Set([...exclude, ...e.route.map((h) => h.peer)]);
  const used: string[] = [];
  for (let k = 0; k < e.route.length; k++) {
    throwIfAborted(signal);
    const { peer, start, end } = e.route[k];
    const claim = claims[k];
    if (claim instanceof Error) return { verdict: "unverified", reason: `hop ${k}: ${claim.message}` };
    for (const [p, x] of claim) {
      if (p < N && !hashEqual(x.input, rowHash(p, row(input, p, dim)))) {
        // hop 0: this gateway knows what it sent. Later hops: their input came
        // from a stage whose receipt for that step may not have reached us (a
        // refused frame), so who lied is not certain
        if (k > 0 || !(await opened([...e.hops[k], ...e.disputed[k]]))) return { verdict: "unverified", reason: `hop ${k} signed an input at position ${p} other than the audit computed` };
        const reason = `signed an input at position ${p} other than the one this gateway sent`;
        deps.ban(peer, reason);
        return { verdict: "banned", peer, hop: k, pos: p, reason, proven: false };
      }
    }
    // the boundary after this stage, computed by another holder (or here)
    let out: Float32Array | undefined, auditor = "";
    for (let tries = 0; tries < 2 && !out; tries++) {
      const cand = deps.auditors(start, end, noAudit);
      if (cand.length === 0) break;
      auditor = cand[0];
      try {
        const r = await deps.computeOn(auditor, start, end, input, N, signal);
        out = r.out;
        // an auditor is held to its own receipts like any stage
        const bad = firstBad(claimedRows(r.receipts), out, N, dim);
        if (bad >= 0) throw new LayerswarmError("BAD_MESSAGE", `auditor ${auditor.slice(-8)} signed other rows than it sent`);
        const mismatch = firstBad(claim, out, N, dim);
        if (mismatch >= 0) {
          const verdict = await judge(claim.size ? [...e.hops[k], ...e.disputed[k]] : [], input, mismatch, deps, signal);
          // a receipt that does not verify was put in the chain by a stage after its signer: which one is not certain
          if (verdict === "forged") return { verdict: "unverified", reason: `a receipt of hop ${k} does not verify` };
          if (verdict.proven) {
            const reason = `signed a wrong output for layers [${start}, ${end}) at position ${verdict.pos}`;
            deps.ban(peer, reason, verdict.proof);
            return { verdict: "banned", peer, hop: k, pos: verdict.pos, reason, proven: true };
          }
          // the accused was right: the auditor computed wrong; check it the same way
          const av = await judge(r.receipts, input, firstBad(claimedRows(r.receipts), (await deps.computeLocal(start, end, input, N, signal)), N, dim), deps, signal);
          if (av !== "forged" && av.proven) deps.ban(auditor, `signed a wrong output for layers [${start}, ${end}) at position ${av.pos} while auditing`, av.proof);
          noAudit.add(auditor);
          out = undefined;
          continue;
        }
      } catch (err) {
        if ((err as LayerswarmError).code === "ABORTED") throw err;
        noAudit.add(auditor);
        out = undefined;
      }
    }
    if (!out) {
      out = await deps.computeLocal(start, end, input, N, signal);
      auditor = "gateway";
      const mismatch = firstBad(claim, out, N, dim);
      if (mismatch >= 0) {
        const verdict = await judge([...e.hops[k], ...e.disputed[k]], input, mismatch, deps, signal);
        if (verdict === "forged") return { verdict: "unverified", reason: `a receipt of hop ${k} does not verify` };
        if (verdict.proven) {
          const reason = `signed a wrong output for layers [${start}, ${end}) at position ${verdict.pos}`;
          deps.ban(peer, reason, verdict.proof);
          return { verdict: "banned", peer, hop: k, pos: verdict.pos, reason, proven: true };
        }
        return { verdict: "unverified", reason: `hop ${k}: ${verdict.reason}` };
      }
    }
    used.push(auditor);
    input = out;
  }
  return { verdict: "clean", positions: N, stages: e.route.length, auditors: used };
}

// The first position < N whose claimed output is not the row in `out`, or -1.
function firstBad(claim: Map<number, { output: Uint8Array }>, out: Float32Array, N: number, dim: number): number {
  let first = -1;
  for (const [p, x] of claim) if (p < N && (first < 0 || p < first) && !hashEqual(x.output, rowHash(p, row(out, p, dim)))) first = p;
  return first;
}

type Judged = "forged" | { proven: true; pos: number; proof: FraudProof } | { proven: false; reason: string };

// The gateway's own verdict on receipts that claim a wrong row at or before `upTo`.
async function judge(receipts: Receipt[], input: Float32Array, upTo: number, deps: AuditDeps, signal?: AbortSignal): Promise<Judged> {
  if (upTo < 0 || receipts.length === 0) return { proven: false, reason: "nothing to judge" };
  const ok = await opened(receipts);
  if (!ok) return "forged";
  const proof: FraudProof = { receipts: ok, dim: deps.dim, input: input.slice(0, (upTo + 1) * deps.dim) };
  const v: ProofVerdict = await checkFraudProof(proof, deps.computeLocal, signal);
  return v.proven ? { proven: true, pos: v.pos, proof } : { proven: false, reason: v.reason };
}

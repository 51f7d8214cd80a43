// The gateway's receipt ledger: every result frame carries the signed
// receipts of the stages that computed it (one per hop, in hop order;
// protocol/receipt.ts). The ledger checks them at once, cheaply (parsing and
// hashes, no signatures: those are checked when an audit uses them), and keeps
// them per route (epoch) for audits:
//
//   - each receipt is by the stage the route names, for this session, hop and
//     layer range, with our numerics, and covers exactly the step's rows;
//   - hop 0 received exactly what this gateway sent;
//   - each stage received what the stage before it signed it sent (an honest
//     stage refuses a frame whose rows are not what its sender signed, so a
//     break in the chain is the receiver's fault);
//   - the rows that reached this gateway are what the last stage signed.
//
// A break is blamed on one stage and the step is sent again elsewhere; the
// audit then decides, by recomputation, whether anyone is banned.

import { NUMERICS_VERSION } from "../protocol/version.js";
import { DType } from "../protocol/frames.js";
import { ROLLED_BACK, Receipt, hashEqual, parseReceipt, rowHash } from "../protocol/receipt.js";

export interface Hop {
  peer: string;
  start: number;
  end: number;
}

export interface ChainBreak {
  sid: string;
  hop: number; // the stage blamed
  peer: string;
  reason: string;
  // receipts that, if their signatures verify, prove the blamed stage lied
  // (it signed rows other than this gateway sent it or got from it, or other
  // weights or encoding than the route's); none: only suspected
  evidence: Uint8Array[];
  audit: boolean; // the epoch should be audited (the break's receipts were kept for it as disputed)
}

// One route of one session (an epoch): its stages' receipts, in arrival order.
export class EpochLedger {
  readonly hops: Receipt[][];
  readonly disputed: Receipt[][]; // receipts of steps that did not come back whole (a refused frame, a broken chain), per hop
  readonly nextSeq: number[]; // per hop: the number its next receipt must carry
  upTo = 0; // positions [0, upTo) were computed on this route
  steps = 0;
  constructor(readonly sid: string, readonly owner: string, readonly route: readonly Hop[]) {
    this.hops = route.map(() => []);
    this.disputed = route.map(() => []);
    this.nextSeq = route.map(() => 0);
  }
}

export interface LedgerModel {
  weights(start: number, end: number): Uint8Array; // weightsDigest of this gateway's own hashes for those layers
  dtype: () => DType; // how the route's rows travel
}

export const MAX_DISPUTED_PER_HOP = 4;
const MAX_EPOCHS_PER_OWNER = 16;
const MAX_OWNERS = 512; // sessions whose receipts are kept (a session's are forgotten when it ends, after its audit)

export class ReceiptLedger {
  private bySid = new Map<string, EpochLedger>();
  private byOwner = new Map<string, EpochLedger[]>();
  stats = { checked: 0, breaks: 0, forgotten: 0 }; // forgotten: epochs dropped for room before their session ended (their audits with them)
  constructor(private model: LedgerModel) {}

  open(owner: string, sid: string, route: readonly Hop[]): EpochLedger {
    const e = new EpochLedger(sid, owner, route.map((h) => ({ ...h })));
    this.bySid.set(sid, e);
    let list = this.byOwner.get(owner);
    if (!list) {
      list = [];
      this.byOwner.set(owner, list);
      if (this.byOwner.size > MAX_OWNERS) {
        this.stats.forgotten++;
        this.forget(this.byOwner.keys().next().value!);
      }
    }
    list.push(e);
    if (list.length > MAX_EPOCHS_PER_OWNER) {
      this.stats.forgotten++;
      this.bySid.delete(list.shift()!.sid);
    }
    return e;
  }

  get(sid: string): EpochLedger | undefined {
    return this.bySid.get(sid);
  }

  epochs(owner: string): EpochLedger[] {
    return this.byOwner.get(owner) ?? [];
  }

  forget(owner: string): void {
    for (const e of this.byOwner.get(owner) ?? []) this.bySid.delete(e.sid);
    this.byOwner.delete(owner);
  }

  // A result for step (pos, T) of epoch `sid` arrived with these receipts;
  // `sent` is what this gateway sent to hop 0, `returned` what came back (all
  // T rows, or the last one). Returns the break, or undefined when the chain
  // holds (and then keeps the receipts). Epochs not opened here (probes) pass.
  check(sid: string, pos: number, T: number, dim: number, sent: Float32Array, chain: readonly Uint8Array[], returned: Float32Array): ChainBreak | undefined {
    const e = this.bySid.get(sid);
    if (!e) return undefined;
    this.stats.checked++;
    const n = e.route.length;
    const blame = (hop: number, reason: string, evidence: Uint8Array[] = [], audit = false): ChainBreak => {
      this.stats.breaks++;
      const h = Math.min(Math.max(hop, 0), n - 1);
      return { sid, hop: h, peer: e.route[h].peer, reason, evidence, audit };
    };
    // only the last stage sends the result: a chain of the wrong length is its doing
    if (chain.length !== n) return blame(n - 1, `the result carried ${chain.length} receipts for a route of ${n} stages`);
    const parsed: Receipt[] = [];
    const dtype = this.model.dtype();
    for (let k = 0; k < n; k++) {
      const next = k + 1 < n ? k + 1 : k; // who accepted (and forwarded) this receipt: any later stage could have changed it
      let r: Receipt;
      try {
        r = parseReceipt(chain[k]);
      } catch (err) {
        return blame(next, `receipt of hop ${k}: ${(err as Error).message}`);
      }
      const h = e.route[k];
      if (r.signer !== h.peer || r.session !== sid || r.hop !== k || r.start !== h.start || r.end !== h.end)
        return blame(next, `receipt of hop ${k} is not ${h.peer.slice(-8)}'s for this session, hop and layers [${h.start}, ${h.end})`);
      // what it says of itself: our numerics, our weights, the route's encoding; signed by it, so a lie here is its own
      if (r.numerics !== NUMERICS_VERSION || r.dtype !== dtype || !hashEqual(r.weights, this.model.weights(h.start, h.end)))
        return blame(k, `hop ${k} signed numerics ${r.numerics}, dtype ${r.dtype} and weights ${Buffer.from(r.weights).toString("hex").slice(0, 12)}…, not the route's`, [chain[k]]);
      if (r.seq !== e.nextSeq[k]) return blame(k, `hop ${k} numbered its receipt ${r.seq}, its next is ${e.nextSeq[k]} (it computed steps this gateway never saw)`);
      if (r.entries.length !== T || r.entries.some((x, t) => x.pos !== pos + t || x.flags !== 0))
        return blame(next, `receipt of hop ${k} does not cover exactly positions ${pos}..${pos + T - 1}`);
      parsed.push(r);
    }
    for (let t = 0; t < T; t++)
      if (!hashEqual(parsed[0].entries[t].input, rowHash(pos + t, sent.subarray(t * dim, (t + 1) * dim))))
        return blame(0, `hop 0 signed an input at position ${pos + t} other than the one this gateway sent`, [chain[0]]);
    // A break between two stages: either the receiver signed an input it was
    // not sent (an honest stage refuses rows its sender's receipt does not
    // state), or the sender signed two receipts for the step and a later stage
    // put the other one in the chain. Not certain: both receipts are kept for
    // an audit, which holds the sender to the receipt it signed.
    for (let k = 1; k < n; k++)
      for (let t = 0; t < T; t++)
        if (!hashEqual(parsed[k].entries[t].input, parsed[k - 1].entries[t].output)) {
          for (const j of [k - 1, k]) if (e.disputed[j].length < MAX_DISPUTED_PER_HOP) e.disputed[j].push(parsed[j]);
          return blame(k, `hop ${k} signed an input at position ${pos + t} other than hop ${k - 1} signed it sent`, [], true);
        }
    const rows = returned.length / dim, last = parsed[n - 1];
    for (let i = 0; i < rows; i++) {
      const t = T - rows + i;
      if (!hashEqual(last.entries[t].output, rowHash(pos + t, returned.subarray(i * dim, (i + 1) * dim))))
        return blame(n - 1, `the last stage sent a row at position ${pos + t} other than the one it signed`, [chain[n - 1]]);
    }
    for (let k = 0; k < n; k++) {
      e.hops[k].push(parsed[k]);
      e.nextSeq[k]++;
    }
    e.upTo = Math.max(e.upTo, pos + T);
    e.steps++;
    return undefined;
  }

  // The stages of epoch `sid` rolled it back to `pos` (speculation), each
  // answering with its receipt withdrawing positions >= pos (`receipts`, per
  // hop; none when the epoch holds no position >= pos). Each must be its
  // stage's next, about the route's session, hop, layers, numerics, dtype and
  // weights, with one entry: ROLLED_BACK at pos. Returns the break, or
  // undefined (and then keeps them: audits read the epoch from position pos on
  // as if those rows had never been sent).
  rollback(sid: string, pos: number, receipts: readonly (Uint8Array | undefined)[]): ChainBreak | undefined {
    const e = this.bySid.get(sid);
    if (!e || e.upTo <= pos) return undefined;
    const n = e.route.length, dtype = this.model.dtype(), parsed: Receipt[] = [];
    const blame = (k: number, reason: string): ChainBreak => {
      this.stats.breaks++;
      return { sid, hop: k, peer: e.route[k].peer, reason, evidence: [], audit: false };
    };
    for (let k = 0; k < n; k++) {
      const h = e.route[k], bytes = receipts[k];
      if (!bytes) return blame(k, `hop ${k} answered a rollback to position ${pos} without its receipt`);
      let r: Receipt;
      try {
        r = parseReceipt(bytes);
      } catch (err) {
        return blame(k, `rollback receipt of hop ${k}: ${(err as Error).message}`);
      }
      if (r.signer !== h.peer || r.session !== sid || r.hop !== k || r.start !== h.start || r.end !== h.end || r.numerics !== NUMERICS_VERSION || r.dtype !== dtype || !hashEqual(r.weights, this.model.weights(h.start, h.end)))
        return blame(k, `hop ${k}'s rollback receipt is not its own for this session, hop, layers, numerics, dtype and weights`);
      if (r.seq !== e.nextSeq[k]) return blame(k, `hop ${k} numbered its rollback receipt ${r.seq}, its next is ${e.nextSeq[k]}`);
      if (r.entries.length !== 1 || r.entries[0].pos !== pos || r.entries[0].flags !== ROLLED_BACK)
        return blame(k, `hop ${k}'s rollback receipt does not withdraw exactly the positions from ${pos} on`);
      parsed.push(r);
    }
    for (let k = 0; k < n; k++) {
      e.hops[k].push(parsed[k]);
      e.nextSeq[k]++;
    }
    e.upTo = pos;
    return undefined;
  }
}

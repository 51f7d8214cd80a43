// Receipts travel with the hidden states (in memory, real node and gateway
// code, stories260K): the gateway gets every stage's signed receipt with each
// result, chained stage to stage down to the rows it sent and the rows it got
// back; a stage whose receipt does not state the rows it sent (bad-receipt),
// or that forwards rows or a receipt other than its own, is refused by the
// next stage with BAD_RECEIPT and disputed to the gateway with the receipt.

import { afterEach, describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../../testing/shared.js";
import { MemSwarm, memSwarm } from "../../testing/memswarm.js";
import { MemoryTransport } from "../memory.js";
import { Transport, DialOptions } from "../transport.js";
import { Identity } from "../identity.js";
import { FaultInjector } from "./fault.js";
import type { NodeInit } from "./index.js";
import type { GatewayOptions } from "../gateway/index.js";
import {
  DType, ErrorFrame, Ext, FrameType, PROTOCOLS, Request, ResultFrame, StepFrame, decodeError, decodeRequest, decodeResult, decodeStep, encodeStep, frameType,
  openReceipt, parseReceipt, receiptsOf, rowHash, signReceipts, weightsDigest,
} from "../protocol/index.js";

const WANT = goldenIds("4").slice(0, 27); // BOS, then greedy tokens
const PROMPT = WANT.slice(0, 7); // a prefill of 7 rows, then one row a step
const DIM = 64;
const LIM = { dim: DIM, maxRows: 4096 };
const r = (start: number, end: number) => ({ start, end });
type Dispute = Extract<Request, { type: "dispute" }>;

interface Seen {
  sent: Map<number, StepFrame>; // what the gateway sent to the first stage, by request
  results: ResultFrame[];
  errors: { from: string; e: ErrorFrame }[];
  disputes: { from: string; d: Dispute }[];
}

let sw: MemSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

// Three stages [0, 2) [2, 4) [4, 5); the middle one with `init` and its transport wrapped by `wrap`.
// Everything the gateway receives and sends to the first stage is seen.
async function chain(init: Partial<NodeInit> = {}, wrap?: (t: MemoryTransport) => Transport, gw: GatewayOptions = {}): Promise<{ sw: MemSwarm; seen: Seen }> {
  const s = (sw = await memSwarm(STORIES_GGUF, [], gw));
  const seen: Seen = { sent: new Map(), results: [], errors: [], disputes: [] };
  s.net.peers.get(s.gw.peerId)!.tap = (from, protocol, m) => {
    if (PROTOCOLS.steps.includes(protocol)) {
      if (frameType(m) === FrameType.RESULT) seen.results.push(decodeResult(m, LIM));
      else if (frameType(m) === FrameType.ERROR) seen.errors.push({ from, e: decodeError(m) });
    } else if (PROTOCOLS.control.includes(protocol)) {
      const q = decodeRequest(m);
      if (q.type === "dispute") seen.disputes.push({ from, d: q });
    }
  };
  // maxLayers: no node can be asked to load another's layers, so every route is these three stages in order
  const { t: t0 } = await s.addNode([r(0, 2)], { maxLayers: 2 });
  t0.tap = (from, protocol, m) => {
    if (from === s.gw.peerId && PROTOCOLS.steps.includes(protocol) && frameType(m) === FrameType.STEP) {
      const f = decodeStep(m, LIM);
      seen.sent.set(f.req, f);
    }
  };
  await s.addNode([r(2, 4)], { maxLayers: 2, ...init }, undefined, wrap);
  await s.addNode([r(4, 5)], { maxLayers: 1 });
  await s.gw.waitForCoverage(2000);
  return { sw: s, seen };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((res) => setTimeout(res, 10));
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

// The middle stage's step frames to the last stage, changed by `f` on their way out.
function tamperSteps(to: () => string, f: (s: StepFrame) => StepFrame): (t: MemoryTransport) => Transport {
  return (t) => new Proxy(t, {
    get(obj, p) {
      if (p === "dial")
        return async (peer: string, addrs: string[], protocol: string, o: DialOptions) => {
          const ch = await obj.dial(peer, addrs, protocol, o);
          if (peer !== to() || !PROTOCOLS.steps.includes(protocol)) return ch;
          return new Proxy(ch, {
            get: (c, q) => (q === "send" ? (m: Uint8Array, sig?: AbortSignal) => c.send(frameType(m) === FrameType.STEP ? encodeStep(f(decodeStep(m, LIM))) : m, sig) : bound(c, q)),
          });
        };
      return bound(obj, p);
    },
  });
}
const bound = (o: object, p: string | symbol) => {
  const v = Reflect.get(o, p);
  return typeof v === "function" ? v.bind(o) : v;
};

// The frame with its receipt of hop `hop` replaced.
const withReceipt = (s: StepFrame, hop: number, data: Uint8Array | undefined): StepFrame => {
  let k = 0;
  const ext = s.ext.flatMap((e) => (e.kind !== Ext.RECEIPT ? [e] : k++ !== hop ? [e] : data ? [{ kind: e.kind, data }] : []));
  return { ...s, ext };
};

describe("receipts travel with the hidden states", () => {
  it("results carry every stage's receipt, signed, chained from the rows sent to the rows returned; the tokens are unchanged", async () => {
    const { sw: s, seen } = await chain();
    expect(await s.complete(PROMPT, WANT.length - PROMPT.length)).toEqual(WANT);
    const stages = s.nodes.map((n) => n.peerId);
    expect(seen.results.length).toBe(WANT.length - PROMPT.length);
    const seqs = stages.map(() => new Set<number>());
    for (const res of seen.results) {
      const rs = await Promise.all(receiptsOf(res).map((b) => openReceipt(b))); // every signature verifies
      expect(rs.map((x) => [x.signer, x.hop, x.session])).toEqual(stages.map((p, h) => [p, h, res.session]));
      expect(rs.map((x) => [x.start, x.end])).toEqual([[0, 2], [2, 4], [4, 5]]);
      const sent = seen.sent.get(res.req)!;
      const n = sent.T;
      for (const x of rs) expect(x.entries.map((e) => e.pos)).toEqual(Array.from({ length: n }, (_, t) => sent.pos + t));
      // the first stage received what the gateway sent; each stage's outputs are the next one's inputs
      for (let t = 0; t < n; t++) {
        expect(hex(rs[0].entries[t].input)).toBe(hex(rowHash(sent.pos + t, sent.hidden.subarray(t * DIM, (t + 1) * DIM))));
        for (let h = 0; h + 1 < rs.length; h++) expect(hex(rs[h + 1].entries[t].input)).toBe(hex(rs[h].entries[t].output));
      }
      // the rows returned (all of them, or the last only) are the last stage's outputs
      for (let t = 0; t < res.T; t++) {
        const pos = sent.pos + n - res.T + t;
        expect(hex(rowHash(pos, res.hidden.subarray(t * DIM, (t + 1) * DIM)))).toBe(hex(rs[2].entries[n - res.T + t].output));
      }
      rs.forEach((x, h) => seqs[h].add(x.seq));
      // the weights a stage signs for are the hashes of the layers its record names
      rs.forEach((x, h) => expect(hex(x.weights)).toBe(hex(weightsDigest(s.nodes[h].record().model.layerHashes.map((l) => l.sha256)))));
    }
    for (const q of seqs) expect([...q].sort((a, b) => a - b)).toEqual(Array.from({ length: seen.results.length }, (_, i) => i));
    const st = s.nodes.map((n) => n.stats);
    console.log(`receipts: ${seen.results.length} steps (a ${PROMPT.length}-row prefill, then one row a step), hashing and signing ${st.map((x) => ((x.receiptMs * 1000) / x.receiptSteps).toFixed(0)).join(", ")} µs a step at the three stages; ${receiptsOf(seen.results[1]).reduce((a, b) => a + b.length, 0)} bytes of receipts on a one-row result`);
    for (const n of s.nodes) {
      expect(n.stats.receiptSteps).toBe(seen.results.length);
      expect(n.stats.badReceipts).toBe(0);
      expect(n.record().capabilities.receipts).toBe(true);
    }
    expect(seen.errors).toEqual([]);
    expect(seen.disputes).toEqual([]);
  });

  it.each([["f16", DType.F16], ["bf16", DType.BF16]])("with %s on the wire, a receipt states its rows as the receiver decodes them (rounded), and every stage agrees", async (_name, dtype) => {
    const { sw: s, seen } = await chain({}, undefined, { dtype });
    expect((await s.complete(PROMPT, 6)).length).toBe(PROMPT.length + 6);
    expect(seen.errors).toEqual([]);
    expect(seen.results.length).toBe(6);
    for (const n of s.nodes) expect([n.stats.receiptSteps, n.stats.badReceipts]).toEqual([6, 0]);
    for (const res of seen.results) {
      const rs = receiptsOf(res).map((b) => parseReceipt(b)), n = rs[2].entries.length, sent = seen.sent.get(res.req)!;
      for (let t = 0; t < n; t++) // the first stage's inputs are the gateway's rows as they arrived (rounded), not its f32 rows
        expect(hex(rs[0].entries[t].input)).toBe(hex(rowHash(sent.pos + t, sent.hidden.subarray(t * DIM, (t + 1) * DIM))));
      for (let t = 0; t < res.T; t++) // the returned rows, as this gateway decoded them, are what the last stage signed
        expect(hex(rowHash(res.pos + n - res.T + t, res.hidden.subarray(t * DIM, (t + 1) * DIM)))).toBe(hex(rs[2].entries[n - res.T + t].output));
    }
  });

  it("a bad-receipt middle stage (right rows, wrong hashes) is refused by the next with BAD_RECEIPT and disputed with its own signed receipt", async () => {
    const { sw: s, seen } = await chain({ fault: new FaultInjector({ kind: "bad-receipt" }) });
    const [, liar, last] = s.nodes;
    await s.complete(PROMPT, 4).catch(() => {}); // what the gateway does next is its own business
    await until(() => seen.disputes.length > 0);
    expect(last.stats.badReceipts).toBeGreaterThan(0);
    const refused = seen.errors.filter((x) => x.from === last.peerId && x.e.code === "BAD_RECEIPT");
    expect(refused.length).toBeGreaterThan(0);
    expect(seen.results.filter((x) => x.req === refused[0].e.req)).toEqual([]); // nothing of the lie was computed on
    expect(refused[0].e.message).toMatch(/receipt of hop 1 .* states another row at position 0/);
    const { from, d } = seen.disputes[0];
    expect([from, d.hop, d.req, d.session]).toEqual([last.peerId, 1, refused[0].e.req, refused[0].e.session]);
    // the accused's receipt, signed by it: the proof of what it claimed
    const accused = await openReceipt(Buffer.from(d.receipt, "base64"));
    expect([accused.signer, accused.hop, accused.session, accused.start, accused.end]).toEqual([liar.peerId, 1, d.session, 2, 4]);
  });

  it("a stage that forwards rows other than its receipt states, or a receipt not its own, is refused; a forged signature is caught after the step", async () => {
    const stranger = await Identity.generate();
    let lastPeer = "";
    const cases: [string, (f: StepFrame) => StepFrame, RegExp, boolean][] = [
      // one bit of one value changed after signing
      ["rows", (f) => {
        const hidden = Float32Array.from(f.hidden);
        new Uint32Array(hidden.buffer)[3] ^= 1;
        return { ...f, hidden };
      }, /states another row at position \d+ than the one it sent/, true],
      // its own receipt left out
      ["missing", (f) => withReceipt(f, 1, undefined), /is missing: a step at hop 2 carries 2 receipts, this one 1/, true],
      // a receipt signed by someone else
      ["stranger's", (f) => withReceipt(f, 1, signReceipts([parseReceipt(receiptsOf(f)[1])], stranger)[0].bytes), /is signed by/, true],
      // its receipt with the signature changed: the hashes hold, the signature does not (found after the step ran)
      ["forged signature", (f) => {
        const b = Uint8Array.from(receiptsOf(f)[1]);
        b[b.length - 1] ^= 1;
        return withReceipt(f, 1, b);
      }, /is not signed by its key/, false],
    ];
    for (const [what, tamper, why, before] of cases) {
      const { sw: s, seen } = await chain({}, tamperSteps(() => lastPeer, tamper));
      const [, middle, last] = s.nodes;
      lastPeer = last.peerId;
      await s.complete(PROMPT, 3).catch(() => {});
      const accused = what !== "missing"; // a receipt left out leaves nothing to dispute with: the refusal says it
      await until(() => (!accused || seen.disputes.length > 0) && seen.errors.some((x) => x.e.code === "BAD_RECEIPT"));
      const refused = seen.errors.filter((x) => x.from === last.peerId && x.e.code === "BAD_RECEIPT");
      expect(refused.length, what).toBeGreaterThan(0);
      expect(refused[0].e.message, what).toMatch(why);
      expect(last.stats.badReceipts, what).toBeGreaterThan(0);
      if (before) expect(seen.results.filter((x) => x.req === refused[0].e.req), what).toEqual([]);
      if (accused) {
        expect([seen.disputes[0].from, seen.disputes[0].d.hop], what).toEqual([last.peerId, 1]);
        expect(parseReceipt(Buffer.from(seen.disputes[0].d.receipt, "base64")).signer, what).toBe(what === "stranger's" ? stranger.peerId : middle.peerId);
      } else expect(seen.disputes, what).toEqual([]);
      expect(middle.stats.badReceipts, what).toBe(0); // the first stage was honest
      await s.stop();
      sw = undefined;
    }
  });
});

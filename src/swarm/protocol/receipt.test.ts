// Receipts and fraud proofs on the real model (stories260K): a node decoding a
// session token by token signs its rows; an audit recomputes them as one
// prefill, and with exact kernels an honest node is never proven wrong while a
// node that changed one row is, at that row.

import { describe, expect, it } from "vitest";
import { readGGUF } from "../../format/gguf.js";
import { configFromGGUF } from "../../model/config.js";
import { Model, loadSlice } from "../../model/model.js";
import { createKernels } from "../../kernels/index.js";
import { Identity } from "../identity.js";
import { STORIES_GGUF } from "../../testing/shared.js";
import { LayerswarmError } from "../../errors.js";
import { NUMERICS_VERSION } from "./version.js";
import {
  FraudProof, MAX_PATH, MAX_RECEIPT_ENTRIES, ROLLED_BACK, Receipt, ReceiptBody, ReceiptEntry, checkFraudProof, claimedRows, maxReceiptBytes, openReceipt, parseReceipt,
  rowHash, signReceipt, signReceipts, weightsDigest,
} from "./receipt.js";
import { DType, MAX_EXT_BYTES, MAX_GRANT_BYTES, MAX_HOPS, MAX_RECEIPT_EXT_BYTES } from "./frames.js";
import { MAX_CONTROL_BYTES, MAX_RECEIPT_BASE64, decodeRequest, encodeMessage } from "./messages.js";

const ENTRY0 = 4 + 69; // a receipt's first entry: after the body length and the 69-byte header
const SESSION = "0123456789abcdef0123456789abcdef";
const STAGE = { start: 2, end: 5 }; // stories260K has 5 layers: this node holds [2, 5)
const WEIGHTS = weightsDigest(["a", "b", "c"]);
const f = readGGUF(STORIES_GGUF);
const cfg = configFromGGUF(f);
const k = createKernels({});
const model = Model.gateway(STORIES_GGUF, { kernels: k });
const prompt = model.tokenizer.encode("Once upon a time, there was a little");

// The rows entering layer 2 for every position, computed by the first stage one token at a time.
function stageInput(): Float32Array {
  const first = loadSlice(f, cfg, { start: 0, end: STAGE.start }, k);
  const dim = cfg.dim, out = new Float32Array(prompt.length * dim);
  for (let p = 0; p < prompt.length; p++)
    out.set(first.forward([{ session: "s", pos: p, T: 1, hidden: model.embedder.embed([prompt[p]]) }])[0], p * dim);
  return out;
}

// A node serving [2, 5) that decodes one row per step and signs a receipt every `every` steps;
// `tamper(pos, row)` lets it change a row it sends.
async function serve(input: Float32Array, id: Identity, every: number, tamper?: (pos: number, row: Float32Array) => void): Promise<Receipt[]> {
  const slice = loadSlice(f, cfg, STAGE, k), dim = cfg.dim, T = input.length / dim;
  const receipts: Receipt[] = [];
  let pending: ReceiptEntry[] = [];
  for (let p = 0; p < T; p++) {
    const row = input.subarray(p * dim, (p + 1) * dim);
    const out = slice.forward([{ session: SESSION, pos: p, T: 1, hidden: Float32Array.from(row) }])[0];
    tamper?.(p, out);
    pending.push({ pos: p, flags: 0, input: rowHash(p, row), output: rowHash(p, out) });
    if (pending.length === every || p === T - 1) {
      receipts.push(await signReceipt({ numerics: NUMERICS_VERSION, dtype: DType.F32, session: SESSION, hop: 1, ...STAGE, weights: WEIGHTS, seq: receipts.length, entries: pending }, id));
      pending = [];
    }
  }
  return receipts;
}

// The checker's own computation: layers [start, end) over all rows as one prefill, fresh KV.
const recompute = async (start: number, end: number, input: Float32Array, T: number) =>
  loadSlice(f, cfg, { start, end }, k).forward([{ session: "audit", pos: 0, T, hidden: Float32Array.from(input) }])[0];

describe("receipts and fraud proofs", () => {
  it("an honest node's receipts survive a round trip and are never proven wrong by a prefill that recomputes them", async () => {
    const id = await Identity.generate(), input = stageInput();
    const t0 = performance.now();
    const receipts = await serve(input, id, 4);
    const opened = await Promise.all(receipts.map((r) => openReceipt(r.bytes)));
    console.log(`${receipts.length} receipts for ${prompt.length} rows, ${receipts[0].bytes.length} bytes each (4 rows); session served and signed in ${(performance.now() - t0).toFixed(1)} ms`);
    expect(opened.map((r) => [r.signer, r.seq, r.entries.length])).toEqual(receipts.map((r) => [id.peerId, r.seq, r.entries.length]));
    expect(Buffer.from(opened[1].entries[2].output)).toEqual(Buffer.from(receipts[1].entries[2].output));
    const verdict = await checkFraudProof({ receipts: opened, dim: cfg.dim, input }, recompute);
    expect(verdict).toEqual({ proven: false, reason: "every signed output row is what those layers compute" });
  });

  it("a node that changed one row (one bit of one value) is proven wrong at that row, by anyone who recomputes", async () => {
    const id = await Identity.generate(), input = stageInput();
    const receipts = await serve(input, id, 4, (pos, row) => {
      if (pos === 6) new Uint32Array(row.buffer, row.byteOffset, row.length)[17] ^= 1;
    });
    const proof: FraudProof = { receipts: await Promise.all(receipts.map((r) => openReceipt(r.bytes))), dim: cfg.dim, input };
    expect(await checkFraudProof(proof, recompute)).toEqual({ proven: true, signer: id.peerId, pos: 6, layers: STAGE });
  });

  it("a forged proof proves nothing: tampered bytes, someone else's input rows, receipts mixed from two nodes", async () => {
    const honest = await Identity.generate(), other = await Identity.generate(), input = stageInput();
    const receipts = await serve(input, honest, 4);
    // an accuser flips a byte of an output hash: the signature no longer verifies
    const forged = Uint8Array.from(receipts[1].bytes);
    forged[ENTRY0 + 4 + 1 + 16 + 3] ^= 0xff; // entry 0's output hash
    await expect(openReceipt(forged)).rejects.toMatchObject({ code: "FORBIDDEN" });
    // other input rows than the node received
    const wrongInput = Float32Array.from(input);
    wrongInput[cfg.dim * 3] += 1;
    expect(await checkFraudProof({ receipts, dim: cfg.dim, input: wrongInput }, recompute)).toEqual({ proven: false, reason: "the input row at position 3 is not the one the signer received" });
    // a receipt by another peer slipped in
    const mixed = [...receipts.slice(0, 2), ...(await serve(input, other, 4)).slice(2)];
    const v = await checkFraudProof({ receipts: mixed, dim: cfg.dim, input }, recompute);
    expect(v.proven).toBe(false);
    // a receipt left out: a history with a gap proves nothing (the missing one could have withdrawn rows)
    expect(await checkFraudProof({ receipts: [receipts[0], receipts[2]], dim: cfg.dim, input }, recompute)).toEqual({ proven: false, reason: "receipt 1 is missing (the next is 2): a history with gaps proves nothing" });
    // fewer rows than the receipts cover: positions 0..3 of a history that goes on
    expect((await checkFraudProof({ receipts, dim: cfg.dim, input: input.slice(0, 4 * cfg.dim) }, recompute)).proven).toBe(false);
  });

  it("rows rolled back (speculation) are withdrawn, and their replacements are what counts", async () => {
    const id = await Identity.generate(), input = stageInput();
    const receipts = await serve(input, id, 100);
    const e = receipts[0].entries;
    // a draft row at position 5 that was rolled back, then the accepted one
    const draft = { ...e[5], output: new Uint8Array(16).fill(7) };
    const r0 = await signReceipt({ numerics: NUMERICS_VERSION, dtype: DType.F32, session: SESSION, hop: 1, ...STAGE, weights: WEIGHTS, seq: 0, entries: [...e.slice(0, 5), draft] }, id);
    const r1 = await signReceipt({ numerics: NUMERICS_VERSION, dtype: DType.F32, session: SESSION, hop: 1, ...STAGE, weights: WEIGHTS, seq: 1, entries: [{ ...draft, flags: ROLLED_BACK }, ...e.slice(5)] }, id);
    const opened = [await openReceipt(r1.bytes), await openReceipt(r0.bytes)]; // in any order: seq decides
    expect(Buffer.from(claimedRows(opened).get(5)!.output)).toEqual(Buffer.from(e[5].output));
    expect((await checkFraudProof({ receipts: opened, dim: cfg.dim, input }, recompute)).proven).toBe(false);
    // without the rollback the draft row stands, and it is proven wrong
    const r1b = await signReceipt({ numerics: NUMERICS_VERSION, dtype: DType.F32, session: SESSION, hop: 1, ...STAGE, weights: WEIGHTS, seq: 1, entries: e.slice(6) }, id);
    expect(await checkFraudProof({ receipts: [r0, r1b], dim: cfg.dim, input }, recompute)).toMatchObject({ proven: true, pos: 5 });
  });

  it("malformed receipts are refused with what is wrong", async () => {
    const id = await Identity.generate(), input = stageInput();
    const [r] = await serve(input, id, 2);
    const bad = (mutate: (b: Buffer) => Buffer) => openReceipt(mutate(Buffer.from(r.bytes)));
    await expect(bad((b) => b.subarray(0, 20))).rejects.toThrow(/receipt: truncated/);
    await expect(bad((b) => b.subarray(0, b.length - 1))).rejects.toThrow(/bad signature length/);
    await expect(bad((b) => ((b[4] = 9), b))).rejects.toThrow(/version 9/);
    await expect(bad((b) => (b.writeUInt32LE(3, ENTRY0 - 4), b))).rejects.toThrow(/3 entries do not fill/);
    await expect(bad((b) => ((b[ENTRY0 + 4] = 0x80), b))).rejects.toThrow(/unknown flags/);
    for (const m of [(b: Buffer) => b.subarray(0, 20), (b: Buffer) => ((b[4] = 9), b)]) await expect(bad(m)).rejects.toBeInstanceOf(LayerswarmError);
    await expect(signReceipt({ numerics: 1, dtype: DType.F32, session: "xyz", hop: 0, start: 0, end: 1, weights: WEIGHTS, seq: 0, entries: [] }, id)).rejects.toThrow(/32 hex/);
  });
});

// Batch signing: many bodies, one signature, each receipt standing alone with
// its Merkle path; any change to a body, a path, an index or the signature is refused.
describe("batch-signed receipts", () => {
  const body = (seq: number, rows: number, pos = 0): ReceiptBody => ({
    numerics: NUMERICS_VERSION, dtype: DType.F32, session: SESSION, hop: 1, ...STAGE, weights: WEIGHTS, seq,
    entries: Array.from({ length: rows }, (_, t) => ({ pos: pos + t, flags: 0, input: new Uint8Array(16).fill(seq), output: new Uint8Array(16).fill(t & 0xff) })),
  });
  // offsets inside a receipt's bytes, after its body
  const tail = (r: Receipt) => 4 + r.body.length; // index u16, depth u8, then the path

  it("many bodies get one signature; every receipt opens alone, with its own body, index and path", async () => {
    const id = await Identity.generate();
    for (const n of [1, 2, 3, 5, 8, 13]) {
      const rs = signReceipts(Array.from({ length: n }, (_, i) => body(i, 1 + i)), id);
      expect(rs.length).toBe(n);
      expect(new Set(rs.map((r) => Buffer.from(r.signature).toString("hex"))).size).toBe(1);
      const depth = Math.ceil(Math.log2(n));
      for (const [i, r] of rs.entries()) {
        const o = await openReceipt(r.bytes);
        expect([o.index, o.path.length, o.seq, o.entries.length, o.signer]).toEqual([i, depth, i, 1 + i, id.peerId]);
        expect(Buffer.from(parseReceipt(r.bytes).body)).toEqual(Buffer.from(r.body));
      }
    }
    // one body alone, as before: a tree of depth 0
    const one = await signReceipt(body(0, 3), id);
    expect(one.path).toEqual([]);
    expect((await openReceipt(one.bytes)).entries.length).toBe(3);
  });

  it("a changed body, leaf index, path hash, depth or signature is refused by openReceipt (parseReceipt does not check signatures)", async () => {
    const id = await Identity.generate();
    const rs = signReceipts(Array.from({ length: 6 }, (_, i) => body(i, 4)), id);
    const r = rs[2], t = tail(r);
    const changed = (f: (b: Buffer) => void) => {
      const b = Buffer.from(r.bytes);
      f(b);
      return b;
    };
    const forgeries = {
      body: changed((b) => (b[ENTRY0 + 4 + 1 + 16 + 2] ^= 1)), // an output hash of the body
      index: changed((b) => b.writeUInt16LE(3, t)),
      path: changed((b) => (b[t + 3 + 32 + 7] ^= 0x10)), // the second sibling hash
      signature: changed((b) => (b[b.length - 9] ^= 1)),
      // another receipt's body under this one's path and signature
      leaf: Buffer.concat([Buffer.from(rs[3].bytes.subarray(0, t)), Buffer.from(r.bytes.subarray(t))]),
      // a shorter path (the last sibling left out, depth 2): another tree
      depth: Buffer.concat([Buffer.from(r.bytes.subarray(0, t + 2)), Uint8Array.of(2), Buffer.from(r.bytes.subarray(t + 3, t + 3 + 64)), Buffer.from(r.bytes.subarray(t + 3 + 96))]),
    };
    for (const [what, b] of Object.entries(forgeries)) {
      expect(() => parseReceipt(b), what).not.toThrow();
      await expect(openReceipt(b), what).rejects.toMatchObject({ code: "FORBIDDEN" });
    }
    await expect(openReceipt(r.bytes)).resolves.toMatchObject({ seq: 2 });
    // a receipt signed by another key, claiming to be ours
    const other = signReceipts([body(2, 4)], await Identity.generate())[0];
    const sl = id.peerId.length;
    const claimed = Buffer.concat([Buffer.from(other.bytes.subarray(0, other.bytes.length - 1 - 64 - sl - 1)), Uint8Array.of(sl), Buffer.from(id.peerId), Uint8Array.of(64), other.signature]);
    expect(parseReceipt(claimed).signer).toBe(id.peerId);
    await expect(openReceipt(claimed)).rejects.toMatchObject({ code: "FORBIDDEN" });
  });

  it("bounds: paths of at most 16 hashes, an index inside its tree; the frame and dispute limits hold the largest receipts", async () => {
    const id = await Identity.generate();
    const [r] = signReceipts([body(0, 2)], id);
    const t = tail(r);
    const withDepth = (d: number) => Buffer.concat([Buffer.from(r.bytes.subarray(0, t + 2)), Uint8Array.of(d), new Uint8Array(32 * d), Buffer.from(r.bytes.subarray(t + 3))]);
    expect(() => parseReceipt(withDepth(MAX_PATH + 1))).toThrow(/a path of 17 hashes, at most 16/);
    expect(parseReceipt(withDepth(MAX_PATH)).path.length).toBe(MAX_PATH);
    expect(() => parseReceipt(Buffer.from(r.bytes).fill(0xff, t, t + 2))).toThrow(/leaf 65535 of a tree of depth 0/);
    expect(() => signReceipts([body(0, MAX_RECEIPT_ENTRIES + 1)], id)).toThrow(/at most 4096/);
    // a receipt of 512 rows (in a batch of 5: a path of 3) is within its bound; the bound fits a frame's extension per hop
    const big = signReceipts(Array.from({ length: 5 }, (_, i) => body(i, 512)), id)[4];
    expect(big.bytes.length).toBe(maxReceiptBytes(512) - (MAX_PATH - 3) * 32 - (128 - id.peerId.length) - (128 - 64));
    expect(maxReceiptBytes(512)).toBeLessThanOrEqual(MAX_RECEIPT_EXT_BYTES);
    expect(MAX_EXT_BYTES).toBeGreaterThanOrEqual(MAX_GRANT_BYTES + MAX_HOPS * (5 + maxReceiptBytes(512)));
    // the largest receipt, in base64, fits a dispute, and one character more is refused
    const dispute = (receipt: string) => ({ type: "dispute" as const, session: SESSION, req: 7, hop: 63, receipt });
    const most = "A".repeat(MAX_RECEIPT_BASE64);
    expect(MAX_RECEIPT_BASE64).toBeGreaterThanOrEqual(Buffer.from(new Uint8Array(maxReceiptBytes(MAX_RECEIPT_ENTRIES))).toString("base64").length);
    expect(encodeMessage(dispute(most)).length).toBeLessThanOrEqual(MAX_CONTROL_BYTES);
    expect(decodeRequest(encodeMessage(dispute(Buffer.from(big.bytes).toString("base64"))))).toMatchObject({ type: "dispute", hop: 63 });
    expect(() => decodeRequest(encodeMessage(dispute(most + "A")))).toThrow(/receipt/);
    expect(() => decodeRequest(encodeMessage({ ...dispute("AAAA"), hop: 64 }))).toThrow(/hop/);
    expect(() => decodeRequest(encodeMessage(dispute("not base64!")))).toThrow(/base64/);
  });
});

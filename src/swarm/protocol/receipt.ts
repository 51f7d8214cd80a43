// Receipts: a node's signed statement of what it computed for a session, the
// footing of exact audits (docs/security.md). Because our kernels give the same
// bits for a row alone, batched or inside a prefill, a receipt names each row by
// position, not by the step that carried it: an audit that recomputes the
// session as one prefill compares row by row, exactly, and a node that signed a
// wrong row cannot explain it away as rounding.
//
// A row hash is SHA-256 over a domain, the row's position and its f32 values
// exactly as the receiver decodes them (after any wire encoding), cut to 16
// bytes. An entry holds one position's input and output hashes; an entry with
// ROLLED_BACK withdraws that position's earlier entries (speculation), and a
// later entry for the position replaces it.
//
//   body     [v u8][numerics u16][session 16][hop u8][start u32][end u32]
//            [weights 32][seq u32][count u32][count x entry]
//   entry    [pos u32][flags u8][in 16][out 16]
//   receipt  [body bytes u32][body][signer u8-len + utf8 peer id][signature u8-len + bytes]
// The signature covers DOMAIN + body. `weights` is the SHA-256 of the hashes of
// the layers [start, end) the node says it computed with (weightsDigest), so a
// receipt also commits the node to the model it claims to run.

import { createHash } from "node:crypto";
import { LayerswarmError } from "../../errors.js";
import { Identity, verifySignature } from "../identity.js";
import { SESSION_BYTES } from "./frames.js";
import { NUMERICS_VERSION } from "./version.js";

const DOMAIN = Buffer.from("layerswarm/receipt/1\n");
const ROW_DOMAIN = Buffer.from("layerswarm/row/1\n");
export const RECEIPT_VERSION = 1;
export const ROW_HASH_BYTES = 16;
export const ENTRY_BYTES = 4 + 1 + 2 * ROW_HASH_BYTES;
export const MAX_RECEIPT_ENTRIES = 4096; // one receipt covers at most this many rows
const HEADER_BYTES = 1 + 2 + SESSION_BYTES + 1 + 4 + 4 + 32 + 4 + 4;

export const ROLLED_BACK = 1;

export interface ReceiptEntry {
  pos: number;
  flags: number; // ROLLED_BACK or 0
  input: Uint8Array; // ROW_HASH_BYTES: the row the node received at this position
  output: Uint8Array; // ROW_HASH_BYTES: the row it sent on
}

export interface ReceiptBody {
  numerics: number;
  session: string; // 32 hex characters
  hop: number;
  start: number; // layers [start, end)
  end: number;
  weights: Uint8Array; // 32 bytes, weightsDigest of the layers it computed with
  seq: number; // this node's receipts for this session are numbered 0, 1, 2 ...
  entries: ReceiptEntry[];
}

export interface Receipt extends ReceiptBody {
  signer: string; // peer id
  signature: Uint8Array;
  bytes: Uint8Array; // as signed and sent
}

// The hash of row `pos` with values `row` (dim f32 values).
export function rowHash(pos: number, row: Float32Array): Uint8Array {
  const p = Buffer.alloc(4);
  p.writeUInt32LE(pos);
  return createHash("sha256").update(ROW_DOMAIN).update(p).update(new Uint8Array(row.buffer, row.byteOffset, row.byteLength)).digest().subarray(0, ROW_HASH_BYTES);
}

// Row hashes of T consecutive rows starting at `pos` ((T, dim) values).
export function rowHashes(pos: number, T: number, dim: number, x: Float32Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let t = 0; t < T; t++) out.push(rowHash(pos + t, x.subarray(t * dim, (t + 1) * dim)));
  return out;
}

// What a node commits to about its weights: the hash over its layers' hashes (hex, in layer order).
export function weightsDigest(layerHashes: readonly string[]): Uint8Array {
  const h = createHash("sha256").update("layerswarm/weights/1\n");
  for (const l of layerHashes) h.update(l).update("\n");
  return h.digest();
}

function encodeBody(b: ReceiptBody): Buffer {
  if (!/^[0-9a-f]{32}$/.test(b.session)) throw new LayerswarmError("BAD_ARGUMENT", "receipt: session id is not 32 hex characters");
  if (b.entries.length > MAX_RECEIPT_ENTRIES) throw new LayerswarmError("BAD_ARGUMENT", `receipt: ${b.entries.length} entries, at most ${MAX_RECEIPT_ENTRIES}`);
  if (b.weights.length !== 32) throw new LayerswarmError("BAD_ARGUMENT", "receipt: weights digest is not 32 bytes");
  const out = Buffer.alloc(HEADER_BYTES + b.entries.length * ENTRY_BYTES);
  let o = 0;
  out[o++] = RECEIPT_VERSION;
  out.writeUInt16LE(b.numerics, o), (o += 2);
  Buffer.from(b.session, "hex").copy(out, o), (o += SESSION_BYTES);
  out[o++] = b.hop;
  out.writeUInt32LE(b.start, o), (o += 4);
  out.writeUInt32LE(b.end, o), (o += 4);
  out.set(b.weights, o), (o += 32);
  out.writeUInt32LE(b.seq, o), (o += 4);
  out.writeUInt32LE(b.entries.length, o), (o += 4);
  for (const e of b.entries) {
    if (e.input.length !== ROW_HASH_BYTES || e.output.length !== ROW_HASH_BYTES) throw new LayerswarmError("BAD_ARGUMENT", "receipt: a row hash is not 16 bytes");
    out.writeUInt32LE(e.pos, o), (o += 4);
    out[o++] = e.flags;
    out.set(e.input, o), (o += ROW_HASH_BYTES);
    out.set(e.output, o), (o += ROW_HASH_BYTES);
  }
  return out;
}

export async function signReceipt(b: ReceiptBody, id: Identity): Promise<Receipt> {
  const body = encodeBody(b);
  const signature = await id.sign(Buffer.concat([DOMAIN, body]));
  const signer = Buffer.from(id.peerId, "utf8");
  const bytes = Buffer.alloc(4 + body.length + 1 + signer.length + 1 + signature.length);
  let o = 0;
  bytes.writeUInt32LE(body.length, o), (o += 4);
  body.copy(bytes, o), (o += body.length);
  bytes[o++] = signer.length;
  signer.copy(bytes, o), (o += signer.length);
  bytes[o++] = signature.length;
  bytes.set(signature, o);
  return { ...b, entries: b.entries.map((e) => ({ ...e })), signer: id.peerId, signature, bytes };
}

// Decodes and verifies a receipt. BAD_MESSAGE when malformed, FORBIDDEN when
// the signature does not verify with the key behind the signer's peer id.
export async function openReceipt(bytes: Uint8Array): Promise<Receipt> {
  const fail = (m: string): never => {
    throw new LayerswarmError("BAD_MESSAGE", `receipt: ${m}`);
  };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 4 + HEADER_BYTES) fail("truncated");
  const bodyLen = b.readUInt32LE(0);
  if (bodyLen < HEADER_BYTES || 4 + bodyLen + 2 > b.length) fail("truncated body");
  const body = b.subarray(4, 4 + bodyLen);
  let o = 0;
  if (body[o++] !== RECEIPT_VERSION) fail(`version ${body[0]}, this peer reads ${RECEIPT_VERSION}`);
  const numerics = body.readUInt16LE(o);
  o += 2;
  const session = body.subarray(o, o + SESSION_BYTES).toString("hex");
  o += SESSION_BYTES;
  const hop = body[o++];
  const start = body.readUInt32LE(o), end = body.readUInt32LE(o + 4);
  o += 8;
  if (start >= end) fail(`layers [${start}, ${end}) are empty`);
  const weights = new Uint8Array(body.subarray(o, o + 32));
  o += 32;
  const seq = body.readUInt32LE(o), count = body.readUInt32LE(o + 4);
  o += 8;
  if (count > MAX_RECEIPT_ENTRIES) fail(`${count} entries, at most ${MAX_RECEIPT_ENTRIES}`);
  if (bodyLen !== HEADER_BYTES + count * ENTRY_BYTES) fail(`${count} entries do not fill ${bodyLen - HEADER_BYTES} bytes`);
  const entries: ReceiptEntry[] = [];
  for (let i = 0; i < count; i++) {
    const pos = body.readUInt32LE(o), flags = body[o + 4];
    if (flags & ~ROLLED_BACK) fail(`entry ${i} has unknown flags ${flags}`);
    entries.push({ pos, flags, input: new Uint8Array(body.subarray(o + 5, o + 5 + ROW_HASH_BYTES)), output: new Uint8Array(body.subarray(o + 5 + ROW_HASH_BYTES, o + ENTRY_BYTES)) });
    o += ENTRY_BYTES;
  }
  let p = 4 + bodyLen;
  const sl = b[p++];
  if (sl === 0 || p + sl + 1 > b.length) fail("truncated signer");
  const signer = b.subarray(p, p + sl).toString("utf8");
  p += sl;
  const gl = b[p++];
  if (gl === 0 || p + gl !== b.length) fail("bad signature length");
  const signature = new Uint8Array(b.subarray(p, p + gl));
  if (!(await verifySignature(signer, Buffer.concat([DOMAIN, body]), signature)))
    throw new LayerswarmError("FORBIDDEN", `receipt: the signature does not verify with ${signer.slice(0, 60)}'s key`);
  return { numerics, session, hop, start, end, weights, seq, entries, signer, signature, bytes: new Uint8Array(bytes) };
}

export const hashEqual = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

// A session's rows as one node's receipts state them: position -> the latest
// entry not rolled back. Receipts must come from one signer, for one session,
// hop and layer range, with one numerics version; they are read in `seq` order.
export function claimedRows(receipts: readonly Receipt[]): Map<number, ReceiptEntry> {
  const rows = new Map<number, ReceiptEntry>();
  if (receipts.length === 0) return rows;
  const r0 = receipts[0];
  const sorted = [...receipts].sort((a, b) => a.seq - b.seq);
  for (let i = 0; i < sorted.length; i++) {
    const r = sorted[i];
    if (r.signer !== r0.signer || r.session !== r0.session || r.hop !== r0.hop || r.start !== r0.start || r.end !== r0.end || r.numerics !== r0.numerics || !hashEqual(r.weights, r0.weights))
      throw new LayerswarmError("BAD_MESSAGE", `receipt ${r.seq} is not about the same signer, session, stage, weights and numerics as receipt ${r0.seq}`);
    if (i > 0 && r.seq === sorted[i - 1].seq) throw new LayerswarmError("BAD_MESSAGE", `two receipts numbered ${r.seq}`);
    for (const e of r.entries) {
      if (e.flags & ROLLED_BACK) rows.delete(e.pos);
      else rows.set(e.pos, e);
    }
  }
  return rows;
}

// Runs layers [start, end) over consecutive rows from position 0 as one prefill
// (an honest computation: the checker's own weights); returns (T, dim) outputs.
export type RecomputeLayers = (start: number, end: number, input: Float32Array, T: number, signal?: AbortSignal) => Promise<Float32Array>;

// A fraud proof: a node's own signed receipts for positions 0 .. T-1 of a
// session, and the input rows it received (as their hashes in the receipts
// show). Anyone holding the layers can check it by recomputation.
export interface FraudProof {
  receipts: Receipt[];
  dim: number;
  input: Float32Array; // (T, dim): the rows at positions 0 .. T-1
}

export type ProofVerdict =
  | { proven: true; signer: string; pos: number; layers: { start: number; end: number } } // the first position whose signed output is not what those layers give
  | { proven: false; reason: string };

// Checks a fraud proof by recomputing it. `proven` only when the signer's own
// receipts say it received exactly these rows and sent, for some position,
// a row other than the one these layers compute from them: with exact,
// batch-invariant kernels an honest node can never be proven wrong this way.
// Receipts with another numerics version than ours prove nothing here.
export async function checkFraudProof(p: FraudProof, recompute: RecomputeLayers, signal?: AbortSignal): Promise<ProofVerdict> {
  if (p.receipts.length === 0) return { proven: false, reason: "no receipts" };
  let rows: Map<number, ReceiptEntry>;
  try {
    rows = claimedRows(p.receipts);
  } catch (e) {
    return { proven: false, reason: (e as Error).message };
  }
  const r0 = p.receipts[0];
  if (r0.numerics !== NUMERICS_VERSION) return { proven: false, reason: `receipts use numerics version ${r0.numerics}, this peer ${NUMERICS_VERSION}` };
  if (p.dim <= 0 || p.input.length % p.dim !== 0) return { proven: false, reason: "input is not whole rows" };
  const T = p.input.length / p.dim;
  if (T === 0) return { proven: false, reason: "no input rows" };
  for (let pos = 0; pos < T; pos++) {
    const e = rows.get(pos);
    if (!e) return { proven: false, reason: `no receipt entry for position ${pos}` };
    if (!hashEqual(e.input, rowHash(pos, p.input.subarray(pos * p.dim, (pos + 1) * p.dim))))
      return { proven: false, reason: `the input row at position ${pos} is not the one the signer received` };
  }
  const out = await recompute(r0.start, r0.end, p.input, T, signal);
  for (let pos = 0; pos < T; pos++)
    if (!hashEqual(rows.get(pos)!.output, rowHash(pos, out.subarray(pos * p.dim, (pos + 1) * p.dim))))
      return { proven: true, signer: r0.signer, pos, layers: { start: r0.start, end: r0.end } };
  return { proven: false, reason: "every signed output row is what those layers compute" };
}

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
//   receipt  [body bytes u32][body][index u16][depth u8][depth x sibling 32]
//            [signer u8-len + utf8 peer id][signature u8-len + bytes]
//
// Signed in batches: a node signs every step of a batch with one signature
// (signReceipts). The bodies are the leaves of a Merkle tree, leaf =
// SHA-256(LEAF_DOMAIN + body), node = SHA-256(NODE_DOMAIN + left + right),
// padded with all-zero leaves to 2^depth; the signature covers DOMAIN + depth +
// root. Each receipt carries its leaf's index and the sibling hashes from the
// leaf up (its path), so it stands alone: anyone folds the path back to the
// root and checks the one signature. One body alone is a tree of depth 0
// (the root is its leaf).
// `weights` is the SHA-256 of the hashes of the layers [start, end) the node
// says it computed with (weightsDigest), so a receipt also commits the node to
// the model it claims to run.

import { createHash } from "node:crypto";
import { LayerswarmError } from "../../errors.js";
import { Identity, verifySignature, verifySignatureSync } from "../identity.js";
import { DType, SESSION_BYTES, wireRound } from "./frames.js";
import { NUMERICS_VERSION } from "./version.js";

const DOMAIN = Buffer.from("layerswarm/receipt-root/2\n");
const LEAF_DOMAIN = Buffer.from("layerswarm/receipt-leaf/2\n");
const NODE_DOMAIN = Buffer.from("layerswarm/receipt-node/2\n");
const ROW_DOMAIN = Buffer.from("layerswarm/row/1\n");
export const RECEIPT_VERSION = 3; // 1: one signature per receipt, over its body; 2: no dtype
export const ROW_HASH_BYTES = 16;
export const ENTRY_BYTES = 4 + 1 + 2 * ROW_HASH_BYTES;
export const MAX_RECEIPT_ENTRIES = 4096; // one receipt covers at most this many rows
export const MAX_PATH = 16; // a batch signs at most 2^16 receipts
const MAX_SIGNER = 128; // a peer id's text (MAX of PeerIdText)
const MAX_SIGNATURE = 128;
const HASH_BYTES = 32;
const HEADER_BYTES = 1 + 2 + 1 + SESSION_BYTES + 1 + 4 + 4 + 32 + 4 + 4;
const EMPTY_LEAF = new Uint8Array(HASH_BYTES); // padding: no body hashes to it

// The most bytes a receipt of `entries` rows takes (frames.ts bounds extensions by it).
export function maxReceiptBytes(entries: number): number {
  return 4 + HEADER_BYTES + entries * ENTRY_BYTES + 2 + 1 + MAX_PATH * HASH_BYTES + 1 + MAX_SIGNER + 1 + MAX_SIGNATURE;
}

export const ROLLED_BACK = 1;

export interface ReceiptEntry {
  pos: number;
  flags: number; // ROLLED_BACK or 0
  input: Uint8Array; // ROW_HASH_BYTES: the row the node received at this position
  output: Uint8Array; // ROW_HASH_BYTES: the row it sent on
}

export interface ReceiptBody {
  numerics: number;
  dtype: DType; // how its output rows travel (f16 and bf16 round them): what a recomputation must round them to
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
  signature: Uint8Array; // over the root of its batch's tree (DOMAIN + depth + root)
  bytes: Uint8Array; // as signed and sent
  index: number; // its leaf in the batch's tree
  path: Uint8Array[]; // sibling hashes from its leaf up (32 bytes each; the tree's depth is their count)
  body: Uint8Array; // the body bytes (what the leaf hashes)
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
  out[o++] = b.dtype;
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

const sha = (...parts: Uint8Array[]): Buffer => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};
const leafHash = (body: Uint8Array) => sha(LEAF_DOMAIN, body);
const nodeHash = (l: Uint8Array, r: Uint8Array) => sha(NODE_DOMAIN, l, r);
const signedMessage = (depth: number, root: Uint8Array) => Buffer.concat([DOMAIN, Uint8Array.of(depth), root]);

// The root a leaf's path folds to: bit k of index says whether the leaf's
// subtree is the right (1) or left (0) child at height k.
function foldPath(leaf: Uint8Array, index: number, path: readonly Uint8Array[]): Uint8Array {
  let h = leaf;
  for (let k = 0; k < path.length; k++) h = (index >> k) & 1 ? nodeHash(path[k], h) : nodeHash(h, path[k]);
  return h;
}

// Signs many bodies with ONE signature (synchronous: the node's step path).
// Receipts come back in the order of the bodies; each one stands alone.
export function signReceipts(bodies: readonly ReceiptBody[], id: Identity): Receipt[] {
  if (bodies.length === 0) return [];
  if (bodies.length > 2 ** MAX_PATH) throw new LayerswarmError("BAD_ARGUMENT", `receipts: ${bodies.length} in one batch, at most ${2 ** MAX_PATH}`);
  const encoded = bodies.map(encodeBody);
  let depth = 0;
  while (1 << depth < encoded.length) depth++;
  // levels[k]: the hashes at height k, 2^(depth-k) of them
  const levels: Uint8Array[][] = [encoded.map(leafHash)];
  while (levels[0].length < 1 << depth) levels[0].push(EMPTY_LEAF);
  for (let k = 0; k < depth; k++) {
    const below = levels[k], up: Uint8Array[] = [];
    for (let i = 0; i < below.length; i += 2) up.push(nodeHash(below[i], below[i + 1]));
    levels.push(up);
  }
  const signature = id.signSync(signedMessage(depth, levels[depth][0]));
  const signer = Buffer.from(id.peerId, "utf8");
  return bodies.map((b, i) => {
    const body = encoded[i], path = levels.slice(0, depth).map((lv, k) => lv[(i >> k) ^ 1]);
    const bytes = Buffer.alloc(4 + body.length + 3 + depth * HASH_BYTES + 1 + signer.length + 1 + signature.length);
    let o = 0;
    bytes.writeUInt32LE(body.length, o), (o += 4);
    body.copy(bytes, o), (o += body.length);
    bytes.writeUInt16LE(i, o), (o += 2);
    bytes[o++] = depth;
    for (const p of path) bytes.set(p, o), (o += HASH_BYTES);
    bytes[o++] = signer.length;
    signer.copy(bytes, o), (o += signer.length);
    bytes[o++] = signature.length;
    bytes.set(signature, o);
    return { ...b, entries: b.entries.map((e) => ({ ...e })), signer: id.peerId, signature, bytes, index: i, path, body };
  });
}

// One body, signed alone (a tree of depth 0).
export async function signReceipt(b: ReceiptBody, id: Identity): Promise<Receipt> {
  return signReceipts([b], id)[0];
}

// Decodes a receipt and checks its layout, WITHOUT checking its signature
// (cheap, synchronous: for checks on the step path; openReceipt verifies).
// BAD_MESSAGE when malformed.
export function parseReceipt(bytes: Uint8Array): Receipt {
  const fail = (m: string): never => {
    throw new LayerswarmError("BAD_MESSAGE", `receipt: ${m}`);
  };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 4 + HEADER_BYTES) fail("truncated");
  const bodyLen = b.readUInt32LE(0);
  if (bodyLen < HEADER_BYTES || 4 + bodyLen + 3 > b.length) fail("truncated body");
  const body = b.subarray(4, 4 + bodyLen);
  let o = 0;
  if (body[o++] !== RECEIPT_VERSION) fail(`version ${body[0]}, this peer reads ${RECEIPT_VERSION}`);
  const numerics = body.readUInt16LE(o);
  o += 2;
  const dtype = body[o++];
  if (dtype > DType.BF16) fail(`unknown dtype ${dtype}`);
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
  const index = b.readUInt16LE(p), depth = b[p + 2];
  p += 3;
  if (depth > MAX_PATH) fail(`a path of ${depth} hashes, at most ${MAX_PATH}`);
  if (index >= 2 ** depth) fail(`leaf ${index} of a tree of depth ${depth}`);
  if (p + depth * HASH_BYTES + 2 > b.length) fail("truncated path");
  const path: Uint8Array[] = [];
  for (let k = 0; k < depth; k++, p += HASH_BYTES) path.push(new Uint8Array(b.subarray(p, p + HASH_BYTES)));
  const sl = b[p++];
  if (sl === 0 || sl > MAX_SIGNER || p + sl + 1 > b.length) fail("truncated signer");
  const signer = b.subarray(p, p + sl).toString("utf8");
  p += sl;
  const gl = b[p++];
  if (gl === 0 || gl > MAX_SIGNATURE || p + gl !== b.length) fail("bad signature length");
  const signature = new Uint8Array(b.subarray(p, p + gl));
  return { numerics, dtype: dtype as DType, session, hop, start, end, weights, seq, entries, signer, signature, bytes: new Uint8Array(bytes), index, path, body: new Uint8Array(body) };
}

// The root of the tree a receipt's path folds to (what its signature covers, with the depth).
export function receiptRoot(r: Receipt): Uint8Array {
  return foldPath(leafHash(r.body), r.index, r.path);
}

// Does the receipt's signature, over the root its path folds to, verify with its signer's key?
export async function receiptSigned(r: Receipt): Promise<boolean> {
  return verifySignature(r.signer, signedMessage(r.path.length, receiptRoot(r)), r.signature);
}
// The same, synchronously (Ed25519 signers only: false for any other key type).
export function receiptSignedSync(r: Receipt, root = receiptRoot(r)): boolean {
  return verifySignatureSync(r.signer, signedMessage(r.path.length, root), r.signature);
}

// Decodes and verifies a receipt. BAD_MESSAGE when malformed, FORBIDDEN when
// the signature does not verify with the key behind the signer's peer id.
export async function openReceipt(bytes: Uint8Array): Promise<Receipt> {
  const r = parseReceipt(bytes);
  if (!(await receiptSigned(r))) throw new LayerswarmError("FORBIDDEN", `receipt: the signature does not verify with ${r.signer.slice(0, 60)}'s key`);
  return r;
}

export const hashEqual = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

// A session's rows as one node's receipts state them: positions 0 .. n-1,
// each with its entry. The receipts must be the signer's whole history for
// that session and hop (numbered 0, 1, 2 ... with no gap: a missing receipt
// could hide a recomputation of earlier positions), from one signer, for one
// session, hop, layer range, weights, numerics and dtype. Rows only grow at
// the end; an earlier position is computed again only after an entry with
// ROLLED_BACK withdrew it, which withdraws every later position too (the
// rows after it were computed from it). BAD_MESSAGE otherwise.
export function claimedRows(receipts: readonly Receipt[]): Map<number, ReceiptEntry> {
  const rows = new Map<number, ReceiptEntry>();
  if (receipts.length === 0) return rows;
  const r0 = receipts[0];
  const sorted = [...receipts].sort((a, b) => a.seq - b.seq);
  let len = 0;
  for (let i = 0; i < sorted.length; i++) {
    const r = sorted[i];
    if (r.signer !== r0.signer || r.session !== r0.session || r.hop !== r0.hop || r.start !== r0.start || r.end !== r0.end || r.numerics !== r0.numerics || r.dtype !== r0.dtype || !hashEqual(r.weights, r0.weights))
      throw new LayerswarmError("BAD_MESSAGE", `receipt ${r.seq} is not about the same signer, session, stage, weights, numerics and dtype as receipt ${r0.seq}`);
    if (r.seq !== i) throw new LayerswarmError("BAD_MESSAGE", i > 0 && r.seq === sorted[i - 1].seq ? `two receipts numbered ${r.seq}` : `receipt ${i} is missing (the next is ${r.seq}): a history with gaps proves nothing`);
    for (const e of r.entries) {
      if (e.flags & ROLLED_BACK) {
        if (e.pos < len) {
          for (let p = e.pos; p < len; p++) rows.delete(p);
          len = e.pos;
        }
      } else {
        if (e.pos !== len) throw new LayerswarmError("BAD_MESSAGE", `receipt ${r.seq} computes position ${e.pos} where the next is ${len}${e.pos < len ? ", without withdrawing it first" : ""}`);
        rows.set(e.pos, e);
        len++;
      }
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
  // a receipt hashes rows as its receiver decodes them: rounded to the dtype it signed
  const sent = wireRound(out, r0.dtype);
  for (let pos = 0; pos < T; pos++)
    if (!hashEqual(rows.get(pos)!.output, rowHash(pos, sent.subarray(pos * p.dim, (pos + 1) * p.dim))))
      return { proven: true, signer: r0.signer, pos, layers: { start: r0.start, end: r0.end } };
  return { proven: false, reason: "every signed output row is what those layers compute" };
}

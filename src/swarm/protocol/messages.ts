// Control messages: JSON request/response pairs, one stream per request (the
// pattern of libp2p's ping protocol). Every field is validated on decoding
// (integers where integers belong, finite numbers, bounded strings and arrays);
// what fails is a BAD_MESSAGE error naming the field, and nothing partially
// decoded is ever used.

import { z } from "zod";
import { LayerswarmError, errorCode } from "../../errors.js";
import { ManifestSchema } from "../../format/manifest.js";
import { MAX_RECEIPT_ENTRIES, maxReceiptBytes } from "./receipt.js";
import { MAX_HOPS } from "./frames.js";
import { MAX_PROOF_BYTES } from "./proof.js";

export const MAX_CONTROL_BYTES = 256 * 1024;
export const MAX_NAME = 64;
export const MAX_ADDRS = 16;
export const MAX_ADDR = 256;
export const MAX_RANGES = 64;
export const MAX_LAYER_HASHES = 1024; // layers one record vouches for (no real model has half as many)

const uint = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const finiteNonNeg = z.number().nonnegative().finite();
export const PeerIdText = z.string().min(1).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/, "not a base58 peer id");
export const AddrText = z.string().min(1).max(MAX_ADDR);
export const SessionIdText = z.string().regex(/^[0-9a-f]{32}$/, "not a 128-bit hex session id");
export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "not a SHA-256 in lowercase hex");
// A receipt in base64, up to the largest one (MAX_RECEIPT_ENTRIES rows: about 200 KB as text, inside MAX_CONTROL_BYTES).
export const MAX_RECEIPT_BASE64 = 4 * Math.ceil(maxReceiptBytes(MAX_RECEIPT_ENTRIES) / 3);
export const ReceiptBase64 = z.string().min(4).max(MAX_RECEIPT_BASE64).regex(/^[A-Za-z0-9+/]+={0,2}$/, "not base64");
export const LayerRangeSchema = z.object({ start: uint, end: uint }).refine((r) => r.start < r.end, "a layer range needs start < end");

// What a node can do, so gateways need not guess. New abilities add flags
// here; a gateway uses one only where the node's record says so.
export const Capabilities = z.object({
  numerics: uint, // kernel numerics version: identical outputs need identical numbers
  backend: z.string().max(32), // "native-avx512", "native-generic", "ref"
  archs: z.array(z.string().max(32)).max(32),
  dtypes: z.array(z.string().max(16)).min(1).max(8), // "f32", "f16", "bf16"; newer peers may add more
  codecs: z.array(z.string().max(16)).max(8).optional(), // packings of the values it takes ("planes": frames.ts FLAG_PACKED); absent: none
  receipts: z.boolean(), // signs per-row hashes of what it computed (trust issue)
  rollback: z.boolean(), // truncates a session's cache to a position (speculation)
  verifySteps: z.boolean(), // runs multi-row verification steps (speculation)
});
export type Capabilities = z.infer<typeof Capabilities>;

// A node's record: who it is, what it serves, what it can do, how busy it is.
export const NodeRecord = z.object({
  peer: PeerIdText,
  addrs: z.array(AddrText).max(MAX_ADDRS),
  name: z.string().max(MAX_NAME),
  versions: z.array(uint).min(1).max(8),
  model: z.object({
    name: z.string().max(128), layers: z.number().int().min(1).max(100_000), dim: z.number().int().min(1).max(1 << 20),
    fingerprint: z.string().max(256), // the layout: architecture, shape, and a hash of the compute parameters and tensor shapes (no weights); DHT keys use it
    id: z.union([Sha256Hex, z.literal("")]), // the model's identity, a hash over its manifest (format/manifest.ts); "" when the node holds only part of the file and has no manifest
    layerHashes: z.array(z.object({ layer: uint, sha256: Sha256Hex })).max(MAX_LAYER_HASHES), // one per layer of `ranges`, from the bytes the node loaded
  }),
  ranges: z.array(LayerRangeSchema).max(MAX_RANGES),
  capabilities: Capabilities,
  policy: z.string().max(32), // "open", "allow-list", "swarm-key"; newer peers may add more
  maxRows: z.number().int().min(1).max(1 << 16).optional(), // rows per frame this node accepts
  capacity: z.object({ layersPerSec: finiteNonNeg, freeBytes: finiteNonNeg, kvBudgetBytes: finiteNonNeg, kvUsedBytes: finiteNonNeg, sessions: uint }),
  stats: z.object({ frames: uint, batches: uint, rows: uint, badFrames: uint, busyMs: finiteNonNeg, refused: uint, opened: uint.optional(), evicted: uint.optional(),
    // what it sent on to next stages and gateways: bytes on the wire, bytes the values had unpacked, rows
    wireBytes: uint.optional(), wireRawBytes: uint.optional(), wireRows: uint.optional(), packedFrames: uint.optional(),
    // receipts: steps signed, the time spent hashing rows and signing, steps refused for the previous stage's receipt
    receiptSteps: uint.optional(), receiptMs: finiteNonNeg.optional(), badReceipts: uint.optional() }),
  loading: z.object({ start: uint, end: uint, layers: uint, bytes: finiteNonNeg, totalBytes: finiteNonNeg }).optional(),
  links: z.array(z.object({ peer: PeerIdText, rttMs: finiteNonNeg })).max(64),
  // layers it is giving up (rebalancing): it serves its live sessions there but opens no new ones
  draining: z.array(LayerRangeSchema).max(MAX_RANGES).optional(),
  // the demand it saw: rows per second it ran lately (for placement; never for routes)
  demand: z.object({ rowsPerSec: finiteNonNeg }).optional(),
});
export type NodeRecord = z.infer<typeof NodeRecord>;

// What a gateway tells a node joining with --layers auto: who holds what, and
// what their records say of their throughput (tokens per second through their
// range) and the demand they saw (rows per second).
export const Holder = z.object({ peer: PeerIdText, ranges: z.array(LayerRangeSchema).max(MAX_RANGES), tokPerSec: finiteNonNeg.optional(), rowsPerSec: finiteNonNeg.optional(), addrs: z.array(AddrText).max(MAX_ADDRS).optional() }); // addrs: where to reach it (a moving node checks it)

export const Request = z.discriminatedUnion("type", [
  z.object({ type: z.literal("announce"), record: NodeRecord }), // node -> gateway: I serve these layers
  z.object({ type: z.literal("info") }), // gateway -> node: your record now
  z.object({ type: z.literal("holders") }), // node -> gateway: who holds what (for --layers auto)
  z.object({ type: z.literal("load"), start: uint, end: uint }), // gateway -> node: please also serve these layers
  z.object({ type: z.literal("drop"), session: SessionIdText }), // owner gateway -> node: free this session
  z.object({ type: z.literal("progress"), reqs: z.array(uint).max(4096), ms: z.array(finiteNonNeg).max(4096) }), // node -> gateway
  // owner gateway -> node: forget the session's positions >= pos (speculation's rejected rows; capability `rollback`).
  // Answered with "rolled-back": per hop the node serves that held positions >= pos, its receipt withdrawing them
  z.object({ type: z.literal("rollback"), session: SessionIdText, pos: uint }),
  z.object({ type: z.literal("manifest") }), // anyone -> node: the model's manifest (checked by the asker against a model id it trusts)
  // node -> the session's gateway: the stage at `hop` sent step `req` with a receipt that does not match
  // the rows it sent, or that is not signed by it (BAD_RECEIPT); `receipt` is that receipt, in base64
  // anyone -> gateway or node: an accusation (protocol/proof.ts), passed on by nodes, checked by gateways
  z.object({ type: z.literal("fraud-proof"), accusation: z.string().min(8).max(Math.ceil((MAX_PROOF_BYTES + 1024) / 3) * 4).regex(/^[A-Za-z0-9+/]+={0,2}$/, "not base64") }),
  z.object({ type: z.literal("dispute"), session: SessionIdText, req: uint, hop: z.number().int().nonnegative().max(MAX_HOPS - 1), receipt: ReceiptBase64 }),
]);
export type Request = z.infer<typeof Request>;

export const Response = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ok") }),
  z.object({ type: z.literal("record"), record: NodeRecord }),
  z.object({ type: z.literal("manifest"), manifest: ManifestSchema }),
  z.object({ type: z.literal("holders"), holders: z.array(Holder).max(4096) }),
  z.object({ type: z.literal("rolled-back"), receipts: z.array(ReceiptBase64).max(MAX_HOPS) }),
  z.object({ type: z.literal("error"), code: z.string().max(32), message: z.string().max(2000) }),
]);
export type Response = z.infer<typeof Response>;

export function encodeMessage(m: Request | Response): Uint8Array {
  const b = Buffer.from(JSON.stringify(m), "utf8");
  if (b.length > MAX_CONTROL_BYTES) throw new LayerswarmError("BAD_ARGUMENT", `control message of ${b.length} bytes exceeds ${MAX_CONTROL_BYTES}`);
  return b;
}

function decodeWith<T>(schema: z.ZodType<T>, b: Uint8Array, what: string): T {
  if (b.length > MAX_CONTROL_BYTES) throw new LayerswarmError("BAD_MESSAGE", `${what}: ${b.length} bytes exceeds ${MAX_CONTROL_BYTES}`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.length).toString("utf8"));
  } catch {
    throw new LayerswarmError("BAD_MESSAGE", `${what}: not valid JSON`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new LayerswarmError("BAD_MESSAGE", `${what}: ${i.path.join(".") || "(message)"}: ${i.message}`.slice(0, 300));
  }
  return r.data;
}

export const decodeRequest = (b: Uint8Array): Request => decodeWith(Request, b, "control request");
export const decodeResponse = (b: Uint8Array): Response => decodeWith(Response, b, "control response");

export function errorResponse(e: unknown): Response {
  const code = e instanceof LayerswarmError ? e.code : "INTERNAL";
  return { type: "error", code, message: ((e as Error)?.message ?? String(e)).slice(0, 2000) };
}

// The error a response carries, as a typed error (its code validated).
export function responseError(r: Extract<Response, { type: "error" }>, from: string): LayerswarmError {
  return new LayerswarmError(errorCode(r.code), `${from}: ${r.message}`);
}

// A record's claims checked against the model this process serves.
export function checkRecord(rec: NodeRecord, model: { layers: number; dim: number; fingerprint: string }, remotePeer: string): void {
  if (rec.peer !== remotePeer) throw new LayerswarmError("BAD_MESSAGE", `node record names peer ${rec.peer.slice(0, 16)}… but was sent by ${remotePeer.slice(0, 16)}…`);
  if (rec.model.layers !== model.layers || rec.model.dim !== model.dim || rec.model.fingerprint !== model.fingerprint)
    throw new LayerswarmError("BAD_MESSAGE", `node serves a model of another layout (${rec.model.layers} layers of ${rec.model.dim}, fingerprint ${rec.model.fingerprint.slice(0, 80)}; ours ${model.layers} of ${model.dim}, ${model.fingerprint})`);
  for (const r of [...rec.ranges, ...(rec.loading ? [rec.loading] : [])])
    if (r.end > model.layers) throw new LayerswarmError("BAD_MESSAGE", `node record: layer range [${r.start}, ${r.end}) is outside the model's ${model.layers} layers`);
  // a hash for every layer it serves, once, and for nothing else
  const hashed = new Set<number>();
  for (const h of rec.model.layerHashes) {
    if (hashed.has(h.layer)) throw new LayerswarmError("BAD_MESSAGE", `node record: two hashes for layer ${h.layer}`);
    if (!rec.ranges.some((r) => r.start <= h.layer && h.layer < r.end)) throw new LayerswarmError("BAD_MESSAGE", `node record: a hash for layer ${h.layer}, which it does not serve`);
    hashed.add(h.layer);
  }
  for (const r of rec.ranges)
    for (let i = r.start; i < r.end; i++) if (!hashed.has(i)) throw new LayerswarmError("BAD_MESSAGE", `node record: no hash for layer ${i}, which it serves`);
}

// Layers a record serves with other weights than ours (`ours[i]`: layer i's hash here).
export function differingLayers(rec: NodeRecord, ours: readonly string[]): { layer: number; theirs: string; ours: string }[] {
  return rec.model.layerHashes.filter((h) => h.sha256 !== ours[h.layer]).map((h) => ({ layer: h.layer, theirs: h.sha256, ours: ours[h.layer] ?? "" })).sort((a, b) => a.layer - b.layer);
}

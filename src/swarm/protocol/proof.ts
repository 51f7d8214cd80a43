// Fraud proofs on the wire, between gateways (through the nodes, which pass
// them on without judging them). A proof is a node's own signed receipts and
// the input rows it received; anyone holding the weights of those layers checks
// it by recomputation (checkFraudProof). An accusation wraps a proof with the
// signature of the gateway that sends it first: a gateway that receives a
// proof that does not hold ignores that accuser from then on, and bans nobody.
//
// A proof holds hidden rows, which invert to text: a gateway publishes only
// proofs it reproduced on synthetic input (random tokens), never the rows of a
// user's session (verify.ts).
//
//   proof       [v u8][dim u32][T u32][count u16][count x (len u32, receipt)][T*dim f32]
//   accusation  [v u8][accuser u8-len + utf8][signature u8-len][proof bytes u32-len + proof]
//               signature over ACCUSE_DOMAIN + proof bytes

import { createHash } from "node:crypto";
import { LayerswarmError } from "../../errors.js";
import { Identity, verifySignature } from "../identity.js";
import { FraudProof, openReceipt } from "./receipt.js";

const PROOF_VERSION = 1;
const ACCUSE_DOMAIN = Buffer.from("layerswarm/accusation/1\n");
export const MAX_PROOF_ROWS = 64;
export const MAX_PROOF_RECEIPTS = 64;
// What fits a control message (base64 inside JSON)
export const MAX_PROOF_BYTES = 160 * 1024;

export function encodeProof(p: FraudProof): Uint8Array {
  const T = p.input.length / p.dim;
  if (!Number.isInteger(T) || T < 1 || T > MAX_PROOF_ROWS) throw new LayerswarmError("BAD_ARGUMENT", `a proof of ${T} rows (1..${MAX_PROOF_ROWS})`);
  if (p.receipts.length < 1 || p.receipts.length > MAX_PROOF_RECEIPTS) throw new LayerswarmError("BAD_ARGUMENT", `a proof with ${p.receipts.length} receipts (1..${MAX_PROOF_RECEIPTS})`);
  const size = 1 + 4 + 4 + 2 + p.receipts.reduce((a, r) => a + 4 + r.bytes.length, 0) + p.input.byteLength;
  if (size > MAX_PROOF_BYTES) throw new LayerswarmError("BAD_ARGUMENT", `a proof of ${size} bytes exceeds ${MAX_PROOF_BYTES}`);
  const b = Buffer.alloc(size);
  let o = 0;
  b[o++] = PROOF_VERSION;
  b.writeUInt32LE(p.dim, o), (o += 4);
  b.writeUInt32LE(T, o), (o += 4);
  b.writeUInt16LE(p.receipts.length, o), (o += 2);
  for (const r of p.receipts) {
    b.writeUInt32LE(r.bytes.length, o), (o += 4);
    b.set(r.bytes, o), (o += r.bytes.length);
  }
  b.set(new Uint8Array(p.input.buffer, p.input.byteOffset, p.input.byteLength), o);
  return b;
}

// Decodes a proof and verifies every receipt's signature (BAD_MESSAGE when
// malformed, FORBIDDEN when a receipt does not verify). `dim`: this gateway's
// model width; a proof of another width is BAD_ARGUMENT (not about our model).
export async function decodeProof(bytes: Uint8Array, dim: number): Promise<FraudProof> {
  const fail = (m: string): never => {
    throw new LayerswarmError("BAD_MESSAGE", `fraud proof: ${m}`);
  };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length > MAX_PROOF_BYTES) fail(`${b.length} bytes, at most ${MAX_PROOF_BYTES}`);
  if (b.length < 11) fail("truncated");
  if (b[0] !== PROOF_VERSION) fail(`version ${b[0]}, this peer reads ${PROOF_VERSION}`);
  const d = b.readUInt32LE(1), T = b.readUInt32LE(5), count = b.readUInt16LE(9);
  if (d !== dim) throw new LayerswarmError("BAD_ARGUMENT", `fraud proof: rows of width ${d}, this model's are ${dim}`);
  if (T < 1 || T > MAX_PROOF_ROWS) fail(`${T} rows (1..${MAX_PROOF_ROWS})`);
  if (count < 1 || count > MAX_PROOF_RECEIPTS) fail(`${count} receipts (1..${MAX_PROOF_RECEIPTS})`);
  let o = 11;
  const raw: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    if (o + 4 > b.length) fail("truncated receipt length");
    const len = b.readUInt32LE(o);
    o += 4;
    if (o + len > b.length) fail(`receipt ${i} overruns the proof`);
    raw.push(b.subarray(o, o + len));
    o += len;
  }
  if (b.length - o !== T * d * 4) fail(`${b.length - o} bytes of rows, ${T} rows of width ${d} need ${T * d * 4}`);
  const input = new Float32Array(T * d);
  new Uint8Array(input.buffer).set(b.subarray(o));
  const receipts = await Promise.all(raw.map((r) => openReceipt(r)));
  return { receipts, dim: d, input };
}

export interface Accusation {
  accuser: string; // the gateway that sent the proof first
  proof: Uint8Array; // encodeProof's bytes
  bytes: Uint8Array; // the whole accusation, as signed and passed on
  id: string; // its hash (hex): for de-duplication
}

export async function signAccusation(proof: Uint8Array, id: Identity): Promise<Accusation> {
  const sig = await id.sign(Buffer.concat([ACCUSE_DOMAIN, proof]));
  const acc = Buffer.from(id.peerId, "utf8");
  const b = Buffer.alloc(1 + 1 + acc.length + 1 + sig.length + 4 + proof.length);
  let o = 0;
  b[o++] = PROOF_VERSION;
  b[o++] = acc.length;
  acc.copy(b, o), (o += acc.length);
  b[o++] = sig.length;
  b.set(sig, o), (o += sig.length);
  b.writeUInt32LE(proof.length, o), (o += 4);
  b.set(proof, o);
  return { accuser: id.peerId, proof, bytes: b, id: accusationId(b) };
}

export const accusationId = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

// BAD_MESSAGE when malformed, FORBIDDEN when the accuser's signature does not verify.
export async function openAccusation(bytes: Uint8Array): Promise<Accusation> {
  const fail = (m: string): never => {
    throw new LayerswarmError("BAD_MESSAGE", `accusation: ${m}`);
  };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 8 || b[0] !== PROOF_VERSION) fail("truncated or of another version");
  let o = 1;
  const al = b[o++];
  if (al === 0 || o + al + 1 > b.length) fail("truncated accuser");
  const accuser = b.subarray(o, o + al).toString("utf8");
  o += al;
  const sl = b[o++];
  if (sl === 0 || sl > 128 || o + sl + 4 > b.length) fail("truncated signature");
  const sig = b.subarray(o, o + sl);
  o += sl;
  const pl = b.readUInt32LE(o);
  o += 4;
  if (o + pl !== b.length) fail(`a proof of ${pl} bytes in ${b.length - o}`);
  const proof = new Uint8Array(b.subarray(o));
  if (!(await verifySignature(accuser, Buffer.concat([ACCUSE_DOMAIN, proof]), sig)))
    throw new LayerswarmError("FORBIDDEN", `accusation: the signature does not verify with ${accuser.slice(0, 60)}'s key`);
  return { accuser, proof, bytes: new Uint8Array(bytes), id: accusationId(bytes) };
}

// Hidden states on long-lived streams: binary frames (a new stream per step
// would cost a round trip on a WAN). Values are raw little-endian f32, f16 or
// bf16 behind a fixed header; extensions (the signed route, receipts) are
// type-length-value entries that a receiver skips when it does not know them.
// Everything read is validated before use; a malformed frame is a BAD_MESSAGE
// error and nothing of it is used.
//
//   STEP    [0x10][ver u8][dtype u8][flags u8][req u32][pos u32][T u32][dim u32]
//           [hop u8][session 16 bytes][ext bytes u32][ext TLVs][T*dim values]
//   RESULT  [0x11][ver u8][dtype u8][flags u8][req u32][pos u32][T u32][dim u32]
//           [session 16 bytes][ext bytes u32][ext TLVs][T*dim values]
//   ERROR   [0x12][ver u8][req u32][session 16 bytes][code u8-len + ascii][message u16-len + utf8]
//   TLV     [kind u8][len u32][bytes]
//
// Extensions: ROUTE_GRANT and ACCEPTS travel with a session's first frame
// (grant.ts; what each receiver unpacks). RECEIPT (receipt.ts), one per stage
// already passed, in hop order: a STEP frame at hop h carries the receipts of
// hops 0 .. h-1 for this step (the gateway, which sends hop 0, signs none), and
// a RESULT frame carries every hop's (the last stage appends its own). Each
// stage checks the receipt of the stage before against the rows it received
// (node/index.ts); the gateway gets the whole chain.
//
// Flags: LAST_ROW_ONLY (the last stage returns only the final row; its
// receipt still covers every row it computed), PACKED (the
// values are byte planes, each Huffman-coded or stored: planes.ts; lossless,
// so a link may use it or not without changing any result). A frame is
// packed only for a receiver that said it unpacks (the "planes" codec in its
// record; the gateway tells each stage what its next receiver takes, in the
// ACCEPTS extension of the session's first frame).

import { f32ToBf16, f32ToF16, F16_TO_F32, bf16ToF32 } from "../../tensor/f16.js";
import { ErrorCode, LayerswarmError, errorCode } from "../../errors.js";
import { PROTOCOL_VERSION, SUPPORTED_VERSIONS } from "./version.js";
import { checkPlanes, packPlanes, packedBound, unpackPlanes } from "./planes.js";

export enum FrameType { STEP = 0x10, RESULT = 0x11, ERROR = 0x12 }
export enum DType { F32 = 0, F16 = 1, BF16 = 2 }
export enum Ext { ROUTE_GRANT = 1, ROW_HASHES = 2, RECEIPT = 3, ACCEPTS = 16 } // 2: reserved
export const FLAG_LAST_ROW_ONLY = 1; // the last stage returns only the final row (prefill chunks)
export const FLAG_VERIFY = 2; // reserved: a multi-row verification step (speculation)
export const FLAG_PACKED = 4; // the values are packed byte planes (planes.ts)
const KNOWN_FLAGS = FLAG_LAST_ROW_ONLY | FLAG_VERIFY | FLAG_PACKED;

// Codecs a receiver takes, as the bits of an ACCEPTS entry and as names in a node's record.
export const CODEC_PLANES = 1;
export const CODECS: Record<string, number> = { planes: CODEC_PLANES };

export const MAX_HOPS = 64;
export const MAX_GRANT_BYTES = 64 * 1024; // a route grant's extension (and room for the small ones)
// A receipt of 512 rows with the longest Merkle path (receipt.ts maxReceiptBytes(512),
// 19.8 KB; receipt.test.ts checks it fits). Here as a number: receipt.ts imports this file.
export const MAX_RECEIPT_EXT_BYTES = 20 * 1024;
// Room for the grant and a chain of receipts for 512 rows over MAX_HOPS stages (1.3 MiB).
export const MAX_EXT_BYTES = MAX_GRANT_BYTES + MAX_HOPS * (5 + MAX_RECEIPT_EXT_BYTES);
export const SESSION_BYTES = 16;

export interface FrameLimits {
  dim: number; // the model's width: frames carry exactly this
  maxRows: number; // rows per frame
}

// The largest frame a peer may send: the rows, the header and the extensions.
export function maxFrameBytes(l: FrameLimits): number {
  return 64 + SESSION_BYTES + MAX_EXT_BYTES + packedBound(l.maxRows * l.dim * 4, 4);
}

export interface Extension {
  kind: number;
  data: Uint8Array;
}

export interface ResultFrame {
  req: number;
  session: string; // 32 hex characters
  pos: number;
  T: number;
  dim: number;
  dtype: DType;
  flags: number;
  ext: Extension[];
  hidden: Float32Array; // (T, dim)
  wireBytes?: number; // decoded frames: how many bytes the frame took on the wire
}

export interface StepFrame extends ResultFrame {
  hop: number; // index of the receiving stage in the route
}

export interface ErrorFrame {
  req: number;
  session: string;
  code: ErrorCode;
  message: string;
}

export function dtypeBytes(d: DType): number {
  return d === DType.F32 ? 4 : 2;
}

export function parseDType(s: string): DType {
  const m: Record<string, DType> = { f32: DType.F32, f16: DType.F16, bf16: DType.BF16 };
  const d = m[s.toLowerCase()];
  if (d === undefined) throw new LayerswarmError("BAD_ARGUMENT", `unknown hidden-state dtype "${s}" (f32, f16 or bf16)`);
  return d;
}

function writeValues(x: Float32Array, d: DType, out: Buffer, off: number): void {
  if (d === DType.F32) return void Buffer.from(x.buffer, x.byteOffset, x.byteLength).copy(out, off);
  for (let i = 0; i < x.length; i++) out.writeUInt16LE(d === DType.F16 ? f32ToF16(x[i]) : f32ToBf16(x[i]), off + 2 * i);
}

function readValues(b: Uint8Array, off: number, n: number, d: DType): Float32Array {
  const out = new Float32Array(n);
  if (d === DType.F32) new Uint8Array(out.buffer).set(b.subarray(off, off + 4 * n));
  else {
    const dv = new DataView(b.buffer, b.byteOffset + off, 2 * n);
    for (let i = 0; i < n; i++) {
      const h = dv.getUint16(2 * i, true);
      out[i] = d === DType.F16 ? F16_TO_F32[h] : bf16ToF32(h);
    }
  }
  return out;
}

const sessionBytes = (s: string): Buffer => {
  if (!/^[0-9a-f]{32}$/.test(s)) throw new LayerswarmError("BAD_ARGUMENT", `session id "${s.slice(0, 40)}" is not 32 hex characters`);
  return Buffer.from(s, "hex");
};

const extBytes = (ext: Extension[]) => ext.reduce((a, e) => a + 5 + e.data.length, 0);

function writeExt(b: Buffer, o: number, ext: Extension[]): number {
  b.writeUInt32LE(extBytes(ext), o);
  o += 4;
  for (const e of ext) {
    b[o] = e.kind;
    b.writeUInt32LE(e.data.length, o + 1);
    b.set(e.data, o + 5);
    o += 5 + e.data.length;
  }
  return o;
}

// The values as they travel: f32 bytes as they are (no copy), f16/bf16 converted.
function valueBytes(x: Float32Array, d: DType): Uint8Array {
  if (d === DType.F32) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const b = Buffer.allocUnsafe(2 * x.length);
  writeValues(x, d, b, 0);
  return b;
}

// pack: send the values as packed byte planes (only to a receiver that takes
// them), unless that is no smaller than the values as they are.
function encodeHidden(type: FrameType, f: ResultFrame, hop: number | undefined, pack: boolean): Uint8Array {
  const n = f.T * f.dim;
  if (f.hidden.length !== n) throw new LayerswarmError("BAD_ARGUMENT", `frame: hidden has ${f.hidden.length} values, T*dim is ${n}`);
  if (extBytes(f.ext) > MAX_EXT_BYTES) throw new LayerswarmError("BAD_ARGUMENT", `frame extensions exceed ${MAX_EXT_BYTES} bytes`);
  const packed = pack ? packPlanes(valueBytes(f.hidden, f.dtype), dtypeBytes(f.dtype)) : undefined;
  const values = packed && packed.length < n * dtypeBytes(f.dtype) ? packed : undefined;
  const flags = values ? f.flags | FLAG_PACKED : f.flags & ~FLAG_PACKED;
  const head = 20 + (hop === undefined ? 0 : 1) + SESSION_BYTES + 4 + extBytes(f.ext);
  const b = Buffer.allocUnsafe(head + (values ? values.length : n * dtypeBytes(f.dtype)));
  b[0] = type;
  b[1] = PROTOCOL_VERSION;
  b[2] = f.dtype;
  b[3] = flags;
  b.writeUInt32LE(f.req >>> 0, 4);
  b.writeUInt32LE(f.pos, 8);
  b.writeUInt32LE(f.T, 12);
  b.writeUInt32LE(f.dim, 16);
  let o = 20;
  if (hop !== undefined) b[o++] = hop;
  sessionBytes(f.session).copy(b, o);
  o = writeExt(b, o + SESSION_BYTES, f.ext);
  if (values) b.set(values, o);
  else writeValues(f.hidden, f.dtype, b, o);
  return b;
}

export const encodeStep = (f: StepFrame, pack = false): Uint8Array => encodeHidden(FrameType.STEP, f, f.hop, pack);
export const encodeResult = (f: ResultFrame, pack = false): Uint8Array => encodeHidden(FrameType.RESULT, f, undefined, pack);

export function encodeError(e: ErrorFrame): Uint8Array {
  const code = Buffer.from(e.code, "ascii"), msg = Buffer.from(e.message.slice(0, 1000), "utf8");
  const b = Buffer.alloc(2 + 4 + SESSION_BYTES + 1 + code.length + 2 + msg.length);
  b[0] = FrameType.ERROR;
  b[1] = PROTOCOL_VERSION;
  b.writeUInt32LE(e.req >>> 0, 2);
  sessionBytes(e.session).copy(b, 6);
  let o = 6 + SESSION_BYTES;
  b[o++] = code.length;
  code.copy(b, o);
  o += code.length;
  b.writeUInt16LE(msg.length, o);
  msg.copy(b, o + 2);
  return b;
}

class Reader {
  o = 0;
  constructor(readonly b: Uint8Array, readonly what: string) {}
  fail(msg: string): never {
    throw new LayerswarmError("BAD_MESSAGE", `${this.what}: ${msg}`);
  }
  need(n: number, field: string) {
    if (this.o + n > this.b.length) this.fail(`truncated at ${field} (offset ${this.o}, frame is ${this.b.length} bytes)`);
  }
  u8(f: string) { this.need(1, f); return this.b[this.o++]; }
  u16(f: string) { this.need(2, f); const v = this.b[this.o] | (this.b[this.o + 1] << 8); this.o += 2; return v; }
  u32(f: string) { this.need(4, f); const v = new DataView(this.b.buffer, this.b.byteOffset + this.o, 4).getUint32(0, true); this.o += 4; return v; }
  bytes(n: number, f: string) { this.need(n, f); const v = this.b.subarray(this.o, this.o + n); this.o += n; return v; }
  session() { return Buffer.from(this.bytes(SESSION_BYTES, "session id")).toString("hex"); }
}

export function frameType(b: Uint8Array): FrameType | undefined {
  const t = b[0];
  return t === FrameType.STEP || t === FrameType.RESULT || t === FrameType.ERROR ? t : undefined;
}

function version(r: Reader): void {
  const v = r.u8("version");
  if (!SUPPORTED_VERSIONS.includes(v)) r.fail(`protocol version ${v}; this peer speaks ${SUPPORTED_VERSIONS.join(", ")}`);
}

// A frame whose header and extensions are read and checked, and whose values
// are not yet unpacked: unpacking costs time and memory in proportion to the
// values, so a receiver first checks who sent the frame and for which session
// (decodeStepHead, authorize, then stepOf). The layout of packed values is
// checked here already (cheap), so a malformed frame is BAD_MESSAGE either way.
export interface StepHead extends Omit<StepFrame, "hidden"> {
  values: Uint8Array; // the frame's value bytes, as they came
  packed: boolean;
}
export type ResultHead = Omit<StepHead, "hop">;

function decodeHead(b: Uint8Array, type: FrameType, lim: FrameLimits, what: string): StepHead {
  const r = new Reader(b, what);
  if (r.u8("type") !== type) r.fail(`not a ${what}`);
  version(r);
  const dtype = r.u8("dtype");
  if (dtype > DType.BF16) r.fail(`unknown dtype ${dtype}`);
  const flags = r.u8("flags");
  if (flags & ~KNOWN_FLAGS) r.fail(`unknown flags ${flags & ~KNOWN_FLAGS}`);
  const req = r.u32("request id"), pos = r.u32("pos"), T = r.u32("T"), dim = r.u32("dim");
  if (dim !== lim.dim) r.fail(`hidden width ${dim}, the model's is ${lim.dim}`);
  if (T < 1 || T > lim.maxRows) r.fail(`${T} rows (1..${lim.maxRows} allowed)`);
  const hop = type === FrameType.STEP ? r.u8("hop") : 0;
  if (hop >= MAX_HOPS) r.fail(`hop ${hop} (routes have at most ${MAX_HOPS} hops)`);
  const session = r.session();
  const extLen = r.u32("extensions length");
  if (extLen > MAX_EXT_BYTES) r.fail(`${extLen} bytes of extensions (at most ${MAX_EXT_BYTES})`);
  const extEnd = r.o + extLen;
  r.need(extLen, "extensions");
  const ext: Extension[] = [];
  while (r.o < extEnd) {
    const kind = r.u8("extension kind"), len = r.u32("extension length");
    if (r.o + len > extEnd) r.fail(`extension ${kind} of ${len} bytes overruns the extensions`);
    ext.push({ kind, data: r.bytes(len, "extension") });
  }
  const n = T * dim, bytes = n * dtypeBytes(dtype);
  const values = b.subarray(r.o), packed = (flags & FLAG_PACKED) !== 0;
  if (packed) {
    if (values.length > packedBound(bytes, dtypeBytes(dtype))) r.fail(`packed payload of ${values.length} bytes for ${bytes} bytes of values`);
    checkPlanes(values, dtypeBytes(dtype), bytes, what);
  } else if (values.length !== bytes) r.fail(`payload of ${values.length} bytes, ${n} ${DType[dtype]} values need ${bytes}`);
  return { req, pos, T, dim, dtype: dtype as DType, flags: flags & ~FLAG_PACKED, hop, session, ext, values, packed, wireBytes: b.length };
}

// The values of a checked frame, unpacked (BAD_MESSAGE when packed planes do not inflate to them).
function hiddenOf(h: ResultHead, what: string): Float32Array {
  const n = h.T * h.dim, width = dtypeBytes(h.dtype);
  if (!h.packed) return readValues(h.values, 0, n, h.dtype); // finiteness is the receiver's check: an overflow is a step error, not a protocol violation
  const u = unpackPlanes(h.values, width, n * width, what); // a fresh buffer: f32 values are used in place
  return h.dtype === DType.F32 ? new Float32Array(u.buffer, u.byteOffset, n) : readValues(u, 0, n, h.dtype);
}

export const decodeStepHead = (b: Uint8Array, lim: FrameLimits): StepHead => decodeHead(b, FrameType.STEP, lim, "step frame");
export function decodeResultHead(b: Uint8Array, lim: FrameLimits): ResultHead {
  const { hop: _, ...h } = decodeHead(b, FrameType.RESULT, lim, "result frame");
  return h;
}
export function stepOf(h: StepHead): StepFrame {
  const { values: _, packed: __, ...f } = h;
  return { ...f, hidden: hiddenOf(h, "step frame") };
}
export function resultOf(h: ResultHead): ResultFrame {
  const { values: _, packed: __, ...f } = h;
  return { ...f, hidden: hiddenOf(h, "result frame") };
}

export const decodeStep = (b: Uint8Array, lim: FrameLimits): StepFrame => stepOf(decodeStepHead(b, lim));
export const decodeResult = (b: Uint8Array, lim: FrameLimits): ResultFrame => resultOf(decodeResultHead(b, lim));

export function decodeError(b: Uint8Array): ErrorFrame {
  const r = new Reader(b, "error frame");
  if (r.u8("type") !== FrameType.ERROR) r.fail("not an error frame");
  version(r);
  const req = r.u32("request id");
  const session = r.session();
  const code = Buffer.from(r.bytes(r.u8("code length"), "code")).toString("latin1");
  const msgLen = r.u16("message length");
  if (msgLen > 4000) r.fail(`message of ${msgLen} bytes`);
  const message = Buffer.from(r.bytes(msgLen, "message")).toString("utf8");
  if (r.o !== b.length) r.fail(`${b.length - r.o} trailing bytes`);
  return { req, session, code: errorCode(code), message };
}

// The index of the first value that is not finite, or -1.
export function firstNonFinite(x: Float32Array): number {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
  return -1;
}

export function extension(f: { ext: Extension[] }, kind: Ext): Uint8Array | undefined {
  return f.ext.find((e) => e.kind === kind)?.data;
}

// The receipts a frame carries, in hop order (receipt.ts parses them).
export function receiptsOf(f: { ext: Extension[] }): Uint8Array[] {
  return f.ext.filter((e) => e.kind === Ext.RECEIPT).map((e) => e.data);
}

// The values exactly as a receiver decodes them from a frame of dtype d: f32
// as they are, f16 and bf16 rounded to that type and back. What a receipt's
// output hashes cover, and what a node hands its own next slice.
export function wireRound(x: Float32Array, d: DType): Float32Array {
  if (d === DType.F32) return x;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = d === DType.F16 ? F16_TO_F32[f32ToF16(x[i])] : bf16ToF32(f32ToBf16(x[i]));
  return out;
}

// Wire format between gateway and nodes. Every message is length-prefixed on
// its stream (u32 LE length, then the message) and starts with a type byte.
// Hidden states travel as raw f32/f16/bf16 little-endian values behind a small
// binary header, never as JSON numbers. Everything read from the network is
// validated before use; a malformed message is a WireError and only closes the
// stream it arrived on.
//
//   CONTROL  [0x01][JSON]                      register, load, drop, info...
//   FORWARD  [0x02][ver u8][dtype u8][flags u8][req u32][pos u32][T u32][dim u32][hop u8]
//            [session u16 + utf8][route u32 + JSON][T*dim values]
//   RESULT   [0x03][ver u8][dtype u8][flags u8][req u32][pos u32][T u32][dim u32]
//            [session u16 + utf8][T*dim values]
//   ERROR    [0x04][JSON {req, session, code, message}]

import { f32ToBf16, f32ToF16, F16_TO_F32, bf16ToF32 } from "../tensor/f16.js";

export const WIRE_VERSION = 1;
export enum MsgType { CONTROL = 1, FORWARD = 2, RESULT = 3, ERROR = 4 }
export enum DType { F32 = 0, F16 = 1, BF16 = 2 }
export const FLAG_LAST_ROW_ONLY = 1; // the last stage returns only the final row (prefill chunks)

export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

export interface Hop {
  peer: string;
  addrs: string[];
  start: number;
  end: number;
}

export interface Route {
  hops: Hop[];
  replyTo: { peer: string; addrs: string[] };
}

// What a result carries; a forward frame adds where it is on its route.
export interface Result {
  req: number;
  session: string;
  pos: number;
  T: number;
  dim: number;
  dtype: DType;
  flags: number;
  hidden: Float32Array; // (T, dim)
}

export interface Forward extends Result {
  hop: number; // index in route.hops of the receiver
  route: Route;
}

export interface WireErrorMsg {
  req: number;
  session: string;
  code: string;
  message: string;
}

export function dtypeBytes(d: DType): number {
  return d === DType.F32 ? 4 : 2;
}

export function parseDType(s: string): DType {
  const m: Record<string, DType> = { f32: DType.F32, f16: DType.F16, bf16: DType.BF16 };
  const d = m[s.toLowerCase()];
  if (d === undefined) throw new WireError(`unknown hidden-state dtype "${s}" (f32, f16 or bf16)`);
  return d;
}

function encodeValues(x: Float32Array, d: DType, out: Buffer, off: number): void {
  if (d === DType.F32) {
    Buffer.from(x.buffer, x.byteOffset, x.byteLength).copy(out, off);
    return;
  }
  for (let i = 0; i < x.length; i++) out.writeUInt16LE(d === DType.F16 ? f32ToF16(x[i]) : f32ToBf16(x[i]), off + 2 * i);
}

function decodeValues(b: Uint8Array, off: number, n: number, d: DType): Float32Array {
  const out = new Float32Array(n);
  if (d === DType.F32) {
    new Uint8Array(out.buffer).set(b.subarray(off, off + 4 * n));
    return out;
  }
  const dv = new DataView(b.buffer, b.byteOffset + off, 2 * n);
  for (let i = 0; i < n; i++) {
    const h = dv.getUint16(2 * i, true);
    out[i] = d === DType.F16 ? F16_TO_F32[h] : bf16ToF32(h);
  }
  return out;
}

function encodeJSON(type: MsgType, obj: unknown): Uint8Array {
  const j = Buffer.from(JSON.stringify(obj), "utf8");
  const b = Buffer.alloc(1 + j.length);
  b[0] = type;
  j.copy(b, 1);
  return b;
}

export const encodeControl = (obj: unknown): Uint8Array => encodeJSON(MsgType.CONTROL, obj);
export const encodeError = (e: WireErrorMsg): Uint8Array => encodeJSON(MsgType.ERROR, e);

// The header FORWARD and RESULT share: type, version, dtype, flags, req, pos, T, dim.
const HEADER_BYTES = 1 + 3 + 16;
function writeHeader(b: Buffer, type: MsgType, h: { dtype: DType; flags: number; req: number; pos: number; T: number; dim: number }): number {
  b[0] = type;
  b[1] = WIRE_VERSION;
  b[2] = h.dtype;
  b[3] = h.flags;
  b.writeUInt32LE(h.req, 4);
  b.writeUInt32LE(h.pos, 8);
  b.writeUInt32LE(h.T, 12);
  b.writeUInt32LE(h.dim, 16);
  return HEADER_BYTES;
}

export function encodeForward(f: Forward): Uint8Array {
  const s = Buffer.from(f.session, "utf8"), r = Buffer.from(JSON.stringify(f.route), "utf8");
  const n = f.T * f.dim;
  if (f.hidden.length !== n) throw new WireError(`forward: hidden has ${f.hidden.length} values, T*dim is ${n}`);
  const b = Buffer.alloc(HEADER_BYTES + 1 + 2 + s.length + 4 + r.length + n * dtypeBytes(f.dtype));
  let o = writeHeader(b, MsgType.FORWARD, f);
  b[o++] = f.hop;
  b.writeUInt16LE(s.length, o); o += 2;
  s.copy(b, o); o += s.length;
  b.writeUInt32LE(r.length, o); o += 4;
  r.copy(b, o); o += r.length;
  encodeValues(f.hidden, f.dtype, b, o);
  return b;
}

export function encodeResult(r: Result): Uint8Array {
  const s = Buffer.from(r.session, "utf8");
  const n = r.T * r.dim;
  const b = Buffer.alloc(HEADER_BYTES + 2 + s.length + n * dtypeBytes(r.dtype));
  let o = writeHeader(b, MsgType.RESULT, r);
  b.writeUInt16LE(s.length, o); o += 2;
  s.copy(b, o); o += s.length;
  encodeValues(r.hidden, r.dtype, b, o);
  return b;
}

export interface Limits {
  maxDim: number; // the model's width: frames must carry exactly this
  maxRows: number; // rows per frame
}

class Reader {
  o = 0;
  constructor(readonly b: Uint8Array, readonly what: string) {}
  need(n: number, field: string) {
    if (this.o + n > this.b.length) throw new WireError(`${this.what}: truncated at ${field} (offset ${this.o}, message is ${this.b.length} bytes)`);
  }
  u8(f: string) { this.need(1, f); return this.b[this.o++]; }
  u16(f: string) { this.need(2, f); const v = this.b[this.o] | (this.b[this.o + 1] << 8); this.o += 2; return v; }
  u32(f: string) { this.need(4, f); const v = new DataView(this.b.buffer, this.b.byteOffset + this.o, 4).getUint32(0, true); this.o += 4; return v; }
  str(n: number, f: string) { this.need(n, f); const s = Buffer.from(this.b.buffer, this.b.byteOffset + this.o, n).toString("utf8"); this.o += n; return s; }
}

function header(r: Reader, lim: Limits) {
  const ver = r.u8("version");
  if (ver !== WIRE_VERSION) throw new WireError(`${r.what}: wire version ${ver}, this node speaks ${WIRE_VERSION}`);
  const dtype = r.u8("dtype");
  if (dtype > DType.BF16) throw new WireError(`${r.what}: unknown dtype ${dtype}`);
  const flags = r.u8("flags");
  const req = r.u32("request id"), pos = r.u32("pos"), T = r.u32("T"), dim = r.u32("dim");
  if (dim !== lim.maxDim) throw new WireError(`${r.what}: hidden width ${dim}, the model's is ${lim.maxDim}`);
  if (T < 1 || T > lim.maxRows) throw new WireError(`${r.what}: ${T} rows (1..${lim.maxRows} allowed)`);
  return { dtype: dtype as DType, flags, req, pos, T, dim };
}

function session(r: Reader): string {
  const n = r.u16("session length");
  if (n === 0 || n > 256) throw new WireError(`${r.what}: session id of ${n} bytes (1..256)`);
  return r.str(n, "session id");
}

function values(r: Reader, n: number, d: DType): Float32Array {
  const bytes = n * dtypeBytes(d);
  if (r.b.length - r.o !== bytes) throw new WireError(`${r.what}: payload of ${r.b.length - r.o} bytes, ${n} ${DType[d]} values need ${bytes}`);
  const v = decodeValues(r.b, r.o, n, d);
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) throw new WireError(`${r.what}: hidden value ${i} is not finite`);
  return v;
}

function isHop(h: unknown): h is Hop {
  const x = h as Hop;
  return !!x && typeof x.peer === "string" && Array.isArray(x.addrs) && x.addrs.every((a) => typeof a === "string") &&
    Number.isInteger(x.start) && Number.isInteger(x.end) && x.start >= 0 && x.end > x.start;
}

export function decodeForward(b: Uint8Array, lim: Limits): Forward {
  const r = new Reader(b, "forward frame");
  if (r.u8("type") !== MsgType.FORWARD) throw new WireError("not a forward frame");
  const h = header(r, lim);
  const hop = r.u8("hop");
  const s = session(r);
  const rl = r.u32("route length");
  if (rl > 65536) throw new WireError(`forward frame: route of ${rl} bytes`);
  let route: Route;
  const routeText = r.str(rl, "route");
  try {
    route = JSON.parse(routeText);
  } catch {
    throw new WireError("forward frame: route is not JSON");
  }
  if (!route || !Array.isArray(route.hops) || !route.hops.every(isHop) || hop >= route.hops.length || !route.replyTo || typeof route.replyTo.peer !== "string" || !Array.isArray(route.replyTo.addrs))
    throw new WireError("forward frame: malformed route");
  return { ...h, hop, session: s, route, hidden: values(r, h.T * h.dim, h.dtype) };
}

export function decodeResult(b: Uint8Array, lim: Limits): Result {
  const r = new Reader(b, "result frame");
  if (r.u8("type") !== MsgType.RESULT) throw new WireError("not a result frame");
  const h = header(r, lim);
  const s = session(r);
  return { ...h, session: s, hidden: values(r, h.T * h.dim, h.dtype) };
}

export function decodeJSON<T>(b: Uint8Array, what: string): T {
  try {
    return JSON.parse(Buffer.from(b.buffer, b.byteOffset + 1, b.length - 1).toString("utf8")) as T;
  } catch {
    throw new WireError(`${what}: not valid JSON`);
  }
}

// Splits a byte stream into length-prefixed messages, refusing oversize ones.
export class Deframer {
  private chunks: Uint8Array[] = [];
  private have = 0;
  constructor(readonly maxMessageBytes: number) {}
  push(chunk: Uint8Array): Uint8Array[] {
    this.chunks.push(chunk);
    this.have += chunk.length;
    const out: Uint8Array[] = [];
    for (;;) {
      if (this.have < 4) break;
      const head = this.peek(4);
      const len = head[0] | (head[1] << 8) | (head[2] << 16) | (head[3] * 2 ** 24);
      if (len > this.maxMessageBytes) throw new WireError(`message of ${len} bytes exceeds the limit of ${this.maxMessageBytes}`);
      if (len === 0) throw new WireError("empty message");
      if (this.have < 4 + len) break;
      const all = this.take(4 + len);
      out.push(all.subarray(4));
    }
    return out;
  }
  private peek(n: number): Uint8Array {
    if (this.chunks[0].length >= n) return this.chunks[0];
    return Buffer.concat(this.chunks).subarray(0, n);
  }
  private take(n: number): Uint8Array {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const msg = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    return msg;
  }
}

export function frame(msg: Uint8Array): Uint8Array {
  const b = Buffer.alloc(4 + msg.length);
  b.writeUInt32LE(msg.length, 0);
  b.set(msg, 4);
  return b;
}

// GGUF reader and writer (versions 2 and 3).
// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
// metadata key/values, tensor infos (name, dims innermost-first, type, offset),
// padding to general.alignment, then tensor data. The reader parses only the
// header; tensor bytes are read on demand by file offset, so a process holding
// layers [8, 16) never touches the bytes of the others.

import * as fs from "node:fs";
import { LayerswarmError } from "../errors.js";
import { rowBytes, typeInfo, typeName } from "./quant.js";

export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export type MetaScalar = number | bigint | string | boolean;
export type MetaValue = MetaScalar | MetaScalar[];

export interface TensorInfo {
  name: string;
  dims: number[]; // ggml order: dims[0] is the row length (innermost)
  type: number;
  offset: number; // absolute byte offset in the file
  bytes: number;
}

export interface GGUFFile {
  path: string;
  version: number;
  fileBytes: number;
  metadata: Map<string, MetaValue>;
  metaTypes: Map<string, GGUFValueType>;
  tensors: Map<string, TensorInfo>;
  dataOffset: number;
  alignment: number;
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const MAX_STRING = 1 << 26;
const MAX_ARRAY = 1 << 28;

// Sequential reader over a file descriptor with a growing window.
class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  constructor(private fd: number, readonly size: number, private path: string) {}

  private ensure(n: number, what: string): void {
    if (this.pos + n > this.size)
      throw new LayerswarmError("BAD_FILE", `${this.path}: truncated GGUF: needs ${n} bytes at offset ${this.pos} for ${what}, file has ${this.size}`);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(this.size - this.pos, Math.max(n, 1 << 20));
    const b = Buffer.alloc(len);
    fs.readSync(this.fd, b, 0, len, this.pos);
    this.buf = b;
    this.bufStart = this.pos;
  }
  private at(n: number, what: string): number {
    this.ensure(n, what);
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }
  u8(w: string) { const o = this.at(1, w); return this.buf.readUInt8(o); }
  i8(w: string) { const o = this.at(1, w); return this.buf.readInt8(o); }
  u16(w: string) { const o = this.at(2, w); return this.buf.readUInt16LE(o); }
  i16(w: string) { const o = this.at(2, w); return this.buf.readInt16LE(o); }
  u32(w: string) { const o = this.at(4, w); return this.buf.readUInt32LE(o); }
  i32(w: string) { const o = this.at(4, w); return this.buf.readInt32LE(o); }
  f32(w: string) { const o = this.at(4, w); return this.buf.readFloatLE(o); }
  f64(w: string) { const o = this.at(8, w); return this.buf.readDoubleLE(o); }
  u64(w: string): bigint { const o = this.at(8, w); return this.buf.readBigUInt64LE(o); }
  i64(w: string): bigint { const o = this.at(8, w); return this.buf.readBigInt64LE(o); }
  count(w: string, max: number): number {
    const v = this.u64(w);
    if (v > BigInt(max)) throw new LayerswarmError("BAD_FILE", `${this.path}: implausible ${w} ${v} at offset ${this.pos - 8} (corrupt file?)`);
    return Number(v);
  }
  str(w: string): string {
    const n = this.count(`length of ${w}`, MAX_STRING);
    const o = this.at(n, w);
    return this.buf.toString("utf8", o, o + n);
  }
}

function readValue(c: Cursor, type: number, key: string, path: string): MetaScalar {
  switch (type) {
    case GGUFValueType.UINT8: return c.u8(key);
    case GGUFValueType.INT8: return c.i8(key);
    case GGUFValueType.UINT16: return c.u16(key);
    case GGUFValueType.INT16: return c.i16(key);
    case GGUFValueType.UINT32: return c.u32(key);
    case GGUFValueType.INT32: return c.i32(key);
    case GGUFValueType.FLOAT32: return c.f32(key);
    case GGUFValueType.FLOAT64: return c.f64(key);
    case GGUFValueType.BOOL: return c.u8(key) !== 0;
    case GGUFValueType.STRING: return c.str(key);
    case GGUFValueType.UINT64: { const v = c.u64(key); return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
    case GGUFValueType.INT64: { const v = c.i64(key); return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
    default:
      throw new LayerswarmError("BAD_FILE", `${path}: metadata "${key}" has unknown value type ${type} at offset ${c.pos - 4}`);
  }
}

export interface ReadOptions {
  // The size of the whole file when `path` holds only a prefix of it (a header
  // being fetched over HTTP): tensors are checked against this size instead.
  fileBytes?: number;
}

export function readGGUF(path: string, opts: ReadOptions = {}): GGUFFile {
  let fd: number;
  try {
    fd = fs.openSync(path, "r");
  } catch (e) {
    throw new LayerswarmError("BAD_FILE", `${path}: cannot open model file (${(e as Error).message})`, { cause: e });
  }
  try {
    const have = fs.fstatSync(fd).size;
    const size = opts.fileBytes ?? have;
    const c = new Cursor(fd, have, path);
    if (have < 8 || c.u32("magic") !== MAGIC) throw new LayerswarmError("BAD_FILE", `${path}: not a GGUF file (bad magic)`);
    const version = c.u32("version");
    if (version !== 2 && version !== 3)
      throw new LayerswarmError("BAD_FILE", `${path}: GGUF version ${version} is not supported (only 2 and 3)`);
    const nTensors = c.count("tensor count", 1 << 20);
    const nKV = c.count("metadata count", 1 << 20);
    const metadata = new Map<string, MetaValue>();
    const metaTypes = new Map<string, GGUFValueType>();
    for (let i = 0; i < nKV; i++) {
      const key = c.str(`metadata key #${i}`);
      const type = c.u32(`type of ${key}`);
      if (type === GGUFValueType.ARRAY) {
        const et = c.u32(`element type of ${key}`);
        const n = c.count(`length of ${key}`, MAX_ARRAY);
        if (et === GGUFValueType.ARRAY) throw new LayerswarmError("BAD_FILE", `${path}: nested arrays in "${key}" are not supported`);
        const arr: MetaScalar[] = new Array(n);
        for (let j = 0; j < n; j++) arr[j] = readValue(c, et, key, path);
        metadata.set(key, arr);
        metaTypes.set(key, et);
      } else {
        metadata.set(key, readValue(c, type, key, path));
        metaTypes.set(key, type);
      }
    }
    const alignment = Number(metadata.get("general.alignment") ?? 32);
    if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0)
      throw new LayerswarmError("BAD_FILE", `${path}: general.alignment ${alignment} is invalid`);
    const infos: { name: string; dims: number[]; type: number; rel: number }[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = c.str(`tensor name #${i}`);
      const nd = c.u32(`dims of ${name}`);
      if (nd < 1 || nd > 4) throw new LayerswarmError("BAD_FILE", `${path}: tensor "${name}" has ${nd} dimensions`);
      const dims: number[] = [];
      for (let d = 0; d < nd; d++) dims.push(c.count(`dim ${d} of ${name}`, 2 ** 40));
      const type = c.u32(`type of ${name}`);
      const rel = c.count(`offset of ${name}`, 2 ** 50);
      infos.push({ name, dims, type, rel });
    }
    const dataOffset = Math.ceil(c.pos / alignment) * alignment;
    const tensors = new Map<string, TensorInfo>();
    for (const t of infos) {
      const info = typeInfo(t.type);
      if (!info) throw new LayerswarmError("UNSUPPORTED", `${path}: tensor "${t.name}" has unknown ggml type ${t.type}`);
      const nRows = t.dims.slice(1).reduce((a, b) => a * b, 1);
      if (t.dims[0] % info.blockSize !== 0)
        throw new LayerswarmError("BAD_FILE", `${path}: tensor "${t.name}" (${info.name}) has rows of ${t.dims[0]} elements, not a multiple of the block size ${info.blockSize}`);
      const bytes = rowBytes(t.type, t.dims[0]) * nRows;
      const offset = dataOffset + t.rel;
      if (offset + bytes > size)
        throw new LayerswarmError("BAD_FILE", `${path}: truncated: tensor "${t.name}" (${typeName(t.type)} ${t.dims.join("x")}) needs bytes up to ${offset + bytes}, file has ${size}`);
      tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, offset, bytes });
    }
    return { path, version, fileBytes: size, metadata, metaTypes, tensors, dataOffset, alignment };
  } finally {
    fs.closeSync(fd);
  }
}

// Tensor bytes read so far by this process, per file (lets tests check that a
// slice reads only its own layers).
export const tensorBytesRead = new Map<string, number>();

// Read one tensor's raw bytes (only those bytes) from the file.
export function readTensorBytes(file: GGUFFile, name: string): Uint8Array {
  const t = file.tensors.get(name);
  if (!t) throw new LayerswarmError("BAD_FILE", `${file.path}: missing tensor "${name}"`);
  // 64-byte aligned backing store so that kernels can use aligned loads.
  const buf = new Uint8Array(new ArrayBuffer(t.bytes + 64), 0, t.bytes);
  const fd = fs.openSync(file.path, "r");
  try {
    let done = 0;
    while (done < t.bytes) {
      const n = fs.readSync(fd, buf, done, Math.min(t.bytes - done, 1 << 28), t.offset + done);
      if (n <= 0) throw new LayerswarmError("BAD_FILE", `${file.path}: short read of tensor "${name}" at ${t.offset + done}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  tensorBytesRead.set(file.path, (tensorBytesRead.get(file.path) ?? 0) + t.bytes);
  return buf;
}

export function metaString(file: GGUFFile, key: string): string | undefined {
  const v = file.metadata.get(key);
  return typeof v === "string" ? v : undefined;
}

export function metaNumber(file: GGUFFile, key: string): number | undefined {
  const v = file.metadata.get(key);
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return undefined;
}

// ---------------------------------------------------------------- writer

export interface TypedMeta {
  type: GGUFValueType; // for arrays: the element type
  value: MetaValue;
}

export const meta = {
  u32: (v: number): TypedMeta => ({ type: GGUFValueType.UINT32, value: v }),
  i32: (v: number): TypedMeta => ({ type: GGUFValueType.INT32, value: v }),
  f32: (v: number): TypedMeta => ({ type: GGUFValueType.FLOAT32, value: v }),
  bool: (v: boolean): TypedMeta => ({ type: GGUFValueType.BOOL, value: v }),
  str: (v: string): TypedMeta => ({ type: GGUFValueType.STRING, value: v }),
  arr: (type: GGUFValueType, v: MetaScalar[]): TypedMeta => ({ type, value: v }),
};

export interface TensorToWrite {
  name: string;
  dims: number[]; // innermost first
  type: number;
  data: () => Uint8Array; // produced when written, so huge files stream
}

class Out {
  chunks: Buffer[] = [];
  len = 0;
  push(b: Buffer) { this.chunks.push(b); this.len += b.length; }
  u32(v: number) { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.push(b); }
  u64(v: number) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  str(s: string) { const b = Buffer.from(s, "utf8"); this.u64(b.length); this.push(b); }
  scalar(type: GGUFValueType, v: MetaScalar) {
    const b = Buffer.alloc(8);
    switch (type) {
      case GGUFValueType.UINT8: b.writeUInt8(Number(v)); return this.push(b.subarray(0, 1));
      case GGUFValueType.INT8: b.writeInt8(Number(v)); return this.push(b.subarray(0, 1));
      case GGUFValueType.UINT16: b.writeUInt16LE(Number(v)); return this.push(b.subarray(0, 2));
      case GGUFValueType.INT16: b.writeInt16LE(Number(v)); return this.push(b.subarray(0, 2));
      case GGUFValueType.UINT32: b.writeUInt32LE(Number(v)); return this.push(b.subarray(0, 4));
      case GGUFValueType.INT32: b.writeInt32LE(Number(v)); return this.push(b.subarray(0, 4));
      case GGUFValueType.FLOAT32: b.writeFloatLE(Number(v)); return this.push(b.subarray(0, 4));
      case GGUFValueType.FLOAT64: b.writeDoubleLE(Number(v)); return this.push(b);
      case GGUFValueType.BOOL: b.writeUInt8(v ? 1 : 0); return this.push(b.subarray(0, 1));
      case GGUFValueType.UINT64: b.writeBigUInt64LE(BigInt(v)); return this.push(b);
      case GGUFValueType.INT64: b.writeBigInt64LE(BigInt(v)); return this.push(b);
      case GGUFValueType.STRING: return this.str(String(v));
      default: throw new LayerswarmError("BAD_ARGUMENT", `cannot write metadata type ${type}`);
    }
  }
}

export function writeGGUF(path: string, metadata: Record<string, TypedMeta>, tensors: TensorToWrite[], alignment = 32): void {
  const h = new Out();
  h.u32(MAGIC);
  h.u32(3);
  h.u64(tensors.length);
  const entries = Object.entries(metadata);
  if (alignment !== 32 && !("general.alignment" in metadata)) entries.push(["general.alignment", meta.u32(alignment)]);
  h.u64(entries.length);
  for (const [k, m] of entries) {
    h.str(k);
    if (Array.isArray(m.value)) {
      h.u32(GGUFValueType.ARRAY);
      h.u32(m.type);
      h.u64(m.value.length);
      for (const v of m.value) h.scalar(m.type, v);
    } else {
      h.u32(m.type);
      h.scalar(m.type, m.value);
    }
  }
  let rel = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    h.str(t.name);
    h.u32(t.dims.length);
    for (const d of t.dims) h.u64(d);
    h.u32(t.type);
    h.u64(rel);
    const bytes = rowBytes(t.type, t.dims[0]) * t.dims.slice(1).reduce((a, b) => a * b, 1);
    sizes.push(bytes);
    rel += Math.ceil(bytes / alignment) * alignment;
  }
  const pad = (n: number) => Buffer.alloc((alignment - (n % alignment)) % alignment);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    const header = Buffer.concat(h.chunks);
    fs.writeSync(fd, header);
    fs.writeSync(fd, pad(header.length));
    tensors.forEach((t, i) => {
      const d = t.data();
      if (d.byteLength !== sizes[i])
        throw new LayerswarmError("BAD_ARGUMENT", `tensor "${t.name}": ${d.byteLength} bytes given, ${typeName(t.type)} ${t.dims.join("x")} needs ${sizes[i]}`);
      fs.writeSync(fd, d);
      fs.writeSync(fd, pad(d.byteLength));
    });
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path);
}

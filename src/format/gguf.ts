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
  // Called with every tensor's bytes as they are read (manifest.ts hashes
  // them: a node's layer hashes are those of the bytes it computes with).
  onTensorRead?: (name: string, bytes: Uint8Array) => void;
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const MAX_STRING = 1 << 26; // one metadata string (a chat template is ~10 KB)
const MAX_KEY = 65535; // GGUF: a key is at most 2^16 - 1 bytes
const MAX_TENSOR_NAME = 63; // ggml's GGML_MAX_NAME (64) counts the terminating NUL
const MAX_DIMS = 4; // GGML_MAX_DIMS
const MAX_ELEMENTS_PER_BYTE = 8; // no ggml type packs more (Q2_K: 3, IQ1_S: 5.1)
// The fewest bytes each structure can take: counts are bounded by the bytes left
// in the file before anything is allocated or looped over.
const MIN_KV_BYTES = 8 + 1 + 4 + 1; // key length, a 1-byte key, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8; // name length, a 1-byte name, n_dims, one dim, type, offset
const VALUE_BYTES: Partial<Record<GGUFValueType, number>> = {
  [GGUFValueType.UINT8]: 1, [GGUFValueType.INT8]: 1, [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT16]: 2, [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4, [GGUFValueType.INT32]: 4, [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.UINT64]: 8, [GGUFValueType.INT64]: 8, [GGUFValueType.FLOAT64]: 8,
  [GGUFValueType.STRING]: 8, // its length; the string itself may be empty
};

// A name or key from the file, quoted and cut short for an error message.
export function quoted(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 80) + "…" : s);
}

// Sequential reader over a file descriptor with a growing window. `have` bytes
// are on disk; `size` is the whole file's (more when only a prefix is here).
class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  constructor(private fd: number, readonly have: number, readonly size: number, readonly path: string) {}

  bad(m: string): LayerswarmError {
    return new LayerswarmError("BAD_FILE", `${this.path}: ${m}`);
  }
  private truncated(n: number, what: string): LayerswarmError {
    return this.bad(`truncated GGUF: needs ${n} bytes at offset ${this.pos} for ${what}, file has ${this.have}`);
  }
  private ensure(n: number, what: string): void {
    if (this.pos + n > this.have) throw this.truncated(n, what);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(this.have - this.pos, Math.max(n, 1 << 20));
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
  // A u64 count of items of at least `minBytes` each, at most `max`: refused
  // when the items cannot fit in the rest of the file. (Read as two u32s: no
  // BigInt on this path, which runs once per string of the vocabulary.)
  count(w: string, minBytes: number, max = Number.MAX_SAFE_INTEGER, index?: number): number {
    const at = this.pos;
    const what = () => (index === undefined ? w : `${w}[${index}]`); // built only for an error
    if (this.pos + 8 > this.have) throw this.truncated(8, what());
    const o = this.at(8, w);
    const hi = this.buf.readUInt32LE(o + 4), n = hi * 2 ** 32 + this.buf.readUInt32LE(o);
    const left = this.size - this.pos;
    if (hi >= 2 ** 21 || n > max)
      throw this.bad(`implausible ${what()} ${this.buf.readBigUInt64LE(o)} at offset ${at} (at most ${max}; truncated or corrupt file?)`);
    if (n * minBytes > left)
      throw this.bad(`implausible ${what()} ${n} at offset ${at}: ${n} × ${minBytes} bytes cannot fit in the ${left} bytes left in the file (truncated or corrupt file?)`);
    if (n * minBytes > this.have - this.pos) throw this.truncated(n * minBytes, what());
    return n;
  }
  str(w: string, max = MAX_STRING, index?: number): string {
    const n = this.count(`length of ${w}`, 1, max, index);
    const o = this.at(n, w);
    return this.buf.toString("utf8", o, o + n);
  }
}

// One value; `index` when it is an element of an array (for error messages).
function readValue(c: Cursor, type: number, key: string, index?: number): MetaScalar {
  switch (type) {
    case GGUFValueType.UINT8: return c.u8(key);
    case GGUFValueType.INT8: return c.i8(key);
    case GGUFValueType.UINT16: return c.u16(key);
    case GGUFValueType.INT16: return c.i16(key);
    case GGUFValueType.UINT32: return c.u32(key);
    case GGUFValueType.INT32: return c.i32(key);
    case GGUFValueType.FLOAT32: return c.f32(key);
    case GGUFValueType.FLOAT64: return c.f64(key);
    case GGUFValueType.BOOL: {
      const b = c.u8(key);
      if (b > 1) throw c.bad(`metadata ${quoted(key)}${index === undefined ? "" : `[${index}]`} holds the bool byte ${b} at offset ${c.pos - 1}, not 0 or 1`);
      return b === 1;
    }
    case GGUFValueType.STRING: return c.str(key, MAX_STRING, index);
    // beyond 2^53 kept exact as a bigint; refused where a number is read (metaNumber)
    case GGUFValueType.UINT64: { const v = c.u64(key); return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
    case GGUFValueType.INT64: { const v = c.i64(key); return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
    default:
      throw c.bad(`metadata ${quoted(key)} has unknown value type ${type} at offset ${c.pos - 4}`);
  }
}

export interface ReadOptions {
  // The size of the whole file when `path` holds only a prefix of it (a header
  // being fetched over HTTP): tensors are checked against this size instead.
  fileBytes?: number;
}

interface RawTensorInfo {
  name: string;
  dims: number[];
  type: number;
  rel: number; // offset inside the data section
  bytes: number;
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
    const c = new Cursor(fd, have, size, path);
    if (c.u32("magic") !== MAGIC) throw c.bad("not a GGUF file (bad magic)");
    const version = c.u32("version");
    if (version !== 2 && version !== 3) throw c.bad(`GGUF version ${version} is not supported (only 2 and 3)`);
    const nTensors = c.count("tensor count", MIN_TENSOR_INFO_BYTES);
    const nKV = c.count("metadata count", MIN_KV_BYTES);
    if (nTensors * MIN_TENSOR_INFO_BYTES + nKV * MIN_KV_BYTES > size - c.pos)
      throw c.bad(`implausible counts: ${nTensors} tensors and ${nKV} metadata entries cannot fit in the ${size - c.pos} bytes left in the file (corrupt file?)`);
    const { metadata, metaTypes } = readMetadata(c, nKV);
    const alignment = alignmentOf(c, metadata, metaTypes);
    const infos = readTensorInfos(c, nTensors);
    const dataOffset = Math.ceil(c.pos / alignment) * alignment;
    const tensors = placeTensors(c, infos, dataOffset, alignment);
    return { path, version, fileBytes: size, metadata, metaTypes, tensors, dataOffset, alignment };
  } finally {
    fs.closeSync(fd);
  }
}

function readMetadata(c: Cursor, nKV: number) {
  const metadata = new Map<string, MetaValue>();
  const metaTypes = new Map<string, GGUFValueType>();
  for (let i = 0; i < nKV; i++) {
    const at = c.pos;
    const key = c.str(`metadata key #${i}`, MAX_KEY);
    if (key.length === 0) throw c.bad(`metadata key #${i} at offset ${at} is empty`);
    if (metadata.has(key)) throw c.bad(`duplicate metadata key ${quoted(key)} (entry #${i} at offset ${at})`);
    const type = c.u32(`type of ${key}`);
    if (type === GGUFValueType.ARRAY) {
      const et = c.u32(`element type of ${key}`);
      if (et === GGUFValueType.ARRAY) throw c.bad(`nested arrays in ${quoted(key)} are not supported`);
      const each = VALUE_BYTES[et as GGUFValueType];
      if (each === undefined) throw c.bad(`metadata ${quoted(key)} is an array of unknown value type ${et} at offset ${c.pos - 4}`);
      const n = c.count(`length of ${key}`, each);
      const arr: MetaScalar[] = new Array(n);
      for (let j = 0; j < n; j++) arr[j] = readValue(c, et, key, j);
      metadata.set(key, arr);
      metaTypes.set(key, et);
    } else {
      metadata.set(key, readValue(c, type, key));
      metaTypes.set(key, type);
    }
  }
  return { metadata, metaTypes };
}

function alignmentOf(c: Cursor, metadata: Map<string, MetaValue>, metaTypes: Map<string, GGUFValueType>): number {
  const a = metadata.get("general.alignment");
  if (a === undefined) return 32;
  if (metaTypes.get("general.alignment") !== GGUFValueType.UINT32 || typeof a !== "number" || a < 8 || (a & (a - 1)) !== 0)
    throw c.bad(`general.alignment ${a} is invalid (a u32 power of two, at least 8)`);
  return a;
}

function readTensorInfos(c: Cursor, nTensors: number): RawTensorInfo[] {
  const infos: RawTensorInfo[] = [];
  const names = new Set<string>();
  const maxDim = Math.min(Number.MAX_SAFE_INTEGER, c.size * MAX_ELEMENTS_PER_BYTE);
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = c.str(`tensor name #${i}`, MAX_TENSOR_NAME);
    if (name.length === 0) throw c.bad(`tensor #${i} at offset ${at} has an empty name`);
    if (names.has(name)) throw c.bad(`duplicate tensor ${quoted(name)} (tensor #${i} at offset ${at})`);
    names.add(name);
    const nd = c.u32(`dims of ${name}`);
    if (nd < 1 || nd > MAX_DIMS) throw c.bad(`tensor ${quoted(name)} has ${nd} dimensions (1 to ${MAX_DIMS})`);
    const dims: number[] = [];
    for (let d = 0; d < nd; d++) {
      const v = c.u64(`dim ${d} of ${name}`);
      if (v === 0n || v > BigInt(maxDim))
        throw c.bad(`tensor ${quoted(name)} has dimension ${d} of ${v} elements (1 to ${maxDim} in a file of ${c.size} bytes)`);
      dims.push(Number(v));
    }
    const type = c.u32(`type of ${name}`);
    const info = typeInfo(type);
    if (!info) throw new LayerswarmError("UNSUPPORTED", `${c.path}: tensor ${quoted(name)} has unknown ggml type ${type}`);
    if (dims[0] % info.blockSize !== 0)
      throw c.bad(`tensor ${quoted(name)} (${info.name}) has rows of ${dims[0]} elements, not a multiple of the block size ${info.blockSize}`);
    // may round when huge, but never below the file's size, which is all we compare it with
    const bytes = dims.slice(1).reduce((a, b) => a * b, rowBytes(type, dims[0]));
    const rel = c.u64(`offset of ${name}`);
    if (rel > BigInt(c.size))
      throw c.bad(`tensor ${quoted(name)} has offset ${rel} in the data section, beyond the end of the file (${c.size} bytes; truncated or corrupt file?)`);
    infos.push({ name, dims, type, rel: Number(rel), bytes });
  }
  return infos;
}

// Each tensor: aligned, inside the data section, overlapping no other.
function placeTensors(c: Cursor, infos: RawTensorInfo[], dataOffset: number, alignment: number): Map<string, TensorInfo> {
  const size = c.size;
  const tensors = new Map<string, TensorInfo>();
  for (const t of infos) {
    const shape = `${typeName(t.type)} ${t.dims.join("x")}`;
    if (t.rel % alignment !== 0)
      throw c.bad(`tensor ${quoted(t.name)} has offset ${t.rel} in the data section, not a multiple of general.alignment ${alignment}`);
    const offset = dataOffset + t.rel;
    if (offset >= size)
      throw c.bad(`tensor ${quoted(t.name)} (${shape}) starts at byte ${offset}, beyond the end of the file (${size} bytes, data from byte ${dataOffset}; truncated or corrupt file?)`);
    if (offset + t.bytes > size)
      throw c.bad(`truncated: tensor ${quoted(t.name)} (${shape}) needs bytes up to ${offset + t.bytes}, file has ${size}`);
    tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, offset, bytes: t.bytes });
  }
  const byOffset = [...infos].sort((a, b) => a.rel - b.rel);
  for (let i = 1; i < byOffset.length; i++) {
    const p = byOffset[i - 1], t = byOffset[i];
    if (p.rel + p.bytes > t.rel)
      throw c.bad(`tensors ${quoted(p.name)} (data bytes [${p.rel}, ${p.rel + p.bytes})) and ${quoted(t.name)} (from ${t.rel}) overlap`);
  }
  return tensors;
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
  file.onTensorRead?.(name, buf);
  return buf;
}

export function metaString(file: GGUFFile, key: string): string | undefined {
  const v = file.metadata.get(key);
  return typeof v === "string" ? v : undefined;
}

// A number (of any numeric type); undefined when absent or not a number. A 64-bit
// integer beyond 2^53 is refused rather than rounded.
export function metaNumber(file: GGUFFile, key: string): number | undefined {
  const v = file.metadata.get(key);
  if (typeof v === "number") return v;
  if (typeof v === "bigint") throw new LayerswarmError("BAD_FILE", `${file.path}: metadata ${quoted(key)} is ${v}, beyond 2^53`);
  return undefined;
}

const INTEGER_TYPES = new Set([
  GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
  GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64,
]);

// An integer stored with an integer type; undefined when absent. A value of
// another type (a float, a string, an array) or beyond 2^53 is refused.
export function metaInteger(file: GGUFFile, key: string): number | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  const type = file.metaTypes.get(key)!;
  if (Array.isArray(v) || !INTEGER_TYPES.has(type))
    throw new LayerswarmError("BAD_FILE", `${file.path}: metadata ${quoted(key)} is ${Array.isArray(v) ? "an array of " : ""}${GGUFValueType[type] ?? type}, expected an integer`);
  return metaNumber(file, key);
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

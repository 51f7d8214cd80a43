// Kernel call traces: every call's inputs and outputs, recorded from one backend
// (the reference) and replayed on another build to compare every output bit.
// src/kernels/crossbuild.test.ts replays them in native/replay.cc built with other
// compilers and for another CPU architecture, and in the Node addon.
//
// Format (little-endian), after the 8-byte magic "LSTRACE1", records of
//   [op u8][tag u8] then by op:
//   MATRIX    id u32, type i32, rows i32, cols i32, bytes u64, ggml bytes
//   MATMUL    matrix id u32, T i32, x f32[T cols], out f32[T rows]
//   RMSNORM   T i32, n i32, eps f64, x f32[T n], w f32[n], out f32[T n]
//   SILU      n u32, g f32[n], u f32[n], out f32[n]
//   ATTENTION pos i32, H i32, KV i32, D i32, q f32[H D], k f32[(pos/16+1) 16 KV D] (blocked), v f32[(pos+1) KV D], out f32[H D]
//   ROPE      pos f64, ropeDim i32, base f64, factors u8 (+ f32[ropeDim/2]), cos f32[ropeDim/2], sin f32[ropeDim/2]
//   EXPF      n u32, x f32[n], out f32[n]
//   F64       fn u8 (0 expd, 1 logd, 2 sin, 3 cos), n u32, x f64[n], out f64[n]
// The tag says where a call came from (TAG_*), for the replay's summary.

import type { Kernels, Matrix } from "./index.js";
import { LayerswarmError } from "../errors.js";

export const enum Op { MATRIX = 1, MATMUL = 2, RMSNORM = 3, SILU = 4, ATTENTION = 5, ROPE = 6, EXPF = 7, F64 = 8 }
export const TAG_KERNEL = 0, TAG_MODEL = 1, TAG_LOGITS = 2;
export const MAGIC = "LSTRACE1";

export class TraceWriter {
  private chunks: Buffer[] = [Buffer.from(MAGIC, "latin1")];
  private ids = new WeakMap<Matrix, number>();
  private nextId = 0;
  records = 0;

  private head(op: Op, tag: number, extra: number): Buffer {
    this.records++;
    const b = Buffer.alloc(2 + extra);
    b[0] = op;
    b[1] = tag;
    return b;
  }
  private f32(a: Float32Array): void {
    this.chunks.push(Buffer.from(Float32Array.from(a).buffer));
  }
  private f64(a: Float64Array): void {
    this.chunks.push(Buffer.from(Float64Array.from(a).buffer));
  }

  matrix(m: Matrix, tag: number): number {
    const known = this.ids.get(m);
    if (known !== undefined) return known;
    if (m.data.length === 0) throw new LayerswarmError("BAD_ARGUMENT", "trace: a matrix without its ggml bytes (packed by a backend) cannot be recorded");
    const id = this.nextId++;
    const b = this.head(Op.MATRIX, tag, 24);
    b.writeUInt32LE(id, 2), b.writeInt32LE(m.type, 6), b.writeInt32LE(m.rows, 10), b.writeInt32LE(m.cols, 14);
    b.writeBigUInt64LE(BigInt(m.data.length), 18);
    this.chunks.push(b, Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length));
    this.ids.set(m, id);
    return id;
  }
  matmul(m: Matrix, x: Float32Array, T: number, out: Float32Array, tag: number): void {
    const id = this.matrix(m, tag);
    const b = this.head(Op.MATMUL, tag, 8);
    b.writeUInt32LE(id, 2), b.writeInt32LE(T, 6);
    this.chunks.push(b);
    this.f32(x.subarray(0, T * m.cols)), this.f32(out.subarray(0, T * m.rows));
  }
  rmsnorm(out: Float32Array, x: Float32Array, w: Float32Array, T: number, n: number, eps: number, tag: number): void {
    const b = this.head(Op.RMSNORM, tag, 16);
    b.writeInt32LE(T, 2), b.writeInt32LE(n, 6), b.writeDoubleLE(eps, 10);
    this.chunks.push(b);
    this.f32(x.subarray(0, T * n)), this.f32(w.subarray(0, n)), this.f32(out.subarray(0, T * n));
  }
  silu(g: Float32Array, u: Float32Array, out: Float32Array, n: number, tag: number): void {
    const b = this.head(Op.SILU, tag, 4);
    b.writeUInt32LE(n, 2);
    this.chunks.push(b);
    this.f32(g.subarray(0, n)), this.f32(u.subarray(0, n)), this.f32(out.subarray(0, n));
  }
  attention(out: Float32Array, q: Float32Array, kc: Float32Array, vc: Float32Array, pos: number, H: number, KV: number, D: number, tag: number): void {
    const b = this.head(Op.ATTENTION, tag, 16);
    b.writeInt32LE(pos, 2), b.writeInt32LE(H, 6), b.writeInt32LE(KV, 10), b.writeInt32LE(D, 14);
    this.chunks.push(b);
    const kvDim = KV * D;
    this.f32(q.subarray(0, H * D)), this.f32(kc.subarray(0, (Math.floor(pos / 16) + 1) * 16 * kvDim)), this.f32(vc.subarray(0, (pos + 1) * kvDim));
    this.f32(out.subarray(0, H * D));
  }
  rope(pos: number, ropeDim: number, base: number, factors: Float32Array | undefined, cos: Float32Array, sin: Float32Array, tag: number): void {
    const b = this.head(Op.ROPE, tag, 21);
    b.writeDoubleLE(pos, 2), b.writeInt32LE(ropeDim, 10), b.writeDoubleLE(base, 14), (b[22] = factors ? 1 : 0);
    this.chunks.push(b);
    if (factors) this.f32(factors.subarray(0, ropeDim / 2));
    this.f32(cos.subarray(0, ropeDim / 2)), this.f32(sin.subarray(0, ropeDim / 2));
  }
  expf(x: Float32Array, out: Float32Array, tag: number): void {
    const b = this.head(Op.EXPF, tag, 4);
    b.writeUInt32LE(x.length, 2);
    this.chunks.push(b);
    this.f32(x), this.f32(out);
  }
  f64fn(fn: 0 | 1 | 2 | 3, x: Float64Array, out: Float64Array, tag: number): void {
    const b = this.head(Op.F64, tag, 5);
    (b[2] = fn), b.writeUInt32LE(x.length, 3);
    this.chunks.push(b);
    this.f64(x), this.f64(out);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

// A backend that records every call of `inner` (whose matrices must keep their
// ggml bytes: the reference does) with the given tag.
export function recordingKernels(inner: Kernels, w: TraceWriter, tag: () => number): Kernels {
  return {
    name: `${inner.name}+trace`,
    threads: inner.threads,
    prepare: (m) => inner.prepare(m),
    matmul(m, x, T, out) {
      inner.matmul(m, x, T, out);
      w.matmul(m, x, T, out, tag());
    },
    rmsnorm(out, x, wt, T, n, eps) {
      const xin = Float32Array.from(x.subarray(0, T * n)); // out may be x
      inner.rmsnorm(out, x, wt, T, n, eps);
      w.rmsnorm(out, xin, wt, T, n, eps, tag());
    },
    attentionRow(out, oo, q, qo, kc, vc, pos, H, KV, D, att) {
      inner.attentionRow(out, oo, q, qo, kc, vc, pos, H, KV, D, att);
      w.attention(out.subarray(oo, oo + H * D), q.subarray(qo, qo + H * D), kc, vc, pos, H, KV, D, tag());
    },
    siluMul(g, u, n) {
      const gin = Float32Array.from(g.subarray(0, n));
      inner.siluMul(g, u, n);
      w.silu(gin, u, g, n, tag());
    },
    close: () => inner.close(),
  };
}

export interface TraceSummary {
  records: number;
  compared: Record<string, number>; // "op/tag" -> calls compared
  mismatches: string[]; // the first few, described
}

// Replays a trace on a Kernels backend (the Node addon) and compares every output bit
// (NaN equals NaN: their payloads are not specified). ROPE, EXPF and F64 records
// are the reference's own functions and are skipped here (the native harness checks them).
export function replayOnKernels(buf: Buffer, k: Kernels): TraceSummary {
  if (buf.toString("latin1", 0, 8) !== MAGIC) throw new LayerswarmError("BAD_FILE", "not a kernel trace");
  let o = 8;
  const f32 = (n: number) => {
    const a = new Float32Array(n);
    new Uint8Array(a.buffer).set(buf.subarray(o, o + 4 * n));
    o += 4 * n;
    return a;
  };
  const matrices = new Map<number, Matrix>();
  const s: TraceSummary = { records: 0, compared: {}, mismatches: [] };
  const check = (what: string, tag: number, got: Float32Array, want: Float32Array) => {
    const key = `${what}/${tag}`;
    s.compared[key] = (s.compared[key] ?? 0) + 1;
    for (let i = 0; i < want.length; i++) {
      const a = got[i], b = want[i];
      if (Object.is(a, b) || (a !== a && b !== b)) continue;
      if (s.mismatches.length < 10) s.mismatches.push(`${what} call ${s.compared[key]} (tag ${tag}): element ${i} is ${a}, the reference ${b}`);
      return;
    }
  };
  while (o < buf.length) {
    const op = buf[o], tag = buf[o + 1];
    o += 2;
    s.records++;
    if (op === Op.MATRIX) {
      const id = buf.readUInt32LE(o), type = buf.readInt32LE(o + 4), rows = buf.readInt32LE(o + 8), cols = buf.readInt32LE(o + 12);
      const n = Number(buf.readBigUInt64LE(o + 16));
      o += 24;
      matrices.set(id, k.prepare({ type, rows, cols, data: Uint8Array.from(buf.subarray(o, o + n)) }));
      o += n;
    } else if (op === Op.MATMUL) {
      const m = matrices.get(buf.readUInt32LE(o))!, T = buf.readInt32LE(o + 4);
      o += 8;
      const x = f32(T * m.cols), want = f32(T * m.rows), got = new Float32Array(T * m.rows);
      k.matmul(m, x, T, got);
      check("matmul", tag, got, want);
    } else if (op === Op.RMSNORM) {
      const T = buf.readInt32LE(o), n = buf.readInt32LE(o + 4), eps = buf.readDoubleLE(o + 8);
      o += 16;
      const x = f32(T * n), w = f32(n), want = f32(T * n), got = new Float32Array(T * n);
      k.rmsnorm(got, x, w, T, n, eps);
      check("rmsnorm", tag, got, want);
    } else if (op === Op.SILU) {
      const n = buf.readUInt32LE(o);
      o += 4;
      const g = f32(n), u = f32(n), want = f32(n);
      k.siluMul(g, u, n);
      check("silu", tag, g, want);
    } else if (op === Op.ATTENTION) {
      const pos = buf.readInt32LE(o), H = buf.readInt32LE(o + 4), KV = buf.readInt32LE(o + 8), D = buf.readInt32LE(o + 12);
      o += 16;
      const kvDim = KV * D;
      const q = f32(H * D), kc = f32((Math.floor(pos / 16) + 1) * 16 * kvDim), vc = f32((pos + 1) * kvDim), want = f32(H * D);
      const got = new Float32Array(H * D), att = new Float32Array(pos + 16);
      k.attentionRow(got, 0, q, 0, kc, vc, pos, H, KV, D, att);
      check("attention", tag, got, want);
    } else if (op === Op.ROPE) {
      const ropeDim = buf.readInt32LE(o + 8), factors = buf[o + 20];
      o += 21 + 4 * (ropeDim / 2) * (factors ? 3 : 2);
    } else if (op === Op.EXPF) {
      o += 4 + 8 * buf.readUInt32LE(o);
    } else if (op === Op.F64) {
      o += 5 + 16 * buf.readUInt32LE(o + 1);
    } else throw new LayerswarmError("BAD_FILE", `kernel trace: unknown record ${op} at byte ${o - 2}`);
  }
  return s;
}

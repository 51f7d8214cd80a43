import * as zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import { DType, FLAG_PACKED, decodeResult, decodeStep, decodeStepHead, encodeResult, encodeStep, stepOf } from "./frames.js";
import { minDeflated, packPlanes, unpackPlanes } from "./planes.js";

// Values shaped like hidden states (mostly small, a few large), and the awkward ones.
function hiddenLike(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const r = () => ((a = (a * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  const x = Float32Array.from({ length: n }, () => (r() - 0.5) * (r() < 0.01 ? 40 : 2));
  x.set([0, -0, 1e-40, -1e-42, 3.4e38, -3.4e38, Infinity, -Infinity, NaN], 0);
  return x;
}
const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString("hex");
const session = "0123456789abcdef0123456789abcdef";

describe("packed byte planes", () => {
  it("give back every bit of f32 and 16-bit values, and shrink hidden-state-like rows", () => {
    for (const width of [4, 2]) {
      const v = new Uint8Array(hiddenLike(64 * 512, 1).buffer).subarray(0, 64 * 512 * width);
      const p = packPlanes(v, width);
      expect(Buffer.compare(unpackPlanes(p, width, v.length, "t"), v)).toBe(0);
      expect(p.length).toBeLessThan(v.length);
    }
  });

  it("a packed frame decodes to exactly the values of the unpacked one (f32 and bf16), and says so in no flag", () => {
    const lim = { dim: 64, maxRows: 512 };
    for (const dtype of [DType.F32, DType.BF16]) {
      const f = { req: 7, session, pos: 3, T: 300, dim: 64, dtype, flags: 1, hop: 2, ext: [{ kind: 1, data: Uint8Array.of(1, 2, 3) }], hidden: hiddenLike(300 * 64, 2) };
      const plain = decodeStep(encodeStep(f), lim), packedBytes = encodeStep(f, true), packed = decodeStep(packedBytes, lim);
      expect(packedBytes[3] & FLAG_PACKED).toBe(FLAG_PACKED);
      expect(bits(packed.hidden)).toBe(bits(plain.hidden));
      expect(packed.flags).toBe(1);
      expect(packed.wireBytes).toBe(packedBytes.length);
      const r = decodeResult(encodeResult({ ...f, T: 1, hidden: f.hidden.subarray(0, 64) }, true), lim);
      expect(bits(r.hidden)).toBe(bits(plain.hidden.subarray(0, 64)));
    }
  });

  it("refuses packed values that do not unpack to exactly the frame's size, and unknown flags", () => {
    const n = 64 * 4;
    const bomb = zlib.deflateRawSync(Buffer.alloc(1 << 20), { level: 9 }); // a plane that would inflate to 1 MiB
    const head = (kind: number, len: number) => Uint8Array.of(kind, len & 255, (len >> 8) & 255, (len >> 16) & 255, len >>> 24);
    const planes = (k: number, last: Uint8Array[]) => Buffer.concat([Uint8Array.of(4), ...Array.from({ length: 3 }, () => [head(0, n / 4), new Uint8Array(n / 4)]).flat().slice(0, 2 * k), ...last]);
    expect(() => unpackPlanes(planes(3, [head(1, bomb.length), bomb]), 4, n, "step frame")).toThrow(/step frame: packed values: plane 3 does not inflate/);
    expect(() => unpackPlanes(planes(3, [head(0, n / 4 - 1), new Uint8Array(n / 4 - 1)]), 4, n, "f")).toThrow(/plane 3 holds 63 bytes, 64 expected/);
    expect(() => unpackPlanes(planes(3, [head(0, n / 4), new Uint8Array(n / 4 + 1)]), 4, n, "f")).toThrow(/1 trailing bytes/);
    expect(() => unpackPlanes(planes(3, [head(7, 1)]), 4, n, "f")).toThrow(/overruns|unknown kind/);
    expect(() => unpackPlanes(Uint8Array.of(2), 4, n, "f")).toThrow(/2 planes, 4 expected/);
    const f = encodeStep({ req: 1, session, pos: 0, T: 1, dim: 64, dtype: DType.F32, flags: 0, hop: 0, ext: [], hidden: new Float32Array(64) });
    f[3] = 64;
    expect(() => decodeStep(f, { dim: 64, maxRows: 4 })).toThrow(/unknown flags 64/);
  });

  // Review: deflate with back-references inflates ~1000:1 (an 8 KiB frame became 8 MiB and 87 ms);
  // our packer codes Huffman only (at least one bit a byte), so a plane under 1/8 of its size is refused unread.
  it("refuses a deflated plane smaller than 1/8 of its values (a deflate bomb), before inflating; the packer's all-zero planes pass", () => {
    const T = 64, lim = { dim: 64, maxRows: 512 }, n = T * 64;
    const zeros = { req: 1, session, pos: 0, T, dim: 64, dtype: DType.F32, flags: 0, hop: 0, ext: [], hidden: new Float32Array(n) };
    const ours = encodeStep(zeros, true);
    expect(ours[3] & FLAG_PACKED).toBe(FLAG_PACKED);
    expect(bits(decodeStep(ours, lim).hidden)).toBe(bits(zeros.hidden)); // the most our packer shrinks: still taken
    const z = zlib.deflateRawSync(Buffer.alloc(n), { level: 9 }); // inflates to the plane exactly, with back-references
    expect(z.length).toBeLessThan(minDeflated(n));
    const head = (kind: number, len: number) => Uint8Array.of(kind, len & 255, (len >> 8) & 255, (len >> 16) & 255, len >>> 24);
    const packed = Buffer.concat([Uint8Array.of(4), ...Array.from({ length: 4 }, () => [head(1, z.length), z]).flat()]);
    expect(() => unpackPlanes(packed, 4, 4 * n, "step frame")).toThrow(/plane 0 of \d+ bytes would inflate to 4096 \(more than 8:1/);
    const plain = encodeStep(zeros);
    const bomb = Buffer.concat([plain.subarray(0, plain.length - 4 * n), packed]);
    bomb[3] |= FLAG_PACKED;
    expect(() => decodeStepHead(bomb, lim)).toThrow(/step frame: packed values: plane 0 of \d+ bytes would inflate to 4096 \(more than 8:1/);
  });

  it("a frame's head is read without unpacking its values: planes that are well laid out but do not inflate fail only in stepOf", () => {
    const lim = { dim: 64, maxRows: 4 }, n = 64;
    const head = (kind: number, len: number) => Uint8Array.of(kind, len & 255, (len >> 8) & 255, (len >> 16) & 255, len >>> 24);
    const junk = new Uint8Array(minDeflated(n)).fill(0xff); // deflate block type 3: invalid
    const plain = encodeStep({ req: 5, session, pos: 2, T: 1, dim: 64, dtype: DType.F32, flags: 0, hop: 1, ext: [], hidden: new Float32Array(n) });
    const f = Buffer.concat([plain.subarray(0, plain.length - 4 * n), Uint8Array.of(4), ...Array.from({ length: 4 }, () => [head(1, junk.length), junk]).flat()]);
    f[3] |= FLAG_PACKED;
    const h = decodeStepHead(f, lim);
    expect([h.req, h.session, h.pos, h.hop, h.T]).toEqual([5, session, 2, 1, 1]);
    expect(() => stepOf(h)).toThrow(/step frame: packed values: plane 0 does not inflate to 64 bytes/);
  });
});

import * as zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import { DType, FLAG_PACKED, decodeResult, decodeStep, encodeResult, encodeStep } from "./frames.js";
import { packPlanes, unpackPlanes } from "./planes.js";

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
});

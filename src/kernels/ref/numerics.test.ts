// Accuracy of our transcendental functions (numerics.ts) against V8's Math.*:
// within 1 ulp of f32 everywhere we sweep, and almost always equal. (That they
// give the same bits in every build is crossbuild.test.ts's job.)

import { describe, expect, it } from "vitest";
import { TRIG_MAX, cosf, expd, expf, logd, powf, sinf } from "./numerics.js";
import { ropeFreqs, ropeTable } from "./ops.js";

const fr = Math.fround;
const i32 = new Int32Array(1), f32 = new Float32Array(i32.buffer);
function ordered(x: number): number { // f32 -> integer, monotone, adjacent f32 differ by 1
  f32[0] = x;
  return i32[0] < 0 ? -(i32[0] & 0x7fffffff) : i32[0];
}
function ulps(a: number, b: number): number {
  if (a !== a || b !== b) return a !== a && b !== b ? 0 : Infinity;
  return Math.abs(ordered(a) - ordered(b));
}

interface Stats { n: number; differ: number; max: number; worst: number }
function sweep(xs: Iterable<number>, ours: (x: number) => number, theirs: (x: number) => number): Stats {
  const s: Stats = { n: 0, differ: 0, max: 0, worst: NaN };
  for (const x of xs) {
    const d = ulps(ours(x), fr(theirs(x)));
    s.n++;
    if (d > 0) s.differ++;
    if (d > s.max) (s.max = d), (s.worst = x);
  }
  return s;
}
// every `step`-th f32 bit pattern with a value in [lo, hi]
function* f32s(lo: number, hi: number, step: number): Generator<number> {
  for (let b = 0; b < 0x7f800000; b += step) {
    i32[0] = b;
    const v = f32[0];
    if (v <= hi && v >= lo) yield v;
    if (-v <= hi && -v >= lo) yield -v;
  }
}
const report = (name: string, s: Stats) =>
  console.log(`${name}: ${s.n} inputs, ${s.differ} differ from fround(Math.*) (${((100 * s.differ) / s.n).toFixed(5)}%), max ${s.max} ulp (at ${s.worst})`);

describe("our exp, sin, cos, pow against Math.*", () => {
  it("expf: every 97th f32 in [-104, 89] within 1 ulp of fround(Math.exp)", () => {
    const s = sweep(f32s(-104, 89, 97), expf, Math.exp);
    report("expf", s);
    expect(s.max).toBeLessThanOrEqual(1);
    expect(s.differ / s.n).toBeLessThan(1e-4);
    for (const [x, want] of [[0, 1], [-0, 1], [Infinity, Infinity], [-Infinity, 0], [89, Infinity], [1000, Infinity], [-104, 0], [-1000, 0]] as const)
      expect(expf(x), `expf(${x})`).toBe(want);
    expect(expf(NaN)).toBeNaN();
    expect(expf(1)).toBe(fr(Math.E));
  });

  it("sin and cos of f32 angles within 1 ulp of fround(Math.sin/cos), up to 2^20; NaN beyond", () => {
    for (const [name, ours, theirs] of [["sinf", sinf, Math.sin], ["cosf", cosf, Math.cos]] as const) {
      const s = sweep(f32s(0, TRIG_MAX, 211), ours, theirs);
      report(name, s);
      expect(s.max, name).toBeLessThanOrEqual(1);
      expect(s.differ / s.n, name).toBeLessThan(1e-4);
    }
    expect(sinf(0)).toBe(0);
    expect(cosf(0)).toBe(1);
    expect(sinf(2 * TRIG_MAX)).toBeNaN();
    expect(cosf(NaN)).toBeNaN();
  });

  it("pow for RoPE frequencies and log/exp in binary64", () => {
    let max = 0, differ = 0, n = 0;
    for (const base of [10000, 500000, 1000000, 1e4 * 8, 3.5, 1.0001])
      for (let i = 0; i < 256; i++) {
        const e = fr(fr(2 * i) / 256);
        const d = ulps(powf(base, e), fr(Math.pow(base, e)));
        n++;
        if (d) differ++;
        max = Math.max(max, d);
      }
    console.log(`powf: ${n} RoPE-like (base, exponent) pairs, ${differ} differ from fround(Math.pow), max ${max} ulp`);
    expect(max).toBeLessThanOrEqual(1);
    expect(powf(10000, 0)).toBe(1);
    expect(logd(1)).toBe(0);
    expect(logd(0)).toBeNaN();
    expect(logd(-1)).toBeNaN();
    // binary64 accuracy: relative error within a few units in the last place
    for (let x = 1e-300; x < 1e300; x *= 1234.5) expect(Math.abs(logd(x) - Math.log(x)), `log ${x}`).toBeLessThanOrEqual(4e-16 * Math.max(1, Math.abs(Math.log(x))));
    for (let x = -700; x < 700; x += 0.731) expect(Math.abs(expd(x) / Math.exp(x) - 1), `exp ${x}`).toBeLessThan(1e-15);
  });

  it("RoPE tables use them, and refuse angles beyond 2^20 by name", () => {
    const c = new Float32Array(32), s = new Float32Array(32);
    ropeTable(1000, 64, 10000, undefined, c, s);
    const f = ropeFreqs(64, 10000, undefined);
    for (let i = 0; i < 32; i++) {
      expect(c[i]).toBe(cosf(fr(1000 * f[i])));
      expect(s[i]).toBe(sinf(fr(1000 * f[i])));
    }
    expect(() => ropeTable(2 ** 21, 64, 10000, undefined, c, s)).toThrow(/RoPE angle .* beyond the 1048576/);
  });
});

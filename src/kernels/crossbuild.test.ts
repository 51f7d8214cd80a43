// The same bits on every machine: exact audits ban a node whose hidden states
// differ by one bit, so every build of the kernels must reproduce the reference
// (kernels/ref, plain IEEE arithmetic in JavaScript) bit for bit, on every
// kernel and on whole-model forwards.
//
// A trace of reference kernel calls (kernels/trace.ts) is recorded: every weight
// type at several batch sizes, attention, norms, SiLU on extreme values, sweeps
// of exp/log/sin/cos, RoPE tables, and whole forwards (prefill, greedy decode,
// logits) of stories260K and of synthetic quantised models. It is replayed
//   - on the Node addon (g++; this file runs twice in `npm test`: with AVX-512,
//     and with LAYERSWARM_NO_AVX512=1 for the generic build),
//   - on native/replay.cc built with clang (generic and AVX-512 when the CPU has it),
//   - on native/replay.cc built for aarch64 (Debian's cross compiler, static) under qemu-user,
// with binding.gyp's compiler flags, and every output is compared bit for bit.
// In CI every build must run; elsewhere a missing tool skips its build, loudly.

import { spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GGMLType } from "../format/quant.js";
import { matrix, rand } from "../testing/kernels.js";
import { synthesize, SHAPES } from "../format/synth.js";
import { Model } from "../model/model.js";
import { loadRopeFreqs } from "../model/weights.js";
import { REPO, STORIES_GGUF } from "../testing/shared.js";
import { Kernels, refKernels } from "./index.js";
import { nativeKernels, nativeUnavailableReason } from "./native/index.js";
import { COS_C, EXP_C, INV_PIO2, LN2_HI, LN2_LO, LOG2E, LOG_C, PIO2_1, PIO2_2, PIO2_2T, ROUND, SIN_C, SQRT2, expd, expf, logd, sincosd, toBits } from "./ref/numerics.js";
import { kIndex, ropeTable } from "./ref/ops.js";
import { TAG_KERNEL, TAG_LOGITS, TAG_MODEL, TraceWriter, recordingKernels, replayOnKernels } from "./trace.js";

const CI = !!process.env.CI;


// ------------------------------------------------------------------ the trace

function kernelCalls(w: TraceWriter): void {
  const k = recordingKernels(refKernels(), w, () => TAG_KERNEL);
  const shapes: [number, number, number][] = [
    [GGMLType.F32, 37, 172], [GGMLType.F16, 50, 64], [GGMLType.BF16, 16, 40], [GGMLType.Q8_0, 70, 96], [GGMLType.Q4_0, 33, 128],
    [GGMLType.Q4_1, 20, 256], [GGMLType.Q5_0, 20, 256], [GGMLType.Q5_1, 20, 256], [GGMLType.IQ4_NL, 20, 256],
    [GGMLType.Q2_K, 20, 512], [GGMLType.Q3_K, 20, 512], [GGMLType.Q4_K, 40, 512], [GGMLType.Q5_K, 20, 512], [GGMLType.Q6_K, 24, 256], [GGMLType.IQ4_XS, 20, 512],
  ];
  for (const [type, rows, cols] of shapes) {
    const m = matrix(type, rows, cols, rows * 31 + cols);
    for (const T of [1, 3, 9]) k.matmul(m, new Float32Array(T * cols).map(rand(T + cols)), T, new Float32Array(T * rows));
  }
  const r = rand(3);
  for (const [T, n] of [[3, 300], [1, 64], [5, 17]]) {
    const x = new Float32Array(T * n).map(() => r() * 4), wt = new Float32Array(n).map(r);
    k.rmsnorm(new Float32Array(T * n), x, wt, T, n, 1e-5);
  }
  // SiLU over ordinary and extreme values: e^-v overflows, underflows, infinities, zeros, subnormals, NaN
  const special = [0, -0, 1e-45, -1e-45, 1e-38, 88, 89, 89.5, 103, 104, 105, 1000, Infinity, NaN];
  const g = new Float32Array(40000).map((_, i) => (i < 2 * special.length ? (i % 2 ? -1 : 1) * special[i >> 1] : r() * 30));
  k.siluMul(g, new Float32Array(40000).map(r), 40000);
  for (const [H, KV, D, pos] of [[8, 4, 16, 0], [8, 2, 64, 37], [32, 8, 64, 300], [4, 4, 24, 17]]) {
    const ra = rand(H * 7 + pos), kvDim = KV * D, cap = (Math.floor(pos / 16) + 1) * 16;
    const kc = new Float32Array(cap * kvDim), vc = new Float32Array(cap * kvDim).map(ra);
    for (let t = 0; t <= pos; t++) for (let e = 0; e < kvDim; e++) kc[kIndex(t, e, kvDim)] = ra() * 20; // wide scores: deep exp tails
    const q = new Float32Array(H * D).map(ra);
    k.attentionRow(new Float32Array(H * D), 0, q, 0, kc, vc, pos, H, KV, D, new Float32Array(cap));
  }
}

function functionSweeps(w: TraceWriter): void {
  const r = rand(11);
  // expf: a dense ramp over [-110, 95], random f32 bit patterns in that range, and special values
  const xs: number[] = [0, -0, Infinity, -Infinity, NaN, -104, -103.97, 88.72, 88.73, 89, 1e-45, -1e-45, 1e-30];
  for (let i = 0; i < 200000; i++) xs.push(Math.fround(-110 + (205 * i) / 200000));
  const bits = new Uint32Array(1), f = new Float32Array(bits.buffer);
  while (xs.length < 400000) {
    bits[0] = Math.floor((r() * 0.5 + 0.5) * 2 ** 32);
    if (Math.abs(f[0]) < 110) xs.push(f[0]);
  }
  const x32 = Float32Array.from(xs);
  w.expf(x32, x32.map(expf), TAG_KERNEL);
  const sweep = (n: number, gen: (i: number) => number) => Float64Array.from({ length: n }, (_, i) => gen(i));
  const ex = sweep(50000, () => r() * 700);
  w.f64fn(0, ex, ex.map(expd), TAG_KERNEL);
  const lx = sweep(50000, (i) => (i < 5 ? [1, 2, 10000, 500000, 1e6][i] : Math.exp(r() * 700)));
  w.f64fn(1, lx, lx.map(logd), TAG_KERNEL);
  // sin/cos: the whole range, small angles, and f32 values next to multiples of pi/2 (the hard cases)
  const tx = sweep(150000, (i) => {
    if (i < 50000) return r() * 1048576;
    if (i < 100000) return r() * 8;
    const k = Math.round(Math.abs(r()) * 600000);
    return Math.fround(k * (PIO2_1 + PIO2_2)) + (i % 3) * 2 ** (Math.floor(Math.log2(Math.max(1, k))) - 22);
  });
  const sc = new Float64Array(2);
  w.f64fn(2, tx, tx.map((x) => (sincosd(x, sc), sc[0])), TAG_KERNEL);
  w.f64fn(3, tx, tx.map((x) => (sincosd(x, sc), sc[1])), TAG_KERNEL);
}

// Prefill `prompt`, then greedy decode `steps` tokens; every layer kernel (TAG_MODEL)
// and every logits computation (TAG_LOGITS) recorded, with the RoPE tables used.
function wholeModel(w: TraceWriter, file: string, prompt: number[], steps: number): number[] {
  let tag = TAG_MODEL;
  const k = recordingKernels(refKernels(), w, () => tag);
  const { model, stack } = Model.local(file, { kernels: k });
  const cfg = model.cfg, C = cfg.dim, V = cfg.vocabSize;
  const freqs = loadRopeFreqs(model.file, cfg), cos = new Float32Array(cfg.ropeDim / 2), sin = new Float32Array(cfg.ropeDim / 2);
  const tokens = [...prompt];
  const slice = stack.slices[0];
  let hidden = slice.forward([{ session: "s", pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt) }])[0];
  for (let n = 0; ; n++) {
    tag = TAG_LOGITS;
    const rows = hidden.length / C, logits = model.head.logits(hidden, rows).subarray((rows - 1) * V);
    tag = TAG_MODEL;
    if (n === steps) break;
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    tokens.push(best);
    hidden = slice.forward([{ session: "s", pos: tokens.length - 1, T: 1, hidden: model.embedder.embed([best]) }])[0];
  }
  for (let p = 0; p < tokens.length; p++) {
    ropeTable(p / cfg.ropeScaleLinear, cfg.ropeDim, cfg.ropeBase, freqs, cos, sin);
    w.rope(p / cfg.ropeScaleLinear, cfg.ropeDim, cfg.ropeBase, freqs, cos, sin, TAG_MODEL);
  }
  return tokens;
}

let traceFile: string | undefined;
function trace(): string {
  if (traceFile) return traceFile;
  const w = new TraceWriter();
  kernelCalls(w);
  functionSweeps(w);
  wholeModel(w, STORIES_GGUF, [1, 403, 407, 261, 378], 12);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "layerswarm-crossbuild-"));
  // synthetic quantised models: Llama with a K-quant mix and Llama 3.1 RoPE factors; Qwen3 (q/k norms, neox RoPE) in Q5_0/Q8_0
  const tiny = { ...SHAPES.tiny, layers: 2, context: 128 };
  const llama = synthesize({ ...tiny, type: "Q4_K_M", seed: 7, llama3RopeFreqs: true, ropeBase: 500000 }, path.join(dir, "llama-q4km.gguf"));
  const qwen = synthesize({ ...tiny, arch: "qwen3", type: "Q5_0", seed: 8, tokenizer: "gpt2" }, path.join(dir, "qwen3-q5_0.gguf"));
  const prompt = Array.from({ length: 20 }, (_, i) => 300 + ((i * 7919) % 100));
  wholeModel(w, llama, prompt, 6);
  wholeModel(w, qwen, prompt, 6);
  traceFile = path.join(dir, "trace.bin");
  fs.writeFileSync(traceFile, w.bytes());
  return traceFile;
}

// ------------------------------------------------------------------ builds

function cflags(): string[] {
  const gyp = fs.readFileSync(path.join(REPO, "binding.gyp"), "utf8").split("\n").filter((l) => !/^\s*#/.test(l)).join("\n");
  const flags: string[] = JSON.parse(gyp).targets[0].cflags_cc;
  expect(flags).toContain("-ffp-contract=off");
  expect(flags.filter((f) => /^(-ffast-math|-Ofast|-ffp-contract=(fast|on)|-funsafe-math-optimizations|-fassociative-math|-freciprocal-math)$/.test(f))).toEqual([]);
  return flags;
}

function which(cmd: string): string | undefined {
  const r = spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

interface Build {
  name: string;
  cxx: string;
  flags: (gyp: string[]) => string[];
  sources: string[];
  run: (bin: string) => string[]; // argv prefix
  missing: () => string | undefined;
}

const qemu = () => which("qemu-aarch64") ?? which("qemu-aarch64-static");
const BUILDS: Build[] = [
  {
    name: "clang x86-64",
    cxx: "clang++",
    flags: (f) => f,
    sources: ["kernels_generic.cc", "kernels_avx512.cc", "pack.cc", "replay.cc"], // the longest first
    run: (bin) => [bin],
    missing: () => (os.arch() !== "x64" ? "not an x86-64 machine" : which("clang++") ? undefined : "clang++ is not installed (apt-get install clang)"),
  },
  {
    name: "aarch64 (g++ cross, qemu-user)",
    cxx: "aarch64-linux-gnu-g++",
    // -O2, not -O3: at -O3 GCC 12 spends over 3 CPU minutes (more than 15 on a loaded
    // machine) on kernels_generic.cc for aarch64, 32 s at -O2. Optimisation levels
    // keep IEEE semantics; what this build tests is the architecture, the compiler
    // and its default FMA contraction (off by -ffp-contract=off).
    flags: (f) => [...f.map((x) => (x === "-O3" ? "-O2" : x)), "-static"],
    sources: ["kernels_generic.cc", "pack.cc", "replay.cc"],
    run: (bin) => (os.arch() === "arm64" ? [bin] : [qemu()!, bin]),
    missing: () =>
      !which("aarch64-linux-gnu-g++") ? "aarch64-linux-gnu-g++ is not installed (apt-get install g++-aarch64-linux-gnu)"
        : os.arch() !== "arm64" && !qemu() ? "qemu-aarch64 is not installed (apt-get install qemu-user)" : undefined,
  },
];

function sh(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    p.stdout.on("data", (d) => out.push(d));
    p.stderr.on("data", (d) => out.push(d));
    p.on("error", (e) => resolve({ code: -1, out: String(e) }));
    p.on("close", (code) => resolve({ code, out: Buffer.concat(out).toString() }));
  });
}

// Compiles every translation unit of every build (in parallel, as many as CPUs) and
// links; binaries are cached by the hash of sources, flags and compiler version.
const built = new Map<string, Promise<string>>();
function build(b: Build): Promise<string> {
  if (!built.has(b.name)) built.set(b.name, (async () => {
    const dir = path.join(REPO, "native");
    const flags = b.flags(cflags());
    const h = crypto.createHash("sha256").update(JSON.stringify([b.cxx, flags, spawnSync(b.cxx, ["--version"], { encoding: "utf8" }).stdout]));
    for (const f of fs.readdirSync(dir).sort()) h.update(f).update(fs.readFileSync(path.join(dir, f)));
    const out = path.join(os.tmpdir(), "layerswarm-replay", h.digest("hex").slice(0, 16));
    const bin = path.join(out, "replay");
    if (fs.existsSync(bin)) return bin;
    fs.mkdirSync(out, { recursive: true });
    const objs = await Promise.all(b.sources.map(async (s) => {
      const o = path.join(out, s.replace(/\.cc$/, ".o"));
      const r = await limited(() => sh(b.cxx, [...flags, "-c", path.join(dir, s), "-o", o]));
      if (r.code !== 0) throw new Error(`${b.name}: ${b.cxx} ${s} failed:\n${r.out.slice(-4000)}`);
      return o;
    }));
    const r = await sh(b.cxx, [...flags, ...objs, "-o", bin + ".tmp"]);
    if (r.code !== 0) throw new Error(`${b.name}: linking failed:\n${r.out.slice(-4000)}`);
    fs.renameSync(bin + ".tmp", bin);
    return bin;
  })());
  return built.get(b.name)!;
}
let running = 0;
const waiting: (() => void)[] = [];
async function limited<T>(f: () => Promise<T>): Promise<T> {
  while (running >= Math.max(1, os.cpus().length)) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await f();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

const TS_CONSTS = [LOG2E, LN2_HI, LN2_LO, INV_PIO2, PIO2_1, PIO2_2, PIO2_2T, SQRT2, ROUND, ...EXP_C, ...LOG_C, ...SIN_C, ...COS_C].map(toBits).join(" ");

// ------------------------------------------------------------------ tests

describe("every build gives the reference's bits", () => {
  const native = nativeKernels(2);
  it.skipIf(!native && !CI)(`the Node addon (g++, ${native?.name ?? nativeUnavailableReason()}) replays the trace bit for bit`, () => {
    expect(native, nativeUnavailableReason()).toBeDefined();
    const s = replayOnKernels(fs.readFileSync(trace()), native as Kernels);
    expect(s.mismatches).toEqual([]);
    // every kind of call was compared: kernels alone, layers of whole models, logits
    for (const key of ["matmul/0", "matmul/1", "matmul/2", "attention/0", "attention/1", "rmsnorm/1", "rmsnorm/2", "silu/0", "silu/1"]) expect(s.compared[key], key).toBeGreaterThan(0);
  }, 600_000);

  afterAll(() => {
    if (traceFile) fs.rmSync(path.dirname(traceFile), { recursive: true, force: true });
  });
  // every build starts now, side by side (its test awaits it)
  for (const b of BUILDS) if (!b.missing()) build(b).catch(() => {});
  for (const b of BUILDS) {
    const missing = b.missing();
    if (missing && !CI) console.warn(`crossbuild: SKIPPING the ${b.name} build: ${missing} (CI installs it: .ci/run)`);
    it.skipIf(!!missing && !CI)(`${b.name}${missing ? ` (skipped: ${missing})` : ""}: native/replay.cc replays the trace bit for bit`, async () => {
      expect(missing, `${b.name} cannot be built here`).toBeUndefined();
      const file = trace();
      const bin = await build(b);
      const argv = b.run(bin);
      const consts = await sh(argv[0], [...argv.slice(1), "--consts"]);
      expect(consts.out.trim(), "numerics.h's constants and coefficients have numerics.ts's bits").toBe(TS_CONSTS);
      const r = await sh(argv[0], [...argv.slice(1), file]);
      console.log(`crossbuild ${b.name}:\n${r.out.trim()}`);
      expect(r.out).not.toMatch(/MISMATCH/);
      expect(r.code, r.out).toBe(0);
      const lines = r.out.trim().split("\n").filter((l) => l.startsWith("isa="));
      expect(lines.length).toBeGreaterThan(0);
      for (const l of lines) {
        expect(l).toMatch(/ mismatches=0$/);
        for (const key of ["matmul/0", "matmul/1", "matmul/2", "attention/1", "silu/0", "expf/0", "sin/0", "cos/0", "expd/0", "logd/0", "rope-cos/1", "rope-sin/1"])
          expect(l, key).toMatch(new RegExp(` ${key}=[1-9]`));
      }
    }, 900_000);
  }
});

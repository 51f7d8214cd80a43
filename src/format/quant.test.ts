// The meaning of every weight byte, checked against ggml's own code: the
// dequantize_row_* functions of the llama.cpp source that node-llama-cpp ships
// (its gitRelease.bundle), compiled here with gcc, read the same bytes as
// dequantizeRow, bit for bit. ggml is compiled with -ffp-contract=off, the
// arithmetic our specification states (ggml's own builds may fuse d*q + m into
// one FMA for the types with a min, a last-bit difference in the weights).

import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { GGMLType, dequantizeRow, quantLayout, quantizeRow, rowBytes, typeInfo, typeName } from "./quant.js";
import { REPO, firstDiff, tmpDir } from "../testing/shared.js";

const dir = tmpDir();
const BUNDLE = path.join(REPO, "node_modules/node-llama-cpp/llama/gitRelease.bundle");
const harness = path.join(dir, "dequantize");

// Every quantised type we compute with.
const TYPES = Object.values(GGMLType).filter((t): t is GGMLType => typeof t === "number" && !!typeInfo(t)?.supported && !!quantLayout(t));

// byte offsets of the f16 scales in a block (kept finite in random blocks)
const F16_AT: Partial<Record<GGMLType, number[]>> = {
  [GGMLType.Q8_0]: [0], [GGMLType.Q4_0]: [0], [GGMLType.Q4_1]: [0, 2], [GGMLType.Q5_0]: [0], [GGMLType.Q5_1]: [0, 2],
  [GGMLType.Q2_K]: [80, 82], [GGMLType.Q3_K]: [108], [GGMLType.Q4_K]: [0, 2], [GGMLType.Q5_K]: [0, 2], [GGMLType.Q6_K]: [208],
  [GGMLType.IQ4_NL]: [0], [GGMLType.IQ4_XS]: [0],
};

// quantiser error bounds, relative to a block's largest value: about one step (2 / 2^bits) for the
// symmetric types, whose positive side is one step short, half a step for the affine ones, with room for the scales
const MAX_ERROR: Partial<Record<GGMLType, number>> = {
  [GGMLType.Q8_0]: 0.01, [GGMLType.Q4_0]: 0.13, [GGMLType.Q4_1]: 0.075, [GGMLType.Q5_0]: 0.07, [GGMLType.Q5_1]: 0.04,
  [GGMLType.Q2_K]: 0.4, [GGMLType.Q3_K]: 0.25, [GGMLType.Q4_K]: 0.13, [GGMLType.Q5_K]: 0.07, [GGMLType.Q6_K]: 0.04,
  [GGMLType.IQ4_NL]: 0.12, [GGMLType.IQ4_XS]: 0.15,
};

const MAIN = `
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
#include "ggml-quants.h"
void ggml_abort(const char* f, int l, const char* fmt, ...) { abort(); }
size_t ggml_row_size(enum ggml_type t, int64_t n) { abort(); }
const char* ggml_type_name(enum ggml_type t) { return "?"; }
size_t ggml_type_size(enum ggml_type t) { abort(); }
// dequantize TYPE N BYTES: one row from stdin, n floats to stdout
int main(int argc, char** argv) {
  int type = atoi(argv[1]); long n = atol(argv[2]); size_t rb = atol(argv[3]);
  unsigned char* x = malloc(rb); float* y = malloc(n * 4);
  if (fread(x, 1, rb, stdin) != rb) return 2;
  switch (type) {
    case GGML_TYPE_Q4_0: dequantize_row_q4_0((void*)x, y, n); break;
    case GGML_TYPE_Q4_1: dequantize_row_q4_1((void*)x, y, n); break;
    case GGML_TYPE_Q5_0: dequantize_row_q5_0((void*)x, y, n); break;
    case GGML_TYPE_Q5_1: dequantize_row_q5_1((void*)x, y, n); break;
    case GGML_TYPE_Q8_0: dequantize_row_q8_0((void*)x, y, n); break;
    case GGML_TYPE_Q2_K: dequantize_row_q2_K((void*)x, y, n); break;
    case GGML_TYPE_Q3_K: dequantize_row_q3_K((void*)x, y, n); break;
    case GGML_TYPE_Q4_K: dequantize_row_q4_K((void*)x, y, n); break;
    case GGML_TYPE_Q5_K: dequantize_row_q5_K((void*)x, y, n); break;
    case GGML_TYPE_Q6_K: dequantize_row_q6_K((void*)x, y, n); break;
    case GGML_TYPE_IQ4_NL: dequantize_row_iq4_nl((void*)x, y, n); break;
    case GGML_TYPE_IQ4_XS: dequantize_row_iq4_xs((void*)x, y, n); break;
    default: return 3;
  }
  fwrite(y, 4, n, stdout);
  return 0;
}
`;

beforeAll(() => {
  const src = path.join(dir, "llama.cpp");
  execFileSync("git", ["clone", "-q", "--no-checkout", "--depth", "1", BUNDLE, src], { stdio: "pipe" });
  execFileSync("git", ["-C", src, "checkout", "-q", "HEAD", "--", "ggml/include", "ggml/src/ggml-quants.c", "ggml/src/ggml-quants.h", "ggml/src/ggml-common.h", "ggml/src/ggml-impl.h", "ggml/src/ggml-cpu"], { stdio: "pipe" });
  fs.writeFileSync(path.join(dir, "main.c"), MAIN);
  const g = path.join(src, "ggml");
  execFileSync("gcc", ["-O1", "-ffp-contract=off", `-I${g}/include`, `-I${g}/src`, `-I${g}/src/ggml-cpu`, path.join(dir, "main.c"), `${g}/src/ggml-quants.c`, "-lm", "-o", harness], { stdio: "pipe" });
}, 60_000);

function ggmlDequantize(type: number, bytes: Uint8Array, n: number): Float32Array {
  const r = spawnSync(harness, [String(type), String(n), String(bytes.length)], { input: bytes });
  if (r.status !== 0) throw new Error(`ggml harness failed (${r.status}): ${r.stderr}`);
  return new Float32Array(new Uint8Array(r.stdout).buffer);
}

function rand(seed: number) {
  let a = seed >>> 0;
  return () => ((a = (Math.imul(a, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

describe("dequantisation equals ggml's bit for bit", () => {
  it("covers every quantised type we compute with", () => expect(TYPES.length).toBeGreaterThanOrEqual(5));

  it.each(TYPES.map((t) => [typeName(t), t]))("%s: random blocks (every bit pattern) and our quantiser's blocks", (_name, type) => {
    const { blockSize, typeSize } = typeInfo(type)!, r = rand(type);
    const n = blockSize * 16, rb = rowBytes(type, n);
    const random = new Uint8Array(rb).map(() => (r() * 256) | 0);
    for (let b = 0; b < n / blockSize; b++)
      for (const o of F16_AT[type]!) random[b * typeSize + o + 1] = (random[b * typeSize + o + 1] & 0x83) | 0x30; // |d| in [2^-3, 2^1)
    const x = new Float32Array(n).map((_, i) => (2 * r() - 1) * (1 + (i % 7)));
    const quantised = new Uint8Array(rb);
    quantizeRow(type, x, 0, n, quantised, 0);
    for (const bytes of [random, quantised]) {
      const ours = new Float32Array(n);
      dequantizeRow(type, bytes, 0, n, ours);
      expect(firstDiff(ours, ggmlDequantize(type, bytes, n))).toBeUndefined();
    }
    // and the quantiser approximates its input: the error relative to the block's largest value
    const back = new Float32Array(n);
    dequantizeRow(type, quantised, 0, n, back);
    let err = 0;
    for (let b = 0; b < n / blockSize; b++) {
      let amax = 0, e = 0;
      for (let i = b * blockSize; i < (b + 1) * blockSize; i++) (amax = Math.max(amax, Math.abs(x[i]))), (e = Math.max(e, Math.abs(back[i] - x[i])));
      err = Math.max(err, e / amax);
    }
    console.log(`${typeName(type)}: max error ${err.toFixed(4)} of the block's largest value`);
    expect(err).toBeLessThan(MAX_ERROR[type]!);
  });
});

import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { GGUFValueType, meta, readGGUF, readTensorBytes, writeGGUF } from "./gguf.js";
import { GGMLType, dequantizeRow, quantizeRow, rowBytes } from "./quant.js";
import { convertLlama2c } from "./llama2c.js";
import { synthesize } from "./synth.js";
import { Model, generate } from "../model/model.js";
import { STORIES_BIN, STORIES_GGUF, TOK512, firstDiff, goldenIds, tmpDir } from "../testing/shared.js";
import { LayerswarmError } from "../errors.js";

const dir = tmpDir();

function expectError(f: () => unknown, code: string, match: RegExp) {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(LayerswarmError);
    expect((e as LayerswarmError).code).toBe(code);
    expect((e as Error).message).toMatch(match);
    return;
  }
  throw new Error("expected an error");
}

describe("GGUF", () => {
  it("reads a file written by another GGUF writer (llama.cpp's converter)", () => {
    const f = readGGUF(STORIES_GGUF);
    expect(f.version).toBe(3);
    expect(f.metadata.get("general.architecture")).toBe("llama");
    expect(f.tensors.get("blk.4.ffn_down.weight")?.dims).toEqual([172, 64]);
    expect((f.metadata.get("tokenizer.ggml.tokens") as string[]).length).toBe(512);
  });

  it("round-trips metadata of every type and tensors of every weight type", () => {
    const p = `${dir}/rt.gguf`;
    const types = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q6_K];
    const src = new Float32Array(512).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    const tensors = types.map((type) => {
      const data = new Uint8Array(rowBytes(type, 512));
      quantizeRow(type, src, 0, 512, data, 0);
      return { name: `t${type}`, dims: [512], type, data: () => data };
    });
    writeGGUF(p, {
      "a.u32": meta.u32(7), "a.i32": meta.i32(-7), "a.f32": meta.f32(0.5), "a.bool": meta.bool(true), "a.str": meta.str("héllo"),
      "a.arr": meta.arr(GGUFValueType.STRING, ["x", "yz"]), "a.nums": meta.arr(GGUFValueType.INT32, [1, -2, 3]),
    }, tensors, 64);
    const f = readGGUF(p);
    expect(f.alignment).toBe(64);
    expect([f.metadata.get("a.u32"), f.metadata.get("a.i32"), f.metadata.get("a.f32"), f.metadata.get("a.bool"), f.metadata.get("a.str")]).toEqual([7, -7, 0.5, true, "héllo"]);
    expect(f.metadata.get("a.arr")).toEqual(["x", "yz"]);
    expect(f.metadata.get("a.nums")).toEqual([1, -2, 3]);
    for (const t of tensors) {
      const back = new Float32Array(512), orig = new Float32Array(512);
      dequantizeRow(t.type, readTensorBytes(f, t.name), 0, 512, back);
      dequantizeRow(t.type, t.data(), 0, 512, orig);
      expect(firstDiff(back, orig)).toBeUndefined();
      // quantisation error is bounded relative to the block's range
      let err = 0;
      for (let i = 0; i < 512; i++) err = Math.max(err, Math.abs(back[i] - src[i]));
      expect(err).toBeLessThan(t.type === GGMLType.F32 ? 1e-9 : 1.0);
    }
  });

  it("rejects truncated, corrupt and unsupported files with a clear error", () => {
    const good = fs.readFileSync(STORIES_GGUF);
    const w = (name: string, b: Uint8Array) => (fs.writeFileSync(`${dir}/${name}`, b), `${dir}/${name}`);
    expectError(() => readGGUF(w("short.gguf", good.subarray(0, 1000))), "BAD_FILE", /truncated/);
    expectError(() => readGGUF(w("cut.gguf", good.subarray(0, good.length - 100))), "BAD_FILE", /truncated: tensor "blk\.4\.ffn_norm\.weight"/);
    expectError(() => readGGUF(w("magic.gguf", Buffer.concat([Buffer.from("GGUX"), good.subarray(4)]))), "BAD_FILE", /not a GGUF/);
    const v9 = Buffer.from(good);
    v9.writeUInt32LE(9, 4);
    expectError(() => readGGUF(w("v9.gguf", v9)), "BAD_FILE", /version 9/);
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(1n << 40n, 16); // metadata count
    expectError(() => readGGUF(w("huge.gguf", huge)), "BAD_FILE", /implausible metadata count/);
    expectError(() => readGGUF(`${dir}/missing.gguf`), "BAD_FILE", /cannot open/);
    // an unsupported weight type names the tensor, the type and the file
    const q81 = Buffer.from(good);
    const name = Buffer.from("blk.2.attn_q.weight");
    const at = q81.indexOf(name) + name.length + 4 + 16; // after n_dims and two dims
    q81.writeUInt32LE(GGMLType.Q8_1, at); // a type only ever used for activations
    const p = w("q8_1.gguf", q81);
    expect(() => Model.local(p)).toThrow(/q8_1\.gguf: tensor "blk\.2\.attn_q\.weight" has weight type Q8_1, which is not supported \(supported: F32, F16, Q4_0, /);
    q81.writeUInt32LE(GGMLType.Q5_K, at);
    expectError(() => readGGUF(w("q5k.gguf", q81)), "BAD_FILE", /tensor "blk\.2\.attn_q\.weight" \(Q5_K\) has rows of 64 elements/);
    // an unknown architecture
    const arch = Buffer.from(good);
    arch.write("lxama", arch.indexOf("llama", arch.indexOf("general.architecture")));
    expect(() => Model.local(w("arch.gguf", arch))).toThrow(/architecture "lxama" is not supported/);
  });

  it("refuses layer ranges outside the model", () => {
    expectError(() => Model.local(STORIES_GGUF, { slices: [{ start: 0, end: 6 }] }), "BAD_RANGE", /\[0, 6\) is not within the model's 5 layers/);
    expectError(() => Model.local(STORIES_GGUF, { slices: [{ start: 3, end: 3 }] }), "BAD_RANGE", /\[3, 3\)/);
  });
});

describe("llama2.c import", () => {
  it("converted stories260K behaves exactly like the reference GGUF", async () => {
    const out = `${dir}/conv.gguf`;
    convertLlama2c(STORIES_BIN, TOK512, out);
    const a = Model.local(out), b = Model.local(STORIES_GGUF);
    const ids = goldenIds("1");
    const [ha] = await a.stack.forward([{ session: "s", pos: 0, T: ids.length, hidden: a.model.embedder.embed(ids) }]);
    const [hb] = await b.stack.forward([{ session: "s", pos: 0, T: ids.length, hidden: b.model.embedder.embed(ids) }]);
    expect(firstDiff(a.model.head.logits(ha, ids.length), b.model.head.logits(hb, ids.length))).toBeUndefined();
    for (const text of ["Once upon a time", "", "Lily's mom said, \"hi\" 😀 — ok?"])
      expect(a.model.tokenizer.encode(text)).toEqual(b.model.tokenizer.encode(text));
    const out4: number[] = [];
    for await (const t of generate(a.model, a.stack, [1], { maxTokens: 128 })) out4.push(t.id);
    expect([1, ...out4]).toEqual(goldenIds("4"));
  });

  it("rejects a truncated checkpoint", () => {
    const p = `${dir}/cut.bin`;
    fs.writeFileSync(p, fs.readFileSync(STORIES_BIN).subarray(0, 50000));
    expectError(() => convertLlama2c(p, TOK512, `${dir}/x.gguf`), "BAD_FILE", /truncated/);
  });
});

describe("synthetic models", () => {
  it("are deterministic", () => {
    const s = { arch: "qwen2" as const, dim: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 256, vocab: 300, context: 64, type: "Q4_K_M", tied: true, seed: 3 };
    const a = fs.readFileSync(synthesize(s, `${dir}/s1.gguf`)), b = fs.readFileSync(synthesize(s, `${dir}/s2.gguf`));
    expect(a.equals(b)).toBe(true);
    expect(readGGUF(`${dir}/s1.gguf`).tensors.has("output.weight")).toBe(false);
  });
});

// Hugging Face tokenizers as GGUF metadata, on small hand-made inputs (the real
// vocabularies are checked against llama.cpp's own converted files in
// tokenizer/realvocab.test.ts).

import { describe, expect, it } from "vitest";
import { HfTokenizerJson, bpeFromTiktoken, ggufTokenizerFromHF } from "./hftokenizer.js";

const tj: HfTokenizerJson = {
  model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2, "Ġ": 3 }, merges: [["a", "b"], "Ġ a"] },
  added_tokens: [
    { id: 4, content: "<|start|>", special: true },
    { id: 5, content: "<think>", special: false },
    { id: 6, content: "<|fim|>", special: false }, // looks special: CONTROL, as llama.cpp's convert script decides
  ],
  post_processor: { type: "Sequence", processors: [{ type: "ByteLevel" }, { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<|start|>" } }, { Sequence: { id: "A" } }] }] },
};

describe("ggufTokenizerFromHF", () => {
  it("writes tokens by id, padding to vocab_size, types, merges, special ids and add_bos from the post-processor", () => {
    const m = ggufTokenizerFromHF(tj, { bos_token: "<|start|>", eos_token: { content: "<|fim|>" }, chat_template: "{{ x }}" }, { pre: "qwen2", vocabSize: 9 });
    expect(m["tokenizer.ggml.model"].value).toBe("gpt2");
    expect(m["tokenizer.ggml.pre"].value).toBe("qwen2");
    expect(m["tokenizer.ggml.tokens"].value).toEqual(["a", "b", "ab", "Ġ", "<|start|>", "<think>", "<|fim|>", "[PAD7]", "[PAD8]"]);
    expect(m["tokenizer.ggml.token_type"].value).toEqual([1, 1, 1, 1, 3, 4, 3, 5, 5]);
    expect(m["tokenizer.ggml.merges"].value).toEqual(["a b", "Ġ a"]);
    expect(m["tokenizer.ggml.bos_token_id"].value).toBe(4);
    expect(m["tokenizer.ggml.eos_token_id"].value).toBe(6);
    expect(m["tokenizer.ggml.add_bos_token"].value).toBe(true);
    expect(m["tokenizer.ggml.add_eos_token"].value).toBe(false);
    expect(m["tokenizer.chat_template"].value).toBe("{{ x }}");
  });

  it("tokenizer_config.json's add_bos_token wins over the post-processor; nothing is written where neither says", () => {
    expect(ggufTokenizerFromHF(tj, { bos_token: "<|start|>", add_bos_token: false }, { pre: "qwen2" })["tokenizer.ggml.add_bos_token"].value).toBe(false);
    const m = ggufTokenizerFromHF({ ...tj, post_processor: null }, {}, { pre: "qwen2" });
    expect(m["tokenizer.ggml.add_bos_token"]).toBeUndefined();
    expect(m["tokenizer.ggml.bos_token_id"]).toBeUndefined();
  });

  it("refuses SentencePiece-style (byte_fallback) tokenizers, whose scores tokenizer.json lacks", () => {
    expect(() => ggufTokenizerFromHF({ model: { ...tj.model, byte_fallback: true } }, {}, { pre: "default" })).toThrow(/byte-level BPE/);
  });
});

describe("bpeFromTiktoken", () => {
  it("turns ranks into byte-level tokens and every two-token split into a merge, by rank", () => {
    const b = (s: string) => Buffer.from(s, "latin1");
    const { tokens, merges } = bpeFromTiktoken([b("a"), b("b"), b(" "), b("ab"), b(" a"), b(" ab"), b("\xff")]);
    expect(tokens).toEqual(["a", "b", "Ġ", "ab", "Ġa", "Ġab", "ÿ"]);
    // " ab" splits as " |ab" and " a|b": both merges, the one with the lower left rank first
    expect(merges).toEqual(["a b", "Ġ a", "Ġ ab", "Ġa b"]);
  });
});

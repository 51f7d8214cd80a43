import { describe, expect, it } from "vitest";
import { readGGUF } from "../format/gguf.js";
import { CHATML, synthesize } from "../format/synth.js";
import { STORIES_GGUF, tmpDir } from "../testing/shared.js";
import { ChatTemplate } from "./chat.js";
import { tokenizerFromGGUF } from "./index.js";

const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

describe("chat templates", () => {
  const dir = tmpDir();
  const p = synthesize({ arch: "qwen2", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1 }, `${dir}/q.gguf`);
  const f = readGGUF(p);
  const tok = tokenizerFromGGUF(f);

  it("renders the model's ChatML template and parses its special tokens", () => {
    const t = ChatTemplate.fromGGUF(f, tok);
    expect(t.source).toBe(CHATML);
    const msgs = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi there" }];
    expect(t.render(msgs)).toBe("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
    const ids = t.encode(msgs);
    expect(ids[0]).toBe(tok.idOf("<|im_start|>"));
    expect(ids.filter((i) => i === tok.idOf("<|im_end|>")).length).toBe(2);
    expect(tok.eog.has(tok.idOf("<|im_end|>")!)).toBe(true);
  });

  it("renders a Llama 3 template with loops, filters and bos_token", () => {
    const t = new ChatTemplate(LLAMA3, tok);
    expect(t.render([{ role: "user", content: "  hello  " }])).toBe(
      `${tok.tokenText(tok.bos!)}<|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`);
  });

  it("falls back to the plain text for models without a template", () => {
    const g = readGGUF(STORIES_GGUF);
    const t = ChatTemplate.fromGGUF(g, tokenizerFromGGUF(g));
    expect(t.isFallback).toBe(true);
    expect(t.encode([{ role: "user", content: "Once upon a time" }])).toEqual([1, 403, 407, 261, 378]);
  });

  it("a broken template is a clear error", () => {
    expect(() => new ChatTemplate("{% for x in %}", tok)).toThrow(/chat template does not parse/);
  });
});

// Real chat templates (Llama 3, Llama 3.1, Llama 3.2, Qwen2.5, Qwen3, Mistral Nemo),
// with and without tools, rendered by our ChatTemplate (@huggingface/jinja)
// and by llama.cpp's own Jinja engine (common/jinja, compiled from the
// llama.cpp source node-llama-cpp ships: testing/llamacppsrc.ts) from the same
// context: the texts must be equal, and where the model file exists, the
// prompt's token ids (special tokens parsed) must be llama.cpp's.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { getLlama, Llama, LlamaModel } from "node-llama-cpp";
import { readGGUF } from "../format/gguf.js";
import { llamaCppRender } from "../testing/llamacppsrc.js";
import { REAL_VOCABS, RealVocab, TEMPLATES, realVocabModel } from "../testing/realvocab.js";
import { ChatMessage, ChatTemplate, ToolSpec } from "./chat.js";
import { Tokenizer, tokenizerFromGGUF } from "./index.js";

interface Case {
  name: string;
  vocab: RealVocab; // the tokenizer the template's model uses (Qwen2.5's vocabulary is Qwen3's, less four added tokens)
  template: () => string; // the source
  toolCallId: string; // Mistral wants 9 alphanumerics
}
const byName = (n: string) => REAL_VOCABS.find((v) => v.name.startsWith(n))!;
const file = (f: string) => () => fs.readFileSync(path.join(TEMPLATES(), f), "utf8");
const fromGGUF = (v: () => RealVocab) => () => (v().tokenizer()["tokenizer.chat_template"]?.value as string);
const CASES: Case[] = [
  { name: "Llama 3 (its tokenizer_config.json)", vocab: byName("Llama 3 "), template: fromGGUF(() => byName("Llama 3 ")), toolCallId: "call_0" },
  { name: "Llama 3.1 8B Instruct", vocab: byName("Llama 3.1"), template: file("meta-llama-Llama-3.1-8B-Instruct.jinja"), toolCallId: "call_0" },
  // Llama 3.2 writes today's date with strftime_now (its vocabulary is Llama 3.1's)
  { name: "Llama 3.2 3B Instruct", vocab: byName("Llama 3.1"), template: file("meta-llama-Llama-3.2-3B-Instruct.jinja"), toolCallId: "call_0" },
  { name: "Qwen2.5 7B Instruct", vocab: byName("Qwen3"), template: file("Qwen-Qwen2.5-7B-Instruct.jinja"), toolCallId: "call_0" },
  { name: "Qwen3 (its tokenizer_config.json)", vocab: byName("Qwen3"), template: fromGGUF(() => byName("Qwen3")), toolCallId: "call_0" },
  { name: "Mistral Nemo Instruct 2407", vocab: byName("Mistral Nemo"), template: file("mistralai-Mistral-Nemo-Instruct-2407.jinja"), toolCallId: "a1B2c3D4e" },
];

const TOOLS: ToolSpec[] = [
  {
    type: "function",
    function: {
      name: "get_weather", description: "Current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string", description: "City name, e.g. Paris" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["city"] },
    },
  },
  { type: "function", function: { name: "get_time", description: "Local time", parameters: { type: "object", properties: { tz: { type: "string" } } } } },
];

function conversations(c: Case): { label: string; messages: ChatMessage[]; tools?: ToolSpec[]; addGenerationPrompt: boolean }[] {
  const plain: ChatMessage[] = [
    { role: "system", content: "You are a helpful assistant. Answer briefly." },
    { role: "user", content: "  Hello! Café, 東京 and 😀 — what's 2+2?  " },
    { role: "assistant", content: "4. Anything else?" },
    { role: "user", content: "Tell me a joke\nabout \"quotes\" and \\backslashes\\." },
  ];
  const calls: ChatMessage[] = [
    { role: "system", content: "You can call functions." },
    { role: "user", content: "What's the weather in Paris, in celsius?" },
    { role: "assistant", content: "", tool_calls: [{ id: c.toolCallId, type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } } }] },
    { role: "tool", content: "{\"temperature\": 21, \"sky\": \"clear\"}", tool_call_id: c.toolCallId, name: "get_weather" },
  ];
  return [
    { label: "a conversation, generation prompt", messages: plain, addGenerationPrompt: true },
    { label: "a conversation, no generation prompt", messages: plain, addGenerationPrompt: false },
    { label: "one user message", messages: [{ role: "user", content: "Hi" }], addGenerationPrompt: true },
    { label: "tools offered", messages: calls.slice(0, 2), tools: TOOLS, addGenerationPrompt: true },
    { label: "tools, a call and its result", messages: calls, tools: TOOLS, addGenerationPrompt: true },
  ];
}

let llama: Llama;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
});
afterAll(async () => llama?.dispose());

describe.each(CASES.map((c) => [c.name, c] as [string, Case]))("%s", (_name, c) => {
  let tok: Tokenizer;
  let lm: LlamaModel;
  let tmplFile: string;
  let source: string;
  beforeAll(async () => {
    source = c.template();
    const p = realVocabModel(c.vocab);
    tok = tokenizerFromGGUF(readGGUF(p));
    lm = await llama.loadModel({ modelPath: p });
    tmplFile = path.join(path.dirname(p), `template-${c.name.replace(/\W+/g, "_")}.jinja`);
    fs.writeFileSync(tmplFile, source);
  }, 300_000);
  afterAll(async () => lm?.dispose());

  it.each(conversations(c).map((x) => [x.label, x] as const))("renders %s as llama.cpp's Jinja engine does", (_l, x) => {
    const t = new ChatTemplate(source, tok);
    const ours = t.render(x.messages, { addGenerationPrompt: x.addGenerationPrompt, tools: x.tools });
    // the context ChatTemplate.render gives the template
    const ctx = {
      messages: x.messages, add_generation_prompt: x.addGenerationPrompt,
      bos_token: tok.bos === undefined ? "" : tok.tokenText(tok.bos), eos_token: tok.eos === undefined ? "" : tok.tokenText(tok.eos),
      ...(x.tools ? { tools: x.tools } : {}),
    };
    const theirs = llamaCppRender(tmplFile, ctx);
    // a template that writes today's date may have crossed midnight between the two renders
    const again = t.render(x.messages, { addGenerationPrompt: x.addGenerationPrompt, tools: x.tools });
    expect(theirs === again ? again : ours).toBe(theirs);
    if (x.tools && t.takesTools) expect(ours).toContain("get_weather");
    const { text, opts } = t.prompt(x.messages, { addGenerationPrompt: x.addGenerationPrompt, tools: x.tools });
    expect(tok.encode(text, { ...opts, addBos: false })).toEqual(lm.tokenize(text, true));
  }, 300_000);
});

// @huggingface/jinja's strftime_now knows %Y %m %d %b %B %H %M %% (Llama 3.2 asks for "%d %b %Y")
it("strftime_now gives the template llama.cpp's date and time", () => {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "strftime-"));
  const f = path.join(dir, "t.jinja");
  fs.writeFileSync(f, "{{ strftime_now('%d %b %Y|%B %m|%H|%%') }}");
  const ours = () => new ChatTemplate(fs.readFileSync(f, "utf8"), { bos: undefined, eos: undefined, tokenText: () => "" } as unknown as Tokenizer).render([]);
  const before = ours(), theirs = llamaCppRender(f, {}), after = ours(); // an hour may turn between them
  expect([before, after]).toContain(theirs);
  fs.rmSync(dir, { recursive: true, force: true });
}, 300_000);

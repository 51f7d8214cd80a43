// Structured output and tool calls through the API, with the official openai
// client against stories260K (512-token context: prompts are kept short).
// The answers are checked with an independent JSON Schema check
// (testing/jsonschema.ts), not with the grammar that produced them.

import OpenAI from "openai";
import type { ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../model/model.js";
import { schemaErrors } from "../testing/jsonschema.js";
import { STORIES_GGUF } from "../testing/shared.js";
import { ChatTemplate } from "../tokenizer/chat.js";
import { JsonState, compileSchema } from "./grammar/index.js";
import { ApiServer } from "./server.js";
import { toChatMessages, toolPrompt } from "./tools.js";

const CHARACTER = {
  type: "object",
  properties: { name: { type: "string", minLength: 2, maxLength: 10 }, age: { type: "integer" }, kind: { type: "boolean" }, mood: { enum: ["happy", "sad"] } },
  required: ["name", "age", "kind", "mood"], additionalProperties: false,
};
const WEATHER_PARAMS = {
  type: "object",
  properties: { city: { type: "string", minLength: 1, maxLength: 8 }, unit: { enum: ["c", "f"] } },
  required: ["city", "unit"], additionalProperties: false,
};
const WEATHER: ChatCompletionTool = { type: "function", function: { name: "get_weather", parameters: WEATHER_PARAMS } };
const NOW: ChatCompletionTool = { type: "function", function: { name: "now" } }; // no parameters: an empty object
// (the fallback's tool prompt costs stories260K's small vocabulary about 380 of its 512 tokens)
const ASK: ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];

let model: Model;
let api: ApiServer;
let client: OpenAI;

async function serve(template?: string): Promise<{ api: ApiServer; client: OpenAI; model: Model }> {
  const { model, stack } = Model.local(STORIES_GGUF);
  if (template) model.file.metadata.set("tokenizer.chat_template", template);
  const api = new ApiServer(model, stack, { modelId: "m" });
  return { api, model, client: new OpenAI({ baseURL: `http://127.0.0.1:${await api.listen(0)}/v1`, apiKey: "none", maxRetries: 0 }) };
}

beforeAll(async () => {
  ({ api, client, model } = await serve());
});
afterAll(() => api?.close());

const isObject = (v: unknown) => typeof v === "object" && v !== null && !Array.isArray(v);

// a streamed chat answer reassembled: content, tool calls (by index), finish reasons, per choice
async function collect(s: AsyncIterable<ChatCompletionChunk>) {
  const out: { content: string; calls: { id?: string; name: string; arguments: string }[]; finish: string | null }[] = [];
  for await (const c of s)
    for (const ch of c.choices) {
      const o = (out[ch.index] ??= { content: "", calls: [], finish: null });
      o.content += ch.delta.content ?? "";
      for (const t of ch.delta.tool_calls ?? []) {
        const call = (o.calls[t.index] ??= { name: "", arguments: "" });
        if (t.id) call.id = t.id;
        call.name += t.function?.name ?? "";
        call.arguments += t.function?.arguments ?? "";
      }
      o.finish ??= ch.finish_reason;
    }
  return out;
}

describe("response_format", () => {
  it("json_object: any JSON object, closed within max_tokens, streamed and not alike", async () => {
    for (const seed of [1, 2, 3]) {
      const body = { model: "m", messages: [{ role: "user" as const, content: "Lily" }], max_tokens: 24, temperature: 1, seed, response_format: { type: "json_object" as const } };
      const r = await client.chat.completions.create(body);
      const text = r.choices[0].message.content!;
      expect(r.choices[0].finish_reason, text).toBe("stop");
      expect(isObject(JSON.parse(text)), text).toBe(true);
      expect(r.usage!.completion_tokens).toBeLessThanOrEqual(24);
      const [s] = await collect(await client.chat.completions.create({ ...body, stream: true }));
      expect(s).toMatchObject({ content: text, finish: "stop" });
    }
  });

  it("json_schema (strict): valid JSON matching the schema, greedy and sampled, streamed and not, at the schema's closing bound", async () => {
    const need = JsonState.initial(compileSchema(CHARACTER)).closeCost();
    for (const [max_tokens, sampling] of [[60, { temperature: 0 }], [60, { temperature: 1, seed: 7 }], [need, { temperature: 0.8, seed: 2 }], [need, { temperature: 0 }]] as const) {
      const body = {
        model: "m", messages: [{ role: "user" as const, content: "Once upon a time" }], max_tokens, ...sampling,
        response_format: { type: "json_schema" as const, json_schema: { name: "character", schema: CHARACTER, strict: true } },
      };
      const r = await client.chat.completions.create(body);
      const text = r.choices[0].message.content!;
      const where = `${max_tokens} ${JSON.stringify(sampling)}: ${text}`;
      expect(r.choices[0].finish_reason, where).toBe("stop");
      expect(schemaErrors(CHARACTER, JSON.parse(text)), where).toBeUndefined();
      expect(r.usage!.completion_tokens, where).toBeLessThanOrEqual(max_tokens);
      const [s] = await collect(await client.chat.completions.create({ ...body, stream: true }));
      expect(s, where).toMatchObject({ content: text, finish: "stop" });
    }
  });

  it("a budget below what the schema needs: finish 'length', the text the start of a valid answer", async () => {
    const r = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Lily" }], max_tokens: 4, temperature: 0, response_format: { type: "json_schema", json_schema: { name: "c", schema: CHARACTER } } });
    expect(r.choices[0].finish_reason).toBe("length");
    expect(r.usage!.completion_tokens).toBe(4);
    expect(JsonState.initial(compileSchema(CHARACTER)).stepBytes(Buffer.from(r.choices[0].message.content!))).not.toBeNull();
  });

  it("n > 1: each choice its own constraint; stop strings do not cut JSON; /v1/completions takes it too", async () => {
    const schema = { type: "array", items: { type: "string", maxLength: 6 }, minItems: 2, maxItems: 3 };
    const rf = { type: "json_schema" as const, json_schema: { name: "words", schema } };
    const r = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Lily" }], n: 3, max_tokens: 30, temperature: 1, seed: 5, stop: ['"', ","], response_format: rf });
    expect(r.choices).toHaveLength(3);
    for (const c of r.choices) {
      expect(c.finish_reason, c.message.content!).toBe("stop");
      expect(schemaErrors(schema, JSON.parse(c.message.content!)), c.message.content!).toBeUndefined();
    }
    expect(new Set(r.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
    const t = await client.completions.create({ model: "m", prompt: "Lily", max_tokens: 30, temperature: 0, response_format: rf } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(schemaErrors(schema, JSON.parse(t.choices[0].text)), t.choices[0].text).toBeUndefined();
  });

  it("logprobs describe what could be drawn: finite, and the alternatives are tokens the grammar allows", async () => {
    const r = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "Lily" }], max_tokens: 20, temperature: 0, logprobs: true, top_logprobs: 5, response_format: { type: "json_object" } });
    const lp = r.choices[0].logprobs!.content!;
    expect(lp.map((x) => x.token).join("")).toBe(r.choices[0].message.content);
    for (const x of lp) {
      expect(Number.isFinite(x.logprob)).toBe(true);
      for (const a of x.top_logprobs) expect(Number.isFinite(a.logprob)).toBe(true);
      expect(x.top_logprobs.reduce((s, a) => s + Math.exp(a.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
    }
    // the first token opens the object (after whitespace at most)
    for (const a of lp[0].top_logprobs) expect(/^\s*(\{|$)/.test(a.token), JSON.stringify(a.token)).toBe(true);
  });

  it("keywords outside the subset are refused with a 400 naming the keyword and where it is", async () => {
    const schema = { type: "object", properties: { day: { type: "string", format: "date" } } };
    const err = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "d", schema } } }).catch((e) => e);
    expect(err).toMatchObject({ status: 400, param: "response_format" });
    expect(err.message).toContain('"format"');
    expect(err.message).toContain("/properties/day");
    for (const [rf, what] of [[{ type: "xml" }, "response_format.type"], [{ type: "json_schema", json_schema: { name: "has space", schema: {} } }, "response_format.json_schema.name"]] as const) {
      const e = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], response_format: rf as never }).catch((x) => x);
      expect(e).toMatchObject({ status: 400, param: "response_format" });
      expect(e.message).toContain(what);
    }
  });
});

describe("tools", () => {
  const template = () => ChatTemplate.fromGGUF(model.file, model.tokenizer);
  // the prompt the server should have built, in tokens
  const promptTokens = (messages: unknown, tools: ChatCompletionTool[]) => {
    const { text, opts } = toolPrompt(template(), toChatMessages(messages), tools as never);
    return model.tokenizer.encode(text, opts).length;
  };

  for (const [label, tool_choice] of [["a named function", { type: "function", function: { name: "get_weather" } }], ["required", "required"]] as const) {
    it(`a forced call (${label}): finish 'tool_calls', arguments that match the function's schema, streamed and not`, async () => {
      for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 3 }]) {
        const body = { model: "m", messages: ASK, tools: [WEATHER, NOW], tool_choice, max_tokens: 110, ...sampling };
        const r = await client.chat.completions.create(body);
        const c = r.choices[0];
        expect(c.finish_reason).toBe("tool_calls");
        expect(c.message.content).toBeNull();
        expect(c.message.tool_calls).toHaveLength(1);
        const call = c.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
        expect(call).toMatchObject({ type: "function", id: expect.stringMatching(/^call_/) });
        if (label === "a named function") expect(call.function.name).toBe("get_weather");
        const params = call.function.name === "now" ? { type: "object", additionalProperties: false } : WEATHER_PARAMS;
        expect(schemaErrors(params, JSON.parse(call.function.arguments)), call.function.arguments).toBeUndefined();
        expect(r.usage!.completion_tokens).toBeLessThanOrEqual(110);
        expect(r.usage!.prompt_tokens).toBe(promptTokens(ASK, [WEATHER, NOW]));
        const [s] = await collect(await client.chat.completions.create({ ...body, stream: true }));
        expect(s.finish).toBe("tool_calls");
        expect(s.content).toBe("");
        expect(s.calls).toHaveLength(1);
        expect(s.calls[0]).toMatchObject({ name: call.function.name, arguments: call.function.arguments, id: expect.stringMatching(/^call_/) });
      }
    });
  }

  it("auto: the tools go into the prompt, the model answers in text; 'none' hides them", async () => {
    const r = await client.chat.completions.create({ model: "m", messages: ASK, tools: [WEATHER], max_tokens: 12, temperature: 0 });
    expect(r.choices[0].message.tool_calls).toBeUndefined();
    expect(typeof r.choices[0].message.content).toBe("string");
    expect(["stop", "length"]).toContain(r.choices[0].finish_reason);
    expect(r.usage!.prompt_tokens).toBe(promptTokens(ASK, [WEATHER]));
    const [s] = await collect(await client.chat.completions.create({ model: "m", messages: ASK, tools: [WEATHER], max_tokens: 12, temperature: 0, stream: true }));
    expect(s).toMatchObject({ content: r.choices[0].message.content, calls: [], finish: r.choices[0].finish_reason });
    const none = await client.chat.completions.create({ model: "m", messages: ASK, tools: [WEATHER], tool_choice: "none", max_tokens: 4 });
    expect(none.usage!.prompt_tokens).toBe(promptTokens(ASK, []));
    expect(none.usage!.prompt_tokens).toBeLessThan(r.usage!.prompt_tokens);
  });

  it("a round trip: the call and its result (role 'tool') go back into the prompt", async () => {
    const first = await client.chat.completions.create({ model: "m", messages: ASK, tools: [WEATHER], tool_choice: "required", max_tokens: 120, temperature: 0 });
    const call = first.choices[0].message.tool_calls![0];
    const messages: ChatCompletionMessageParam[] = [
      ...ASK,
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: "Sunny, 21" },
    ];
    const r = await client.chat.completions.create({ model: "m", messages, tools: [WEATHER], max_tokens: 8, temperature: 0 });
    expect(["stop", "length"]).toContain(r.choices[0].finish_reason);
    expect(r.usage!.prompt_tokens).toBe(promptTokens(messages, [WEATHER]));
    const { text } = toolPrompt(template(), toChatMessages(messages), [WEATHER] as never);
    expect(text).toContain("<tool_response>\nSunny, 21\n</tool_response>");
    expect(text).toContain(`<tool_call>\n{"name":"get_weather","arguments":${(call as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments}}\n</tool_call>`);
  });

  it("errors name the field: tools, tool_choice, a parameter schema outside the subset, messages; tools are a chat parameter", async () => {
    const chat = (extra: object) => client.chat.completions.create({ model: "m", messages: ASK, max_tokens: 2, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming).catch((e) => e);
    expect(await chat({ tools: [{ type: "function", function: { name: "bad name" } }] })).toMatchObject({ status: 400, param: "tools[0].function.name" });
    expect(await chat({ tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } })).toMatchObject({ status: 400, param: "tool_choice" });
    expect(await chat({ tool_choice: "required" })).toMatchObject({ status: 400, param: "tool_choice" });
    const dated = { type: "function", function: { name: "f", parameters: { type: "object", properties: { d: { type: "string", pattern: "^[0-9]+$" } } } } };
    const e = await chat({ tools: [WEATHER, dated], tool_choice: "required" });
    expect(e).toMatchObject({ status: 400, param: "tools" });
    expect(e.message).toContain('"pattern"');
    expect(e.message).toContain("tools[1].function.parameters at /properties/d");
    expect((await chat({ tools: [WEATHER, dated] })).choices).toHaveLength(1); // auto: the schema is only shown to the model
    expect(await chat({ messages: [{ role: "tool", content: "x" }] })).toMatchObject({ status: 400, param: "messages[0].tool_call_id" });
    const c = await client.completions.create({ model: "m", prompt: "x", tools: [WEATHER] } as never).catch((x) => x);
    expect(c).toMatchObject({ status: 400, param: "tools" });
  });
});

// Templates that take `tools` choose the call format: Llama 3.1's JSON and Mistral's [TOOL_CALLS]
// (written here as text: stories260K has no such control tokens).
describe("tools through the model's own template", () => {
  const LLAMA31_LIKE = "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}{%- if tools is not none %}<|start_header_id|>system<|end_header_id|>\n\nCall with {\"name\": function name, \"parameters\": dictionary}. {% for t in tools %}{{ t | tojson }}{% endfor %}<|eot_id|>{%- endif %}{%- for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{%- endfor %}";
  const MISTRAL_LIKE = "{%- for m in messages %}{%- if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]{%- elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}</s>{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]{%- else %}{{ m.content }}</s>{%- endif %}{%- endfor %}";

  for (const [family, source] of [["llama3", LLAMA31_LIKE], ["mistral", MISTRAL_LIKE]] as const) {
    it(`${family}: a forced call in the family's syntax, parsed into tool_calls, streamed and not`, async () => {
      const s = await serve(source);
      try {
        const body = { model: "m", messages: ASK, tools: [WEATHER], tool_choice: "required" as const, max_tokens: 120, temperature: 0 };
        const r = await s.client.chat.completions.create(body);
        const call = r.choices[0].message.tool_calls?.[0] as OpenAI.ChatCompletionMessageFunctionToolCall;
        expect(r.choices[0].finish_reason).toBe("tool_calls");
        expect(call.function.name).toBe("get_weather");
        expect(schemaErrors(WEATHER_PARAMS, JSON.parse(call.function.arguments)), call.function.arguments).toBeUndefined();
        if (family === "mistral") expect(call.id).toMatch(/^[a-zA-Z0-9]{9}$/);
        const [st] = await collect(await s.client.chat.completions.create({ ...body, stream: true }));
        expect(st).toMatchObject({ finish: "tool_calls", content: "", calls: [{ name: "get_weather", arguments: call.function.arguments }] });
        // and the round trip renders through the template
        const back = await s.client.chat.completions.create({
          model: "m", tools: [WEATHER], max_tokens: 4, temperature: 0,
          messages: [...ASK, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "Sunny" }],
        });
        expect(back.choices).toHaveLength(1);
      } finally {
        await s.api.close();
      }
    });
  }
});

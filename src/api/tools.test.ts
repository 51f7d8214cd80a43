import { describe, expect, it } from "vitest";
import { readGGUF } from "../format/gguf.js";
import { trainBpeVocab } from "../format/synthvocab.js";
import { Model } from "../model/model.js";
import { generateConstrained } from "../testing/constrained.js";
import { schemaErrors } from "../testing/jsonschema.js";
import { STORIES_GGUF } from "../testing/shared.js";
import { BpeTokenizer } from "../tokenizer/bpe.js";
import { ChatTemplate } from "../tokenizer/chat.js";
import { tokenizerFromGGUF } from "../tokenizer/index.js";
import { TokenType } from "../tokenizer/types.js";
import { JsonConstraint } from "./grammar/constraint.js";
import { SchemaError } from "./grammar/schema.js";
import { VocabIndex } from "./grammar/vocab.js";
import {
  ToolCallStream, ToolFormat, ToolParamError, ToolSpec, checkTools, forcedToolCall, parseToolCalls, toChatMessages, toolFormat, toolMarkerTokens, toolPrompt,
} from "./tools.js";

// A small template in the manner of Qwen 2.5's: tools in the system turn, calls
// as <tool_call> JSON with `arguments | tojson`, results as <tool_response> in a user turn.
const QWEN_LIKE = `{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Call a function as <tool_call>{"name": <name>, "arguments": <args>}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}
{% endif %}{% for tc in message.tool_calls %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;

const LLAMA31_LIKE = "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}<|begin_of_text|>{%- if tools is not none %}<|start_header_id|>system<|end_header_id|>\n\nRespond with {\"name\": function name, \"parameters\": dictionary}. {% for t in tools %}{{ t | tojson }}{% endfor %}<|eot_id|>{%- endif %}{%- for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{%- endfor %}";
const MISTRAL_LIKE = "{%- for m in messages %}{%- if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]{%- elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}</s>{%- else %}{{ m.content }}</s>{%- endif %}{%- endfor %}";

const WEATHER: ToolSpec = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", minLength: 1, maxLength: 12 }, unit: { enum: ["celsius", "fahrenheit"] }, days: { type: "integer" } },
      required: ["city", "unit"], additionalProperties: false,
    },
  },
};
const TIME: ToolSpec = { type: "function", function: { name: "get_time", parameters: { type: "object", properties: { zone: { type: "string", maxLength: 8 } }, required: ["zone"], additionalProperties: false } } };

const bpeVocab = trainBpeVocab(900);
const bpe = new BpeTokenizer({ ...bpeVocab, pre: "qwen2", addBos: false });
// a tokenizer whose [TOOL_CALLS] and <|python_tag|> are control tokens, and <tool_call> is user-defined (as Qwen's GGUFs have it)
const withMarkers = (() => {
  const tokens = [...bpeVocab.tokens, "[TOOL_CALLS]", "<|python_tag|>", "<tool_call>"];
  const types = [...bpeVocab.types, TokenType.CONTROL, TokenType.CONTROL, TokenType.USER_DEFINED];
  return new BpeTokenizer({ ...bpeVocab, tokens, types, pre: "qwen2", addBos: false });
})();

// JSON as Jinja's tojson writes it (Python's separators)
const pyjson = (v: unknown): string =>
  Array.isArray(v) ? `[${v.map(pyjson).join(", ")}]`
  : typeof v === "object" && v !== null ? `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyjson(x)}`).join(", ")}}`
  : JSON.stringify(v);

let n = 0;
const ids = () => `call_${++n}`;

describe("tools in the request", () => {
  it("checkTools: tools and tool_choice as OpenAI checks them, errors naming the field", () => {
    expect(checkTools([WEATHER], undefined).choice).toBe("auto");
    expect(checkTools(undefined, null)).toEqual({ tools: [], choice: "none" });
    expect(checkTools([WEATHER, TIME], { type: "function", function: { name: "get_time" } }).choice).toEqual({ type: "function", function: { name: "get_time" } });
    const bad: [unknown, unknown, string, RegExp][] = [
      [{}, undefined, "tools", /must be an array/],
      [[{ type: "function", function: { name: "a b" } }], undefined, "tools[0].function.name", /letters, digits/],
      [[WEATHER, WEATHER], undefined, "tools[1].function.name", /given twice/],
      [[{ type: "function", function: { name: "f", parameters: "x" } }], undefined, "tools[0].function.parameters", /JSON Schema object/],
      [[WEATHER], { type: "function", function: { name: "nope" } }, "tool_choice", /"nope", which is not in 'tools'/],
      [[WEATHER], "sometimes", "tool_choice", /must be "none", "auto", "required"/],
      [[], "required", "tool_choice", /needs 'tools'/],
    ];
    for (const [tools, choice, param, re] of bad) {
      let err: unknown;
      try {
        checkTools(tools, choice);
      } catch (e) {
        err = e;
      }
      expect(err, param).toBeInstanceOf(ToolParamError);
      expect((err as ToolParamError).param).toBe(param);
      expect((err as ToolParamError).code).toBe("BAD_ARGUMENT");
      expect((err as Error).message).toMatch(re);
    }
  });

  it("toChatMessages: arguments parsed for templates, results named after their call, null content empty", () => {
    const msgs = toChatMessages([
      { role: "user", content: [{ type: "text", text: "Weather in " }, { type: "text", text: "Paris?" }] },
      { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' } }] },
      { role: "tool", tool_call_id: "c1", content: "21 C" },
    ]);
    expect(msgs[0].content).toBe("Weather in Paris?");
    expect(msgs[1]).toEqual({ role: "assistant", content: "", tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } } }] });
    expect(msgs[2]).toEqual({ role: "tool", content: "21 C", tool_call_id: "c1", name: "get_weather" });
    expect(() => toChatMessages([{ role: "tool", content: "x" }])).toThrow(/messages\[0\].tool_call_id/);
  });
});

describe("rendering tools through the chat template", () => {
  const conversation = toChatMessages([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' } }] },
    { role: "tool", tool_call_id: "c1", content: "21 C" },
  ]);

  it("a template that takes tools renders them, past calls (arguments as JSON) and results", () => {
    const t = new ChatTemplate(QWEN_LIKE, bpe);
    expect(t.takesTools).toBe(true);
    expect(toolFormat(t)).toBe("hermes");
    const { text } = toolPrompt(t, conversation, [WEATHER]);
    expect(text).toBe(
      "<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n" + pyjson(WEATHER) + "\n</tools>\n" +
      'Call a function as <tool_call>{"name": <name>, "arguments": <args>}</tool_call><|im_end|>\n' +
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
      '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call><|im_end|>\n' +
      "<|im_start|>user\n<tool_response>\n21 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
    // without tools the same template renders as before
    expect(toolPrompt(t, [{ role: "user", content: "Hi" }], []).text).toBe("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  });

  it("a template that ignores tools gets them in a system message, calls and results written out", () => {
    const t = new ChatTemplate("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n", bpe);
    expect(t.takesTools).toBe(false);
    expect(toolFormat(t)).toBe("hermes");
    const { text } = toolPrompt(t, conversation, [WEATHER]);
    expect(text).toContain("<|im_start|>system\nBe brief.\n\nYou can call these functions");
    expect(text).toContain(`<tools>\n${JSON.stringify(WEATHER.function)}\n</tools>`);
    expect(text).toContain('<|im_start|>assistant\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}\n</tool_call><|im_end|>');
    expect(text).toContain("<|im_start|>user\n<tool_response>\n21 C\n</tool_response><|im_end|>");
  });

  it("the format follows the template's family", () => {
    expect(toolFormat(new ChatTemplate(LLAMA31_LIKE, bpe))).toBe("llama3");
    expect(toolFormat(new ChatTemplate(MISTRAL_LIKE, bpe))).toBe("mistral");
    const l = toolPrompt(new ChatTemplate(LLAMA31_LIKE, bpe), [{ role: "user", content: "Hi" }], [TIME]).text;
    expect(l).toContain('"parameters": dictionary}. {"type": "function", "function": {"name": "get_time"');
    const m = toolPrompt(new ChatTemplate(MISTRAL_LIKE, bpe), [{ role: "user", content: "Hi" }], [TIME]).text;
    expect(m.startsWith('[AVAILABLE_TOOLS][{"type": "function"')).toBe(true);
  });
});

describe("parsing the model's calls", () => {
  const call = (name: string, args: unknown) => ({ type: "function", function: { name, arguments: JSON.stringify(args) } });
  const parse = (text: string, format: ToolFormat) => {
    const r = parseToolCalls(text, format, ids);
    return { content: r.content, calls: r.toolCalls.map(({ type, function: f }) => ({ type, function: f })) };
  };

  it("hermes: one or several blocks, content around them, malformed blocks left as content", () => {
    expect(parse('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>', "hermes")).toEqual({ content: null, calls: [call("get_time", { zone: "UTC" })] });
    expect(parse('Let me check.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n<tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}</tool_call>', "hermes"))
      .toEqual({ content: "Let me check.", calls: [call("a", {}), call("b", { x: 1 })] });
    expect(parse('<tool_call>\n{"name": "a", "arguments": {"x": 1}}', "hermes")).toEqual({ content: null, calls: [call("a", { x: 1 })] }); // stopped before the closing tag
    const broken = '<tool_call>\n{"name": "a", "arguments": {"x": }\n</tool_call>';
    expect(parse(`${broken}\n<tool_call>{"name": "b"}</tool_call>`, "hermes")).toEqual({ content: broken, calls: [call("b", {})] });
    expect(parse('<tool_call>{"arguments": {}}</tool_call>', "hermes").calls).toEqual([]); // no name
    expect(parse('<tool_call>{"name": "a", "arguments": [1]}</tool_call>', "hermes").calls).toEqual([]); // arguments not an object
    expect(parse("Just words.", "hermes")).toEqual({ content: "Just words.", calls: [] });
  });

  it("llama3: a JSON answer (after <|python_tag|> or not), several separated by ';'; prose is content", () => {
    expect(parse('{"name": "get_time", "parameters": {"zone": "UTC"}}', "llama3")).toEqual({ content: null, calls: [call("get_time", { zone: "UTC" })] });
    expect(parse('<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "arguments": {"y": [1]}}', "llama3")).toEqual({ content: null, calls: [call("a", {}), call("b", { y: [1] })] });
    expect(parse('[{"name": "a", "parameters": {}}]', "llama3").calls).toEqual([call("a", {})]);
    expect(parse('The answer is {"name": "a"}', "llama3")).toEqual({ content: 'The answer is {"name": "a"}', calls: [] });
    expect(parse('{"name": "a", "parameters": {}} and more', "llama3")).toEqual({ content: '{"name": "a", "parameters": {}} and more', calls: [] });
    expect(parse('{"city": "Paris"}', "llama3")).toEqual({ content: '{"city": "Paris"}', calls: [] }); // JSON, but not a call
  });

  it("mistral: [TOOL_CALLS] with a JSON list (v3) or name[ARGS]{...} (v11), content before it", () => {
    expect(parse('[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]', "mistral")).toEqual({ content: null, calls: [call("a", { x: 1 }), call("b", {})] });
    expect(parse('Sure. [TOOL_CALLS][{"name": "a", "arguments": {}, "id": "abcdefghi"}]', "mistral")).toEqual({ content: "Sure.", calls: [call("a", {})] });
    expect(parse('[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{}', "mistral")).toEqual({ content: null, calls: [call("a", { x: 1 }), call("b", {})] });
    expect(parse("[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {", "mistral").calls).toEqual([]);
    expect(parse('[{"name": "a", "arguments": {}}]', "mistral").calls).toEqual([]); // no marker: content
  });

  it("ids: OpenAI-style, and 9 letters or digits for Mistral (its templates check)", () => {
    expect(parseToolCalls('<tool_call>{"name": "a"}</tool_call>', "hermes").toolCalls[0].id).toMatch(/^call_[a-zA-Z0-9]{24}$/);
    expect(parseToolCalls('[TOOL_CALLS][{"name": "a"}]', "mistral").toolCalls[0].id).toMatch(/^[a-zA-Z0-9]{9}$/);
  });

  it("control-token markers are written out for the parser", () => {
    const m = toolMarkerTokens(withMarkers, "mistral");
    expect([...m.values()]).toEqual(["[TOOL_CALLS]"]);
    expect(withMarkers.tokenBytes([...m.keys()][0]).length).toBe(0); // a decoder drops it
    expect([...toolMarkerTokens(withMarkers, "llama3").values()]).toEqual(["<|python_tag|>"]);
    expect(toolMarkerTokens(withMarkers, "hermes").size).toBe(0); // user-defined: decoded as text already
  });

  it("streaming: content passes as it comes, a call is held and parsed at the end", () => {
    const cases: [ToolFormat, string, string, number][] = [
      ["hermes", 'Checking <tool_c', 'all>\n{"name": "a", "arguments": {}}\n</tool_call>', 1],
      ["hermes", "A <tool_ca", "ke is a lie.", 0],
      ["mistral", "Ok. [TOOL_", 'CALLS][{"name": "a", "arguments": {}}]', 1],
      ["llama3", "  ", '{"name": "a", "parameters": {}}', 1],
      ["llama3", "<|python", '_tag|>{"name": "a", "parameters": {}}', 1],
      ["llama3", "Hello", " there {", 0],
    ];
    for (const [format, a, b, calls] of cases) {
      const whole = a + b;
      const s = new ToolCallStream(format, ids);
      let streamed = "";
      for (const ch of whole) streamed += s.push(ch);
      const end = s.end();
      expect(end.toolCalls.length, whole).toBe(calls);
      const batch = parseToolCalls(whole, format, ids);
      const before = calls && format !== "llama3" ? whole.slice(0, whole.indexOf(format === "hermes" ? "<tool_call>" : "[TOOL_CALLS]")) : calls ? "" : whole;
      expect((streamed + (end.content ?? "")).trim(), whole).toBe(before.trim());
      expect(end.toolCalls.map((c) => c.function)).toEqual(batch.toolCalls.map((c) => c.function));
      if (!calls) expect(streamed.length).toBeGreaterThanOrEqual(whole.length - 11); // held back no more than a marker's length
    }
  });
});

describe("forced calls", () => {
  it("refuses parameter schemas outside the subset, naming the tool", () => {
    const bad: ToolSpec = { type: "function", function: { name: "f", parameters: { type: "object", properties: { d: { type: "string", format: "date" } } } } };
    let err: unknown;
    try {
      forcedToolCall("hermes", [WEATHER, bad], "required");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SchemaError);
    expect((err as Error).message).toBe('tools[1].function.parameters at /properties/d: the JSON Schema keyword "format" is not supported (supported: type, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength, enum, const, anyOf)');
  });

  it("a control-token marker goes to the prompt; a user-defined one stays in the grammar", () => {
    expect(forcedToolCall("mistral", [TIME], "required", withMarkers).prefix).toBe("[TOOL_CALLS]");
    expect(forcedToolCall("mistral", [TIME], "required", bpe).prefix).toBe("");
    expect(forcedToolCall("hermes", [TIME], "required", withMarkers).prefix).toBe("");
  });

  describe("stories260K, constrained, calls a function with arguments that match its schema", () => {
    const { model, stack } = Model.local(STORIES_GGUF, {});
    const vocab = VocabIndex.fromTokenizer(model.tokenizer);
    const template = ChatTemplate.fromGGUF(readGGUF(STORIES_GGUF), tokenizerFromGGUF(readGGUF(STORIES_GGUF)));
    const tools = [WEATHER, TIME];
    const messages = [{ role: "user", content: "What is the weather like in Paris?" }];

    for (const format of ["hermes", "llama3", "mistral"] as ToolFormat[]) {
      for (const [choice, label] of [["required", "required"], [{ type: "function", function: { name: "get_weather" } }, "named"]] as const) {
        it(`${format}, tool_choice ${label}`, async () => {
          expect(toolFormat(template)).toBe("hermes"); // the fallback: stories has no template of its own
          const { text: prompt, opts } = toolPrompt(template, messages, tools);
          expect(prompt).toContain("<tools>");
          const forced = forcedToolCall(format, tools, choice, model.tokenizer);
          // (the whole prompt is about 580 tokens here, the model's context 512: it gets the last 200)
          const promptIds = model.tokenizer.encode(prompt + forced.prefix, opts).slice(-200);
          for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 1 }, { temperature: 1, seed: 2 }]) {
            const c = new JsonConstraint(forced.grammar, vocab, { prev: promptIds.at(-1) });
            const r = await generateConstrained(model, stack, promptIds, c, { ...sampling, maxTokens: 90 });
            expect(r.finish, r.text).toBe("stop");
            const parsed = parseToolCalls(forced.prefix + r.text, format);
            expect(parsed.toolCalls.length, r.text).toBe(1);
            expect(parsed.content).toBeNull();
            const fn = parsed.toolCalls[0].function;
            if (label === "named") expect(fn.name).toBe("get_weather");
            const tool = tools.find((t) => t.function.name === fn.name)!;
            expect(schemaErrors(tool.function.parameters as Record<string, unknown>, JSON.parse(fn.arguments)), r.text).toBeUndefined();
            if (sampling.temperature === 0) console.log(`${format}, ${label}: ${JSON.stringify(r.text)}`);
          }
        });
      }
    }
  });
});

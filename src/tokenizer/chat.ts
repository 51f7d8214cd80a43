// Chat templates: tokenizer.chat_template (Jinja) rendered with a real Jinja
// implementation (@huggingface/jinja), as transformers and llama.cpp do.

import { Template } from "@huggingface/jinja";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, metaString } from "../format/gguf.js";
import { EncodeOptions, Tokenizer } from "./types.js";

export interface ChatMessage {
  role: string;
  content: string;
  // tool use, as Hugging Face templates read it (api/tools.ts builds these from OpenAI messages):
  tool_calls?: TemplateToolCall[]; // an assistant's calls
  tool_call_id?: string; // a tool result's call
  name?: string; // a tool result's function
}

// A call in a template's eyes: `arguments` an object (templates apply `tojson`).
export interface TemplateToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: unknown };
}

// A function the model may call, as OpenAI's `tools` and templates' `tools` give it.
export interface ToolSpec {
  type: "function";
  function: { name: string; description?: string; parameters?: unknown; strict?: boolean };
}

export interface RenderOptions {
  addGenerationPrompt?: boolean; // default true
  tools?: ToolSpec[]; // passed to the template as `tools` when given and not empty
}

// Models without a template (such as llama2.c stories) continue the messages' text.
export const FALLBACK_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}";

export class ChatTemplate {
  private t: Template;
  constructor(readonly source: string, private tok: Tokenizer) {
    try {
      this.t = new Template(source);
    } catch (e) {
      throw new LayerswarmError("BAD_FILE", `the model's chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
  }

  static fromGGUF(f: GGUFFile, tok: Tokenizer): ChatTemplate {
    return new ChatTemplate(metaString(f, "tokenizer.chat_template") ?? FALLBACK_TEMPLATE, tok);
  }

  get isFallback(): boolean {
    return this.source === FALLBACK_TEMPLATE;
  }

  // Whether the template reads a `tools` variable (else tools must be described in a message).
  get takesTools(): boolean {
    return /\btools\b/.test(this.source);
  }

  render(messages: ChatMessage[], opts: RenderOptions | boolean = {}): string {
    const o: RenderOptions = typeof opts === "boolean" ? { addGenerationPrompt: opts } : opts;
    const name = (id: number | undefined) => (id === undefined ? "" : this.tok.tokenText(id));
    try {
      return this.t.render({
        messages,
        add_generation_prompt: o.addGenerationPrompt ?? true,
        bos_token: name(this.tok.bos),
        eos_token: name(this.tok.eos),
        ...(o.tools?.length ? { tools: o.tools } : {}),
      });
    } catch (e) {
      throw new LayerswarmError("BAD_ARGUMENT", `the chat template failed on these messages: ${(e as Error).message}`, { cause: e });
    }
  }

  // Messages -> token ids: the template's text with its special tokens parsed.
  // A BOS is added only when the template does not write one itself.
  encode(messages: ChatMessage[], render: RenderOptions = {}): number[] {
    const { text, opts } = this.prompt(messages, render);
    return this.tok.encode(text, opts);
  }

  // The text encode() tokenizes and how, for callers that tokenize it themselves (encodeChunks).
  prompt(messages: ChatMessage[], render: RenderOptions = {}): { text: string; opts: EncodeOptions } {
    const text = this.render(messages, render);
    const bos = this.tok.bos !== undefined ? this.tok.tokenText(this.tok.bos) : undefined;
    const writesBos = !!bos && text.startsWith(bos);
    return { text, opts: { parseSpecial: true, addBos: writesBos ? false : undefined } };
  }
}

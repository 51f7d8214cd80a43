// Chat templates: tokenizer.chat_template (Jinja) rendered with a real Jinja
// implementation (@huggingface/jinja), as transformers and llama.cpp do.

import { Template } from "@huggingface/jinja";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, metaString } from "../format/gguf.js";
import { EncodeOptions, Tokenizer } from "./types.js";

export interface ChatMessage {
  role: string;
  content: string;
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

  render(messages: ChatMessage[], addGenerationPrompt = true): string {
    const name = (id: number | undefined) => (id === undefined ? "" : this.tok.tokenText(id));
    try {
      return this.t.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: name(this.tok.bos),
        eos_token: name(this.tok.eos),
      });
    } catch (e) {
      throw new LayerswarmError("BAD_ARGUMENT", `the chat template failed on these messages: ${(e as Error).message}`, { cause: e });
    }
  }

  // Messages -> token ids: the template's text with its special tokens parsed.
  // A BOS is added only when the template does not write one itself.
  encode(messages: ChatMessage[]): number[] {
    const { text, opts } = this.prompt(messages);
    return this.tok.encode(text, opts);
  }

  // The text encode() tokenizes and how, for callers that tokenize it themselves (encodeChunks).
  prompt(messages: ChatMessage[]): { text: string; opts: EncodeOptions } {
    const text = this.render(messages);
    const bos = this.tok.bos !== undefined ? this.tok.tokenText(this.tok.bos) : undefined;
    const writesBos = !!bos && text.startsWith(bos);
    return { text, opts: { parseSpecial: true, addBos: writesBos ? false : undefined } };
  }
}

// What the rest of the system needs from a tokenizer.

import { LayerswarmError } from "../errors.js";

export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export interface EncodeOptions {
  addBos?: boolean; // default: the model's tokenizer.ggml.add_bos_token
  parseSpecial?: boolean; // turn "<|im_start|>" etc. in the text into their ids (default false)
  chunkChars?: number; // encodeChunks tokenizes about this many UTF-16 units at a time (default 4096)
}

export interface Tokenizer {
  readonly kind: "llama" | "gpt2";
  readonly vocabSize: number;
  readonly bos: number | undefined;
  readonly eos: number | undefined;
  readonly eog: ReadonlySet<number>; // ends generation
  // A text of B UTF-8 bytes has at least B / maxTokenBytes tokens.
  readonly maxTokenBytes: number;
  encode(text: string, opts?: EncodeOptions): number[];
  // The same ids as encode(), in pieces that each cost a bounded slice of the
  // text, so that a caller can stop early or let other work run in between.
  encodeChunks(text: string, opts?: EncodeOptions): Iterable<number[]>;
  // Bytes a token contributes to the output text (empty for control tokens).
  tokenBytes(id: number, prev: number | undefined): Uint8Array;
  tokenText(id: number): string; // the raw vocabulary entry
  tokenType(id: number): TokenType;
  idOf(text: string): number | undefined;
}

// What both GGUF tokenizers share: the vocabulary lookups and the BOS rule.
export abstract class VocabTokenizer {
  protected ids = new Map<string, number>();
  constructor(protected tokens: string[], protected types: number[], readonly bos: number | undefined, private addBos: boolean) {
    tokens.forEach((t, i) => {
      if (!this.ids.has(t)) this.ids.set(t, i);
    });
  }
  get vocabSize(): number {
    return this.tokens.length;
  }
  idOf(text: string): number | undefined {
    return this.ids.get(text);
  }
  tokenText(id: number): string {
    return this.tokens[id] ?? "";
  }
  tokenType(id: number): TokenType {
    return this.types[id] ?? TokenType.NORMAL;
  }
  protected start(opts: EncodeOptions): number[] {
    if (!(opts.addBos ?? this.addBos)) return [];
    if (this.bos === undefined) throw new LayerswarmError("BAD_ARGUMENT", "this tokenizer has no BOS token");
    return [this.bos];
  }
}

// Turns a stream of tokens into text, holding back incomplete UTF-8 sequences.
export class TextDecoderStream {
  private pending: number[] = [];
  private prev: number | undefined;
  constructor(private tok: Tokenizer, prev?: number) {
    this.prev = prev;
  }
  push(id: number): string {
    const bytes = this.tok.tokenBytes(id, this.prev);
    this.prev = id;
    for (const b of bytes) this.pending.push(b);
    // emit the longest prefix that is complete UTF-8
    let end = this.pending.length;
    let i = end - 1, back = 0;
    while (i >= 0 && back < 4 && (this.pending[i] & 0xc0) === 0x80) (i--, back++);
    if (i >= 0) {
      const lead = this.pending[i];
      const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
      if (end - i < need) end = i;
    }
    const out = Buffer.from(this.pending.slice(0, end)).toString("utf8");
    this.pending = this.pending.slice(end);
    return out;
  }
  flush(): string {
    const out = Buffer.from(this.pending).toString("utf8");
    this.pending = [];
    return out;
  }
}

export function decodeAll(tok: Tokenizer, ids: number[], prev?: number): string {
  const d = new TextDecoderStream(tok, prev);
  return ids.map((i) => d.push(i)).join("") + d.flush();
}

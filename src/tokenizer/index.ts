// Builds the tokenizer a GGUF file describes (tokenizer.ggml.* metadata).

import { LayerswarmError } from "../errors.js";
import { GGUFFile, metaNumber, metaString } from "../format/gguf.js";
import { SpmTokenizer } from "./spm.js";
import { BpeTokenizer, preTokenizer } from "./bpe.js";
import { Tokenizer } from "./types.js";

export * from "./types.js";

export function tokenizerFromGGUF(f: GGUFFile): Tokenizer {
  const model = metaString(f, "tokenizer.ggml.model");
  const tokens = f.metadata.get("tokenizer.ggml.tokens");
  if (!model || !Array.isArray(tokens))
    throw new LayerswarmError("BAD_FILE", `${f.path}: no tokenizer in the file (tokenizer.ggml.model / tokenizer.ggml.tokens missing)`);
  const arr = (k: string): number[] => {
    const v = f.metadata.get(k);
    return Array.isArray(v) ? v.map(Number) : [];
  };
  const flag = (k: string): boolean | undefined => {
    const v = f.metadata.get(k);
    return typeof v === "boolean" ? v : undefined;
  };
  const id = (k: string) => metaNumber(f, `tokenizer.ggml.${k}_token_id`);
  const strTokens = tokens.map(String);
  const types = arr("tokenizer.ggml.token_type");
  switch (model) {
    case "llama":
      return new SpmTokenizer({
        tokens: strTokens,
        scores: arr("tokenizer.ggml.scores"),
        types,
        bos: id("bos"),
        eos: id("eos"),
        eot: id("eot"),
        unk: id("unknown"),
        addBos: flag("tokenizer.ggml.add_bos_token") ?? true,
        addSpacePrefix: flag("tokenizer.ggml.add_space_prefix") ?? true,
      });
    case "gpt2": {
      const pre = metaString(f, "tokenizer.ggml.pre") ?? "gpt2";
      return new BpeTokenizer({
        tokens: strTokens,
        types,
        merges: (f.metadata.get("tokenizer.ggml.merges") as string[] | undefined)?.map(String) ?? [],
        pre,
        bos: id("bos"),
        eos: id("eos"),
        eot: id("eot"),
        eom: id("eom"),
        addBos: flag("tokenizer.ggml.add_bos_token") ?? preTokenizer(pre).addBos, // as llama.cpp when the file does not say
      });
    }
    default:
      throw new LayerswarmError("UNSUPPORTED", `${f.path}: tokenizer model "${model}" is not supported (supported: llama, gpt2)`);
  }
}

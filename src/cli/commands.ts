// Implementations of the CLI commands. Diagnostics go to stderr; only the
// requested output (generated text, inspection) goes to stdout.

import { GGUFFile, readGGUF, metaString } from "../format/gguf.js";
import { convertLlama2c } from "../format/llama2c.js";
import { resolveModel } from "./model.js";
import { progress } from "./swarm.js";
import { typeName } from "../format/quant.js";
import { SHAPES, SynthSpec, describeSpec, synthesize } from "../format/synth.js";
import { configFromGGUF, parseRange } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { layerBytes } from "../model/weights.js";
import { TextDecoderStream } from "../tokenizer/index.js";
import { ChatTemplate } from "../tokenizer/chat.js";

export interface GenerateFlags {
  model?: string;
  speculate?: "off" | "ngram";
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  repeatPenalty: number;
  seed?: number;
  threads: number;
  chunk: number;
  kernels?: "auto" | "native" | "ref";
  slices?: string;
  bos: boolean;
  stats?: boolean;
  chat?: boolean;
}

export async function generateCommand(prompt: string, o: GenerateFlags): Promise<void> {
  const t0 = performance.now();
  const slices = o.slices?.split(",").map(parseRange);
  const { file } = await resolveModel(o.model, progress);
  const { model, stack } = Model.local(file, { backend: o.kernels, threads: o.threads, slices });
  const ids = o.chat
    ? ChatTemplate.fromGGUF(model.file, model.tokenizer).encode([{ role: "user", content: prompt }])
    : model.tokenizer.encode(prompt, { addBos: o.bos ? undefined : false });
  const ac = new AbortController();
  process.once("SIGINT", () => ac.abort());
  const dec = new TextDecoderStream(model.tokenizer, ids.at(-1));
  const t1 = performance.now();
  let first = 0, n = 0;
  try {
    for await (const t of generate(model, stack, ids, {
      maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP,
      repetitionPenalty: o.repeatPenalty, seed: o.seed, chunkSize: o.chunk, signal: ac.signal, speculate: o.speculate,
    })) {
      if (n++ === 0) first = performance.now();
      process.stdout.write(dec.push(t.id));
    }
  } finally {
    process.stdout.write(dec.flush() + "\n");
    model.kernels.close();
  }
  if (o.stats) {
    const t2 = performance.now();
    process.stderr.write(
      `load ${(t1 - t0).toFixed(0)} ms · prompt ${ids.length} tok in ${(first - t1).toFixed(0)} ms (${((ids.length * 1000) / (first - t1)).toFixed(1)} tok/s) · ` +
        `${n} generated, ${n > 1 ? (((n - 1) * 1000) / (t2 - first)).toFixed(1) : "-"} tok/s · kernels ${model.kernels.name} × ${model.kernels.threads}\n`,
    );
  }
}

function fmtBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

export function inspect(f: GGUFFile) {
  const cfg = configFromGGUF(f);
  const types = new Map<string, number>();
  for (const t of f.tensors.values()) types.set(typeName(t.type), (types.get(typeName(t.type)) ?? 0) + 1);
  const tokens = f.metadata.get("tokenizer.ggml.tokens");
  return {
    file: f.path,
    ggufVersion: f.version,
    bytes: f.fileBytes,
    config: cfg,
    weightTypes: Object.fromEntries(types),
    tokenizer: {
      model: metaString(f, "tokenizer.ggml.model"),
      pre: metaString(f, "tokenizer.ggml.pre"),
      tokens: Array.isArray(tokens) ? tokens.length : 0,
      chatTemplate: f.metadata.has("tokenizer.chat_template"),
    },
    layers: Array.from({ length: cfg.nLayers }, (_, i) => layerBytes(f, i)),
    tensors: [...f.tensors.values()].map((t) => ({ name: t.name, dims: t.dims, type: typeName(t.type), bytes: t.bytes })),
  };
}

export function inspectCommand(file: string, o: { json?: boolean }): void {
  const r = inspect(readGGUF(file));
  if (o.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + "\n");
    return;
  }
  const c = r.config;
  const lines = [
    `${r.file}: GGUF v${r.ggufVersion}, ${fmtBytes(r.bytes)}`,
    `architecture  ${c.arch} "${c.name}"`,
    `shape         dim ${c.dim}, ${c.nLayers} layers, ${c.nHeads} heads (${c.nKVHeads} kv, head ${c.headDim}), ffn ${c.ffnDim}, vocab ${c.vocabSize}, context ${c.contextLength}`,
    `rope          base ${c.ropeBase}, ${c.ropeDim} dims, ${c.ropeHalves ? "halves (neox)" : "adjacent pairs"}${c.hasRopeFreqs ? ", frequency factors" : ""}`,
    `output        ${c.tiedOutput ? "tied to token_embd" : "own matrix"}${c.qkvBias ? ", q/k/v biases" : ""}${c.qkNorm ? ", q/k norms" : ""}`,
    `weight types  ${Object.entries(r.weightTypes).map(([k, v]) => `${k} ×${v}`).join(", ")}`,
    `tokenizer     ${r.tokenizer.model}${r.tokenizer.pre ? ` (${r.tokenizer.pre})` : ""}, ${r.tokenizer.tokens} tokens${r.tokenizer.chatTemplate ? ", chat template" : ""}`,
    `per layer     ${r.layers.map((b, i) => `${i}: ${fmtBytes(b)}`).join("  ")}`,
    "",
    ...r.tensors.map((t) => `  ${t.name.padEnd(28)} ${t.type.padEnd(5)} [${t.dims.join(", ")}] ${fmtBytes(t.bytes)}`),
  ];
  process.stdout.write(lines.join("\n") + "\n");
}

export function convertCommand(o: { llama2c: string; tokenizer: string; out: string; name?: string }): void {
  const c = convertLlama2c(o.llama2c, o.tokenizer, o.out, o.name);
  process.stderr.write(`wrote ${o.out}: dim ${c.dim}, ${c.nLayers} layers, vocab ${c.vocabSize}\n`);
}

export function synthCommand(o: Record<string, unknown>): void {
  const base = SHAPES[String(o.shape)];
  if (!base) throw new Error(`unknown shape "${o.shape}" (known: ${Object.keys(SHAPES).join(", ")})`);
  const pick = <T>(k: string, d: T): T => (o[k] === undefined ? d : (o[k] as T));
  const spec: SynthSpec = {
    ...base,
    arch: pick("arch", base.arch),
    dim: pick("dim", base.dim),
    layers: pick("layers", base.layers),
    heads: pick("heads", base.heads),
    kvHeads: pick("kvHeads", base.kvHeads),
    ffn: pick("ffn", base.ffn),
    vocab: pick("vocab", base.vocab),
    context: pick("context", base.context),
    tied: pick("tied", base.tied),
    type: String(o.type),
    seed: Number(o.seed),
  };
  const t0 = performance.now();
  const p = synthesize(spec, o.out as string | undefined);
  process.stderr.write(`${describeSpec(spec)} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  process.stdout.write(p + "\n");
}

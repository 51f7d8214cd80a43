// Child process of the GGUF fuzz test: for each mutation id it is sent, it writes
// the mutated file and does what `inspect` and `generate` do with it (read the
// header, build the config, size every layer, build the tokenizer, load all
// weights, run a few tokens), then answers how that ended. The parent kills it
// when an answer is late (a hang) and notes when it dies (a crash).
// Started with the TypeScript hooks in tshooks.mjs; "hang" and "throw" are
// canaries that show the parent catches both.

import * as fs from "node:fs";
import * as path from "node:path";
import { LayerswarmError } from "../errors.js";
import { readGGUF } from "../format/gguf.js";
import { configFromGGUF } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { layerBytes } from "../model/weights.js";
import { decodeAll } from "../tokenizer/index.js";
import { mutations } from "./ggufmutations.js";

export type CaseResult =
  | { id: number; outcome: "ok"; text: string }
  | { id: number; outcome: "error"; code: string; message: string }
  | { id: number; outcome: "crash"; error: string };

async function runFile(file: string): Promise<string> {
  const f = readGGUF(file);
  const cfg = configFromGGUF(f);
  Array.from({ length: cfg.nLayers }, (_, i) => layerBytes(f, i)); // as inspect does
  const { model, stack } = Model.local(file, { backend: "ref" });
  const prompt = model.tokenizer.encode("Once upon a time").slice(0, cfg.contextLength - 1);
  if (prompt.length === 0) return "";
  const out: number[] = [];
  for await (const t of generate(model, stack, prompt, { maxTokens: 4, temperature: 0 })) out.push(t.id);
  return decodeAll(model.tokenizer, out, prompt.at(-1));
}

async function main(): Promise<void> {
  const [source, dir] = process.argv.slice(2);
  const all = mutations(source);
  process.on("message", async (m: number | "hang" | "throw") => {
    if (m === "hang") for (;;);
    if (m === "throw") throw new TypeError("canary");
    const file = path.join(dir, `mutation-${m}.gguf`);
    let r: CaseResult;
    try {
      all[m].write(file);
    } catch (e) {
      process.send!({ id: m, outcome: "crash", error: `the test could not write this mutation: ${(e as Error).stack}` });
      return;
    }
    try {
      r = { id: m, outcome: "ok", text: await runFile(file) };
    } catch (e) {
      r = e instanceof LayerswarmError
        ? { id: m, outcome: "error", code: e.code, message: e.message }
        : { id: m, outcome: "crash", error: e instanceof Error ? (e.stack ?? e.message) : String(e) };
    } finally {
      fs.rmSync(file, { force: true });
    }
    process.send!(r);
  });
  process.send!("ready");
}

void main();

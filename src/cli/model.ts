// Which model a command serves (--model, or the demo shipped in the package),
// checked before anything is downloaded in full, loaded or started.

import { LayerswarmError } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import { typeInfo, typeName } from "../format/quant.js";
import { Progress, cachedModel, fetchModel, openRemoteSlice } from "../format/remote.js";
import { modelOrDemo } from "./paths.js";

// Weight types we compute with, from the type table.
export function supportedTypes(): string[] {
  const out: string[] = [];
  for (let t = 0; t < 64; t++) if (typeInfo(t)?.supported) out.push(typeName(t));
  return out;
}

// Every tensor in a type we compute with, or one error naming what is not.
export function checkWeightTypes(f: GGUFFile, spec: string): void {
  const bad = new Map<string, string[]>();
  for (const t of f.tensors.values()) if (!typeInfo(t.type)?.supported) bad.set(typeName(t.type), [...(bad.get(typeName(t.type)) ?? []), t.name]);
  if (bad.size === 0) return;
  const what = [...bad].map(([type, names]) => `${type} (${names.length} tensor${names.length > 1 ? "s" : ""}, e.g. ${names[0]})`).join(", ");
  throw new LayerswarmError("UNSUPPORTED",
    `${spec} holds weight types not supported yet: ${what}; supported: ${supportedTypes().join(", ")}. ` +
    `Choose a file of this model whose types all are (a Q8_0 file often is; \`layerswarm inspect FILE\` lists a file's types)`);
}

// The header of a model: the local file or cached download, else only the
// header fetched from the network.
export async function modelHeader(spec: string, onProgress?: Progress): Promise<GGUFFile> {
  const local = cachedModel(spec); // spec itself when it is a file
  return local ? readGGUF(local) : openRemoteSlice(spec, () => [], onProgress);
}

// --model (or the demo) as a local file: its weight types checked from the
// header first, so an unsupported file is refused before a long download.
export async function resolveModel(given: string | undefined, progress: (label: string) => Progress): Promise<{ spec: string; file: string }> {
  const spec = modelOrDemo(given);
  checkWeightTypes(await modelHeader(spec, progress("header")), spec);
  return { spec, file: await fetchModel(spec, progress("model")) };
}

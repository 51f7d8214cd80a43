// "Fine-tunes" for tests: a model file rewritten by our own GGUF writer with
// the same layout (metadata, tensor names, types and shapes) and the bytes of
// chosen tensors changed, as two fine-tunes of one base differ.

import { MetaValue, TypedMeta, readGGUF, readTensorBytes, writeGGUF } from "../format/gguf.js";
import { GGMLType } from "../format/quant.js";

// Each named tensor edited in place (default: an F32 tensor negated, any other type's bytes inverted).
// `metadata`: entries set (or replaced) in the copy.
export function fineTune(src: string, out: string, tensors: string[], edit?: (b: Uint8Array, type: number) => void, metadata: Record<string, TypedMeta> = {}): string {
  const f = readGGUF(src);
  const meta: Record<string, TypedMeta> = {};
  for (const [k, v] of f.metadata) if (k !== "general.alignment") meta[k] = { type: f.metaTypes.get(k)!, value: v as MetaValue };
  Object.assign(meta, metadata);
  for (const n of tensors) if (!f.tensors.has(n)) throw new Error(`fineTune: ${src} has no tensor ${n}`);
  const change = edit ?? ((b: Uint8Array, type: number) => {
    if (type === GGMLType.F32) {
      const x = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
      for (let i = 0; i < x.length; i++) x[i] = -x[i];
    } else for (let i = 0; i < b.length; i++) b[i] = ~b[i];
  });
  writeGGUF(out, meta, [...f.tensors.values()].map((t) => ({
    name: t.name, dims: t.dims, type: t.type,
    data: () => {
      const b = readTensorBytes(f, t.name);
      if (tensors.includes(t.name)) change(b, t.type);
      return b;
    },
  })), f.alignment);
  return out;
}

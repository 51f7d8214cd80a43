// Deterministic mutations of a GGUF file for the fuzz test (src/format/fuzz.test.ts),
// each with what a correct loader must make of it: truncations, flipped bytes in
// the header and in the tensor data, huge counts, bad tensor offsets, bad or
// duplicated metadata, and files rewritten with bad hyper-parameters, vocabularies
// or tensors. The file's layout is parsed here on its own (not with format/gguf.ts)
// so that the expectations do not come from the code under test.

import * as fs from "node:fs";
import { GGUFValueType, MetaValue, TensorToWrite, TypedMeta, readGGUF, writeGGUF } from "../format/gguf.js";
import { GGMLType } from "../format/quant.js";

export type Expect =
  | "reject" // must be refused with a LayerswarmError whose message matches `match`
  | "accept" // a valid file: it must load and run
  | "either"; // may be either, never a hang or a crash; a refusal must match `match`

export interface Mutation {
  id: number;
  family: string;
  name: string;
  expect: Expect;
  match: RegExp;
  write(path: string): void;
}

// ------------------------------------------------------------ layout

type FieldKind =
  | "magic" | "version" | "tensorCount" | "kvCount"
  | "keyLength" | "key" | "valueType" | "arrayType" | "arrayLength" | "stringLength" | "value" | "element"
  | "nameLength" | "name" | "nDims" | "dim" | "tensorType" | "tensorOffset" | "padding";

export interface Field {
  start: number;
  end: number;
  kind: FieldKind;
  owner: string; // the metadata key or the tensor name
  type?: number; // value type (value, element)
  index?: number; // array element
}

export interface Layout {
  fields: Field[];
  headerEnd: number; // end of the tensor infos
  dataOffset: number;
  tensors: { name: string; dims: number[]; type: number; rel: number }[];
}

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

// The byte ranges of every field of a well-formed GGUF file.
export function layoutOf(b: Buffer): Layout {
  const fields: Field[] = [];
  let pos = 0;
  const field = (n: number, kind: FieldKind, owner: string, type?: number, index?: number) => {
    fields.push({ start: pos, end: pos + n, kind, owner, type, index });
    pos += n;
  };
  const u64 = (at: number) => Number(b.readBigUInt64LE(at));
  const str = (lenKind: FieldKind, kind: FieldKind, owner: string, type?: number, index?: number) => {
    const n = u64(pos);
    field(8, lenKind, owner, undefined, index);
    field(n, kind, owner, type, index);
  };
  field(4, "magic", "");
  field(4, "version", "");
  const nTensors = u64(pos);
  field(8, "tensorCount", "");
  const nKV = u64(pos);
  field(8, "kvCount", "");
  let alignment = 32;
  for (let i = 0; i < nKV; i++) {
    const keyAt = pos + 8;
    const key = b.toString("utf8", keyAt, keyAt + u64(pos));
    str("keyLength", "key", key);
    const type = b.readUInt32LE(pos);
    field(4, "valueType", key);
    const one = (t: number, index?: number) => {
      if (t === GGUFValueType.STRING) str("stringLength", index === undefined ? "value" : "element", key, t, index);
      else field(SCALAR_BYTES[t], index === undefined ? "value" : "element", key, t, index);
    };
    if (type === GGUFValueType.ARRAY) {
      const et = b.readUInt32LE(pos);
      field(4, "arrayType", key);
      const n = u64(pos);
      field(8, "arrayLength", key);
      for (let j = 0; j < n; j++) one(et, j);
    } else {
      if (key === "general.alignment") alignment = b.readUInt32LE(pos);
      one(type);
    }
  }
  const tensors: Layout["tensors"] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = b.toString("utf8", pos + 8, pos + 8 + u64(pos));
    str("nameLength", "name", name);
    const nd = b.readUInt32LE(pos);
    field(4, "nDims", name);
    const dims: number[] = [];
    for (let d = 0; d < nd; d++) (dims.push(u64(pos)), field(8, "dim", name));
    const type = b.readUInt32LE(pos);
    field(4, "tensorType", name);
    tensors.push({ name, dims, type, rel: u64(pos) });
    field(8, "tensorOffset", name);
  }
  const headerEnd = pos;
  const dataOffset = Math.ceil(pos / alignment) * alignment;
  if (dataOffset > headerEnd) field(dataOffset - headerEnd, "padding", "");
  return { fields, headerEnd, dataOffset, tensors };
}

// ------------------------------------------------------------ helpers

// mulberry32: a small seeded generator, so that every run makes the same files
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const ANY = /\S/; // "either" without a more specific requirement: the generic checks still apply

function patched(orig: Buffer, edit: (b: Buffer) => void): (path: string) => void {
  return (path) => {
    const b = Buffer.from(orig);
    edit(b);
    fs.writeFileSync(path, b);
  };
}

// The original file as writeGGUF input, to rewrite with changes.
interface Parts {
  meta: Record<string, TypedMeta>;
  tensors: TensorToWrite[];
}

function partsOf(path: string, orig: Buffer): Parts {
  const f = readGGUF(path);
  const meta: Record<string, TypedMeta> = {};
  for (const [k, v] of f.metadata) meta[k] = { type: f.metaTypes.get(k)!, value: v as MetaValue };
  const tensors = [...f.tensors.values()].map((t) => {
    const data = new Uint8Array(orig.buffer, orig.byteOffset + t.offset, t.bytes);
    return { name: t.name, dims: [...t.dims], type: t.type, data: () => data };
  });
  return { meta, tensors };
}

const u32 = (v: number): TypedMeta => ({ type: GGUFValueType.UINT32, value: v });
const i32 = (v: number): TypedMeta => ({ type: GGUFValueType.INT32, value: v });
const u64 = (v: bigint): TypedMeta => ({ type: GGUFValueType.UINT64, value: v });
const f32 = (v: number): TypedMeta => ({ type: GGUFValueType.FLOAT32, value: v });
const str = (v: string): TypedMeta => ({ type: GGUFValueType.STRING, value: v });

// ------------------------------------------------------------ the mutations

export function mutations(path: string, seed = 7): Mutation[] {
  const orig = fs.readFileSync(path);
  const L = layoutOf(orig);
  const out: Mutation[] = [];
  const add = (family: string, name: string, expect: Expect, match: RegExp, write: (p: string) => void) =>
    out.push({ id: out.length, family, name, expect, match, write });
  const r = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const fieldsOf = (kind: FieldKind, owner?: string) => L.fields.filter((f) => f.kind === kind && (owner === undefined || f.owner === owner));
  const fieldAt = (kind: FieldKind, owner: string) => {
    const f = fieldsOf(kind, owner)[0];
    if (!f) throw new Error(`no ${kind} field for ${owner}`);
    return f.start;
  };
  const tensorNames = L.tensors.map((t) => t.name);
  let parts: Parts | undefined;
  const rewrite = (edit: (p: Parts) => Parts | void, alignment = 32) => (p: string) => {
    parts ??= partsOf(path, orig);
    const copy: Parts = { meta: { ...parts.meta }, tensors: parts.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
    const edited = edit(copy) ?? copy;
    writeGGUF(p, edited.meta, edited.tensors, alignment);
  };

  // 1. truncations: at the edges of the first fields, then anywhere in the header and the data
  const cuts = new Set<number>([0, 3, 4, 7, 8, 12, 16, 20, 24, 25, 31, L.headerEnd - 1, L.headerEnd, L.dataOffset, L.dataOffset + 1, orig.length - 1]);
  while (cuts.size < 40) cuts.add(Math.floor(r() * L.dataOffset));
  while (cuts.size < 64) cuts.add(L.dataOffset + Math.floor(r() * (orig.length - L.dataOffset)));
  for (const n of [...cuts].sort((a, b) => a - b))
    add("truncate", `truncated to ${n} bytes`, "reject", /truncated|not a GGUF|implausible|beyond the end/, (p) => fs.writeFileSync(p, orig.subarray(0, n)));

  // 2. one flipped byte in the header: half anywhere (mostly the vocabulary),
  // half in fields other than array elements (keys, types, lengths, hyper-parameters, tensor infos)
  const header = L.fields.filter((f) => f.end > f.start);
  const structural = header.filter((f) => f.index === undefined && f.kind !== "padding");
  for (let i = 0; i < 200; i++) {
    let at: number, fld: Field;
    if (i % 2 === 0) {
      at = Math.floor(r() * L.dataOffset);
      fld = header.find((f) => f.start <= at && at < f.end)!;
    } else {
      fld = pick(structural);
      at = fld.start + Math.floor(r() * (fld.end - fld.start));
    }
    const mask = r() < 0.5 ? 1 << Math.floor(r() * 8) : 1 + Math.floor(r() * 255);
    const [expect, match] = expectFlip(orig, fld, at, mask);
    add("flip-header", `byte ${at} ^ 0x${mask.toString(16)} (${fld.kind} of ${fld.owner || "file"})`, expect, match, patched(orig, (b) => (b[at] ^= mask)));
  }

  // 3. one flipped byte in the tensor data: a valid file with other weights
  for (let i = 0; i < 50; i++) {
    const at = L.dataOffset + Math.floor(r() * (orig.length - L.dataOffset));
    const mask = 1 + Math.floor(r() * 255);
    add("flip-data", `data byte ${at} ^ 0x${mask.toString(16)}`, "accept", ANY, patched(orig, (b) => (b[at] ^= mask)));
  }

  // 4. counts and lengths patched in place
  const setU64 = (at: number, v: bigint) => patched(orig, (b) => b.writeBigUInt64LE(v, at));
  const setU32 = (at: number, v: number) => patched(orig, (b) => b.writeUInt32LE(v >>> 0, at));
  const nT = BigInt(L.tensors.length), nKV = BigInt(fieldsOf("keyLength").length);
  for (const v of [2n ** 64n - 1n, 2n ** 63n, 2n ** 32n, 2n ** 20n]) add("count", `tensor count ${v}`, "reject", /tensor count/, setU64(8, v));
  add("count", `tensor count ${nT + 1n}`, "reject", ANY, setU64(8, nT + 1n));
  add("count", `tensor count ${nT - 1n} (the last tensor lost)`, "reject", /blk\.4\.ffn_norm\.weight/, setU64(8, nT - 1n));
  add("count", "tensor count 0", "reject", /token_embd\.weight|truncated|implausible/, setU64(8, 0n));
  for (const v of [2n ** 64n - 1n, 2n ** 63n, 2n ** 40n, 2n ** 24n]) add("count", `metadata count ${v}`, "reject", /metadata count/, setU64(16, v));
  add("count", `metadata count ${nKV + 1n}`, "reject", ANY, setU64(16, nKV + 1n));
  add("count", `metadata count ${nKV - 1n}`, "reject", ANY, setU64(16, nKV - 1n));
  add("count", "metadata count 0", "reject", ANY, setU64(16, 0n));
  for (const [key, vs] of [["tokenizer.ggml.tokens", [2n ** 61n, 2n ** 40n, 2n ** 32n, 2n ** 20n]], ["tokenizer.ggml.scores", [2n ** 62n, 2n ** 30n]], ["tokenizer.ggml.token_type", [2n ** 63n + 5n, 2n ** 29n]]] as const)
    for (const v of vs) add("count", `${key} length ${v}`, "reject", new RegExp(esc(key)), setU64(fieldAt("arrayLength", key), v));
  for (const v of [0n, 1n, 511n, 513n]) add("count", `tokenizer.ggml.tokens length ${v}`, "reject", ANY, setU64(fieldAt("arrayLength", "tokenizer.ggml.tokens"), v));
  for (const v of [2n ** 63n, 2n ** 26n + 1n, 2n ** 21n]) add("count", `general.name length ${v}`, "reject", /general\.name/, setU64(fieldAt("stringLength", "general.name"), v));
  add("count", "first key length 2^63", "reject", /metadata key #0/, setU64(24, 2n ** 63n));
  add("count", "first key length 0", "reject", /metadata key #0 .*empty/, setU64(24, 0n));
  for (const name of ["token_embd.weight", "blk.2.ffn_up.weight"]) {
    const i = tensorNames.indexOf(name);
    add("count", `${name} name length 2^63`, "reject", new RegExp(`tensor name #${i}`), setU64(fieldAt("nameLength", name), 2n ** 63n));
    add("count", `${name} name length 64`, "reject", new RegExp(`tensor name #${i}`), setU64(fieldAt("nameLength", name), 64n));
    for (const v of [0, 5, 2 ** 31]) add("count", `${name} with ${v} dims`, "reject", new RegExp(`${esc(name)}" has ${v} dimensions`), setU32(fieldAt("nDims", name), v));
    for (const v of [0n, 2n ** 40n, 2n ** 63n]) add("count", `${name} dim 0 = ${v}`, "reject", new RegExp(esc(name)), setU64(fieldAt("dim", name), v));
  }
  for (const v of [13, 2 ** 31]) add("count", `llama.context_length of value type ${v}`, "reject", /unknown value type/, setU32(fieldAt("valueType", "llama.context_length"), v));
  add("count", "tokens as an array of arrays", "reject", /nested arrays in "tokenizer\.ggml\.tokens"/, setU32(fieldAt("arrayType", "tokenizer.ggml.tokens"), GGUFValueType.ARRAY));
  add("count", "scores as an array of value type 99", "reject", /array of unknown value type 99/, setU32(fieldAt("arrayType", "tokenizer.ggml.scores"), 99));

  // 5. tensor offsets and names patched in place
  const offsetOf = (name: string) => fieldAt("tensorOffset", name);
  const rel = (name: string) => BigInt(L.tensors.find((t) => t.name === name)!.rel);
  const dataBytes = BigInt(orig.length - L.dataOffset);
  for (const name of ["token_embd.weight", "blk.0.attn_k.weight", "blk.3.ffn_down.weight", "blk.4.ffn_norm.weight"]) {
    const o = offsetOf(name), n = esc(name);
    for (const d of [1n, 8n, 16n]) add("offset", `${name} offset +${d}`, "reject", new RegExp(`${n}" has offset \\d+ in the data section, not a multiple of general\\.alignment 32`), setU64(o, rel(name) + d));
    add("offset", `${name} offset at the end of the data`, "reject", new RegExp(`${n}.*beyond the end`), setU64(o, dataBytes));
    add("offset", `${name} offset 2^50`, "reject", new RegExp(`${n}" has offset \\d+ in the data section, beyond the end`), setU64(o, 2n ** 50n));
    add("offset", `${name} offset 2^64-32`, "reject", new RegExp(`${n}" has offset`), setU64(o, 2n ** 64n - 32n));
  }
  for (const [name, other] of [["output.weight", "output_norm.weight"], ["blk.1.attn_q.weight", "blk.1.attn_k.weight"], ["blk.2.ffn_norm.weight", "blk.2.ffn_up.weight"], ["blk.0.attn_q.weight", "token_embd.weight"]]) {
    add("offset", `${name} at ${other}'s offset (overlap)`, "reject", new RegExp(`(${esc(name)}|${esc(other)}).*overlap`), setU64(offsetOf(name), rel(other)));
    add("offset", `${name} 32 bytes into ${other} (overlap)`, "reject", /overlap/, setU64(offsetOf(name), rel(other) + 32n));
  }
  add("offset", "last tensor 32 bytes later (past the end)", "reject", /truncated: tensor "blk\.4\.ffn_norm\.weight"/, setU64(offsetOf("blk.4.ffn_norm.weight"), rel("blk.4.ffn_norm.weight") + 32n));
  add("offset", "attn_k and attn_v of layer 0 swap their bytes (same size)", "accept", ANY, patched(orig, (b) => {
    b.writeBigUInt64LE(rel("blk.0.attn_v.weight"), offsetOf("blk.0.attn_k.weight"));
    b.writeBigUInt64LE(rel("blk.0.attn_k.weight"), offsetOf("blk.0.attn_v.weight"));
  }));
  add("offset", "blk.1.attn_q.weight read as F16 (half its bytes, a gap after it)", "accept", ANY, setU32(fieldAt("tensorType", "blk.1.attn_q.weight"), GGMLType.F16));
  add("offset", "blk.1.attn_q.weight of unknown ggml type 77", "reject", /blk\.1\.attn_q\.weight" has unknown ggml type 77/, setU32(fieldAt("tensorType", "blk.1.attn_q.weight"), 77));
  const nameAt = (name: string, s: string) => patched(orig, (b) => b.write(s, fieldAt("name", name)));
  add("duplicate", "blk.0.attn_q.weight renamed blk.0.attn_k.weight", "reject", /duplicate tensor "blk\.0\.attn_k\.weight"/, nameAt("blk.0.attn_q.weight", "blk.0.attn_k.weight"));
  add("duplicate", "blk.3.ffn_up.weight renamed blk.3.ffn_up.weighu", "reject", /missing tensor "blk\.3\.ffn_up\.weight"/, nameAt("blk.3.ffn_up.weight", "blk.3.ffn_up.weighu"));
  add("duplicate", "blk.2.ffn_up.weight renamed blk.7.ffn_up.weight", "reject", /"blk\.7\.ffn_up\.weight" belongs to layer 7, but llama\.block_count is 5/, nameAt("blk.2.ffn_up.weight", "blk.7.ffn_up.weight"));
  add("duplicate", "output.weight renamed outpux.weight (the head ties to the embedding)", "accept", ANY, nameAt("output.weight", "outpux.weight"));
  const keyAt = (key: string, s: string) => patched(orig, (b) => b.write(s, fieldAt("key", key)));
  add("duplicate", "bos_token_id renamed eos_token_id", "reject", /duplicate metadata key "tokenizer\.ggml\.eos_token_id"/, keyAt("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"));
  // writeGGUF takes a record, so the second key is written under another name and renamed in place
  const renamed = (write: (p: string) => void, from: string, to: string) => (pth: string) => {
    write(pth);
    const b = fs.readFileSync(pth);
    b.write(to, b.indexOf(from));
    fs.writeFileSync(pth, b);
  };
  add("duplicate", "general.name twice", "reject", /duplicate metadata key "general\.name"/,
    renamed(rewrite((p) => void (p.meta["general.namX"] = str("again"))), "general.namX", "general.name"));

  // 6. files rewritten with bad metadata values (and a few good ones, which must load)
  const A = "llama.";
  const setMeta = (k: string, v: TypedMeta | undefined) => rewrite((p) => { if (v) p.meta[k] = v; else delete p.meta[k]; });
  const meta = (k: string, v: TypedMeta | undefined, expect: Expect, match = new RegExp(esc(k))) =>
    add("metadata", `${k} = ${v === undefined ? "(absent)" : `${GGUFValueType[v.type]} ${String(v.value).slice(0, 40)}`}`, expect, match, setMeta(k, v));
  add("metadata", "rewritten unchanged", "accept", ANY, rewrite(() => {}));
  add("metadata", "rewritten with 64-byte alignment", "accept", ANY, rewrite(() => {}, 64));
  for (const v of [NaN, 0, -1e-5, Infinity, 1, 2]) meta(A + "attention.layer_norm_rms_epsilon", f32(v), "reject");
  meta(A + "attention.layer_norm_rms_epsilon", str("1e-5"), "reject");
  meta(A + "attention.layer_norm_rms_epsilon", f32(1e-6), "accept", ANY);
  meta(A + "attention.layer_norm_rms_epsilon", undefined, "accept", ANY);
  for (const v of [0, NaN, -10000, Infinity]) meta(A + "rope.freq_base", f32(v), "reject");
  meta(A + "rope.freq_base", f32(500000), "accept", ANY);
  for (const v of [0, 7, 10, 16, 2 ** 32 - 1]) meta(A + "rope.dimension_count", u32(v), "reject");
  meta(A + "rope.dimension_count", u32(4), "accept", ANY);
  meta(A + "rope.dimension_count", f32(8), "reject");
  for (const v of [0, 2 ** 24 + 1, 2 ** 32 - 1]) meta(A + "context_length", u32(v), "reject");
  meta(A + "context_length", f32(1e12), "reject");
  meta(A + "context_length", u64(2n ** 63n), "reject");
  meta(A + "context_length", u64(2n ** 53n + 2n), "reject");
  meta(A + "context_length", i32(-512), "reject");
  meta(A + "context_length", undefined, "reject");
  meta(A + "context_length", u64(64n), "accept", ANY);
  for (const v of [2 ** 31, 0, 4, 6, 2 ** 32 - 1]) meta(A + "block_count", u32(v), "reject");
  meta(A + "block_count", u64(2n ** 63n), "reject");
  meta(A + "block_count", f32(5), "reject");
  meta(A + "block_count", str("5"), "reject");
  for (const v of [0, 32, 65, 2 ** 31]) meta(A + "embedding_length", u32(v), "reject");
  for (const v of [0, 3, 7, 16, 2 ** 31]) meta(A + "attention.head_count", u32(v), "reject");
  for (const v of [0, 3, 8, 16]) meta(A + "attention.head_count_kv", u32(v), "reject");
  meta(A + "attention.key_length", u32(6), "reject", /attention\.key_length/);
  meta(A + "attention.key_length", u32(7), "reject", /attention\.key_length/);
  meta(A + "attention.value_length", u32(16), "reject");
  for (const v of [0, 171, 2 ** 21]) meta(A + "feed_forward_length", u32(v), "reject");
  meta(A + "vocab_size", u32(511), "reject");
  meta(A + "vocab_size", u32(512), "accept", ANY);
  meta("general.architecture", str("gptj"), "reject", /architecture "gptj" is not supported/);
  meta("general.architecture", u32(1), "reject", /general\.architecture/);
  meta("general.architecture", undefined, "reject", /general\.architecture/);
  meta("general.name", undefined, "accept", ANY);
  for (const v of [0, 3, 24, 2 ** 31]) meta("general.alignment", u32(v), "reject", /general\.alignment|beyond the end/);
  meta("general.alignment", str("32"), "reject");
  meta("general.alignment", u64(32n), "reject");
  meta("general.alignment", u32(32), "accept", ANY);
  meta("x.big", { type: GGUFValueType.UINT8, value: new Array(100_000).fill(7) }, "accept", ANY);
  meta("tokenizer.ggml.model", str("bert"), "reject", /tokenizer model "bert" is not supported/);

  // the vocabulary
  const T = "tokenizer.ggml.";
  const arr = (k: string) => parts!.meta[k].value as (string | number)[];
  const vocab = (name: string, expect: Expect, match: RegExp, edit: (p: Parts) => void) => add("vocabulary", name, expect, match, rewrite(edit));
  vocab("no tokens", "reject", /tokenizer\.ggml\.tokens has 0 entries/, (p) => void (p.meta[T + "tokens"] = { type: GGUFValueType.STRING, value: [] }));
  vocab("3 tokens", "reject", /tokenizer\.ggml\.tokens has 3 entries, but the vocabulary .* has 512/, (p) => void (p.meta[T + "tokens"] = { type: GGUFValueType.STRING, value: arr(T + "tokens").slice(0, 3) }));
  vocab("513 tokens", "reject", /tokenizer\.ggml\.tokens has 513 entries/, (p) => void (p.meta[T + "tokens"] = { type: GGUFValueType.STRING, value: [...arr(T + "tokens"), "extra"] }));
  vocab("tokens as integers", "reject", /tokenizer\.ggml\.tokens\[0\] is 0, expected a string/, (p) => void (p.meta[T + "tokens"] = { type: GGUFValueType.INT32, value: arr(T + "tokens").map((_, i) => i) }));
  vocab("tokens a single string", "reject", /tokenizer\.ggml\.tokens is not an array/, (p) => void (p.meta[T + "tokens"] = str("a b c")));
  vocab("3 scores", "reject", /tokenizer\.ggml\.scores has 3 entries/, (p) => void (p.meta[T + "scores"] = { type: GGUFValueType.FLOAT32, value: arr(T + "scores").slice(0, 3) }));
  for (const v of [NaN, Infinity, -Infinity])
    vocab(`score 17 = ${v}`, "reject", /tokenizer\.ggml\.scores\[17\]/, (p) => void (p.meta[T + "scores"] = { type: GGUFValueType.FLOAT32, value: arr(T + "scores").map((s, i) => (i === 17 ? v : s)) }));
  for (const v of [9, -1, 2 ** 31 - 1])
    vocab(`token type 100 = ${v}`, "reject", /tokenizer\.ggml\.token_type\[100\]/, (p) => void (p.meta[T + "token_type"] = { type: GGUFValueType.INT32, value: arr(T + "token_type").map((s, i) => (i === 100 ? v : s)) }));
  vocab("token types as u64 beyond 2^53", "reject", /token_type/, (p) => void (p.meta[T + "token_type"] = { type: GGUFValueType.UINT64, value: arr(T + "token_type").map((s) => BigInt(s) + 2n ** 60n) as unknown as number[] }));
  vocab("no scores (merges never apply)", "accept", ANY, (p) => void delete p.meta[T + "scores"]);
  vocab("no token types", "accept", ANY, (p) => void delete p.meta[T + "token_type"]);
  vocab("merges of integers", "reject", /tokenizer\.ggml\.merges/, (p) => void (p.meta[T + "merges"] = { type: GGUFValueType.INT32, value: [1, 2] }));
  for (const [k, v] of [["bos_token_id", u32(512)], ["eos_token_id", u64(2n ** 60n)], ["unknown_token_id", i32(-1)], ["padding_token_id", u32(4096)], ["bos_token_id", f32(1)], ["eos_token_id", str("2")]] as const)
    meta(T + k, v, "reject");
  meta(T + "bos_token_id", u32(511), "accept", ANY);
  vocab("a 3-token vocabulary with a 3-row embedding", "reject", /the vocabulary has 3 tokens .* fewer than 4/, (p) => {
    for (const k of ["tokens", "scores", "token_type"]) p.meta[T + k] = { ...p.meta[T + k], value: arr(T + k).slice(0, 3) };
    for (const t of p.tensors) if (t.name === "token_embd.weight" || t.name === "output.weight") {
      const d = t.data().subarray(0, 64 * 3 * 4);
      (t.dims = [64, 3]), (t.data = () => d);
    }
  });
  add("vocabulary", "the bool add_bos_token stored as byte 2", "reject", /tokenizer\.ggml\.add_bos_token" holds the bool byte 2/, (pth) => {
    rewrite((p) => void (p.meta[T + "add_bos_token"] = { type: GGUFValueType.BOOL, value: true }))(pth);
    const b = fs.readFileSync(pth);
    b[b.indexOf(T + "add_bos_token") + (T + "add_bos_token").length + 4] = 2; // after the key and its value type
    fs.writeFileSync(pth, b);
  });

  // 7. files rewritten with missing, extra or misshapen tensors
  const tensorsEdit = (name: string, expect: Expect, match: RegExp, edit: (ts: TensorToWrite[]) => TensorToWrite[]) =>
    add("tensors", name, expect, match, rewrite((p) => void (p.tensors = edit(p.tensors))));
  const f32Tensor = (name: string, dims: number[], v = 1): TensorToWrite => {
    const d = new Uint8Array(new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(v).buffer);
    return { name, dims, type: GGMLType.F32, data: () => d };
  };
  const without = (re: RegExp) => (ts: TensorToWrite[]) => ts.filter((t) => !re.test(t.name));
  tensorsEdit("no blk.3.ffn_up.weight", "reject", /missing tensor "blk\.3\.ffn_up\.weight"/, without(/^blk\.3\.ffn_up\.weight$/));
  tensorsEdit("no layer 4 (block_count 5)", "reject", /llama\.block_count is 5, but the file has no tensors for layer 4/, without(/^blk\.4\./));
  tensorsEdit("no layer 2 (block_count 5)", "reject", /no tensors for layer 2/, without(/^blk\.2\./));
  tensorsEdit("no token_embd.weight", "reject", /missing tensor "token_embd\.weight"/, without(/^token_embd\.weight$/));
  tensorsEdit("no output_norm.weight", "reject", /missing tensor "output_norm\.weight"/, without(/^output_norm\.weight$/));
  tensorsEdit("no output.weight (the head ties to the embedding)", "accept", ANY, without(/^output\.weight$/));
  tensorsEdit("an extra layer 5 (block_count 5)", "reject", /"blk\.5\.[a-z_.]+" belongs to layer 5, but llama\.block_count is 5/, (ts) => [
    ...ts, ...ts.filter((t) => t.name.startsWith("blk.4.")).map((t) => ({ ...t, name: t.name.replace("blk.4.", "blk.5.") }))]);
  tensorsEdit("layer 99999999999 (block_count 5)", "reject", /belongs to layer 99999999999/, (ts) => [...ts, f32Tensor("blk.99999999999.attn_norm.weight", [64])]);
  tensorsEdit("blk.2.attn_q.weight of shape [64, 32]", "reject", /tensor "blk\.2\.attn_q\.weight" has shape \[64,32\], expected \[64,64\]/, (ts) =>
    ts.map((t) => (t.name === "blk.2.attn_q.weight" ? f32Tensor(t.name, [64, 32]) : t)));
  tensorsEdit("blk.1.ffn_norm.weight of shape [64, 1]", "reject", /"blk\.1\.ffn_norm\.weight" has shape \[64,1\], expected \[64\]/, (ts) =>
    ts.map((t) => (t.name === "blk.1.ffn_norm.weight" ? { ...t, dims: [64, 1] } : t)));
  tensorsEdit("token_embd.weight of 511 rows", "reject", /"output\.weight" has shape \[64,512\], expected \[64,511\]/, (ts) =>
    ts.map((t) => (t.name === "token_embd.weight" ? f32Tensor(t.name, [64, 511]) : t)));
  tensorsEdit("an unrelated extra tensor", "accept", ANY, (ts) => [...ts, f32Tensor("extra.weight", [64])]);
  tensorsEdit("a q bias in layer 0 only", "reject", /missing tensor "blk\.0\.attn_k\.bias"/, (ts) => [...ts, f32Tensor("blk.0.attn_q.bias", [64], 0)]);
  tensorsEdit("rope frequency factors (llama 3.1 style)", "accept", ANY, (ts) => [...ts, f32Tensor("rope_freqs.weight", [4])]);
  tensorsEdit("rope frequency factors of the wrong size", "reject", /"rope_freqs\.weight" has shape \[8\], expected \[4\]/, (ts) => [...ts, f32Tensor("rope_freqs.weight", [8])]);
  tensorsEdit("a tensor name of 64 bytes", "reject", /length of tensor name #48 64/, (ts) => [...ts, f32Tensor("x".repeat(64), [64])]);
  tensorsEdit("a tensor name of 63 bytes", "accept", ANY, (ts) => [...ts, f32Tensor("x".repeat(63), [64])]);
  tensorsEdit("a 5-dimensional tensor", "reject", /has 5 dimensions/, (ts) => [...ts, f32Tensor("extra.weight", [2, 2, 2, 2, 2])]);
  return out;
}

// What a correct loader makes of one flipped header byte, from the field it falls in.
function expectFlip(orig: Buffer, f: Field, at: number, mask: number): [Expect, RegExp] {
  const b = Buffer.from(orig.subarray(f.start, f.end));
  b[at - f.start] ^= mask;
  const name = new RegExp(esc(f.owner));
  switch (f.kind) {
    case "magic": return ["reject", /not a GGUF/];
    case "version": return ["reject", /version/];
    case "padding": return ["accept", ANY];
    case "dim": return ["reject", name]; // a tighter or looser tensor: overlaps, runs past the end or misses its shape
    case "tensorOffset": return ["reject", name]; // tensors are packed: any move is unaligned, overlapping or outside
    case "tensorType": return ["either", name]; // F32 -> F16 is a valid file
    case "value": case "element": return expectValue(f, b);
    default: return ["either", ANY]; // lengths, types, counts, keys, names: almost always refused, sometimes a valid file
  }
}

function expectValue(f: Field, b: Buffer): [Expect, RegExp] {
  const key = f.owner, k = new RegExp(esc(key.replace(/^llama\./, "")));
  const v = f.type === GGUFValueType.FLOAT32 ? b.readFloatLE(0) : f.type === GGUFValueType.UINT32 ? b.readUInt32LE(0) : f.type === GGUFValueType.INT32 ? b.readInt32LE(0) : NaN;
  const ok = (yes: boolean, match = k): [Expect, RegExp] => (yes ? ["accept", ANY] : ["reject", match]);
  switch (key) {
    case "general.architecture": return ["reject", /architecture/];
    case "general.name": return ["accept", ANY];
    case "tokenizer.ggml.model": return ["reject", /tokenizer model/];
    case "tokenizer.ggml.tokens": return ["accept", ANY]; // another text for one token
    case "tokenizer.ggml.scores": return ok(Number.isFinite(v), new RegExp(`tokenizer\\.ggml\\.scores\\[${f.index}\\]`));
    case "tokenizer.ggml.token_type": return ok(v >= 0 && v <= 6, new RegExp(`tokenizer\\.ggml\\.token_type\\[${f.index}\\]`));
    case "tokenizer.ggml.unknown_token_id": case "tokenizer.ggml.bos_token_id": case "tokenizer.ggml.eos_token_id": return ok(v < 512);
    case "llama.context_length": return ok(v >= 1 && v <= 2 ** 24);
    case "llama.rope.dimension_count": return ok(v >= 2 && v <= 8 && v % 2 === 0);
    case "llama.attention.layer_norm_rms_epsilon": return ok(Number.isFinite(v) && v > 0 && v < 1);
    // the shapes of the tensors pin these: any other value is refused
    case "llama.embedding_length": case "llama.block_count": case "llama.feed_forward_length":
    case "llama.attention.head_count": case "llama.attention.head_count_kv":
      return ["reject", k];
    default: return ["either", ANY];
  }
}

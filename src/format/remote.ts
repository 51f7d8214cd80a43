// Models from the network. `--model` takes a local file, an http(s) URL, or a
// Hugging Face reference hf:<owner>/<repo>/<file.gguf>[@revision].
//
// - fetchModel: the whole file, downloaded once into the cache, resumable
//   (Range: bytes=N-), its size verified, with progress.
// - openRemoteSlice: only what a process needs: the header, then just the byte
//   ranges of the tensors it will load, written at their own offsets into a
//   sparse cache file (holes take no disk), so the ordinary GGUF reader reads it.

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { LayerswarmError, throwIfAborted } from "../errors.js";
import { GGUFFile, readGGUF } from "./gguf.js";
import { cacheDir } from "./synth.js";

export interface Progress {
  (e: { what: string; bytes: number; total: number; done: boolean }): void;
}

export function isRemote(spec: string): boolean {
  return /^https?:\/\//i.test(spec) || spec.startsWith("hf:");
}

export function resolveUrl(spec: string): string {
  if (!spec.startsWith("hf:")) return spec;
  const m = /^hf:([^/]+)\/([^/]+)\/(.+?)(?:@([^@/]+))?$/.exec(spec);
  if (!m) throw new LayerswarmError("BAD_ARGUMENT", `"${spec}" is not a Hugging Face reference: use hf:<owner>/<repo>/<file.gguf>[@revision]`);
  const endpoint = (process.env.LAYERSWARM_HF_ENDPOINT ?? "https://huggingface.co").replace(/\/$/, "");
  return `${endpoint}/${m[1]}/${m[2]}/resolve/${m[4] ?? "main"}/${m[3]}`;
}

export const DEFAULT_MODEL = "hf:ggml-org/tiny-llamas/stories15M-q8_0.gguf";

function cachePath(url: string, suffix: string): string {
  const h = crypto.createHash("sha256").update(url).digest("hex").slice(0, 16);
  const base = path.basename(new URL(url).pathname).replace(/[^A-Za-z0-9._-]/g, "_") || "model.gguf";
  return path.join(cacheDir(), "models", `${h}-${base}${suffix}`);
}

async function get(url: string, range: string | undefined, signal?: AbortSignal): Promise<Response> {
  let r: Response;
  try {
    r = await fetch(url, { headers: range ? { range } : {}, signal, redirect: "follow" });
  } catch (e) {
    throw new LayerswarmError("BAD_FILE", `cannot fetch ${url}: ${(e as Error).message}`, { cause: e });
  }
  if (!r.ok) throw new LayerswarmError("BAD_FILE", `${url}: HTTP ${r.status} ${r.statusText}`);
  return r;
}

// Total size of the remote file.
async function remoteSize(url: string, signal?: AbortSignal): Promise<number> {
  const r = await get(url, "bytes=0-0", signal);
  await r.body?.cancel();
  const cr = r.headers.get("content-range");
  const total = cr ? Number(/\/(\d+)$/.exec(cr)?.[1]) : Number(r.headers.get("content-length"));
  if (!(total > 0)) throw new LayerswarmError("BAD_FILE", `${url}: the server does not say how big the file is`);
  if (r.status !== 206) throw new LayerswarmError("BAD_FILE", `${url}: the server does not support range requests`);
  return total;
}

// Download the whole file into the cache (resuming a partial download).
export async function fetchModel(spec: string, onProgress?: Progress, signal?: AbortSignal): Promise<string> {
  if (!isRemote(spec)) return spec;
  const url = resolveUrl(spec);
  const dest = cachePath(url, "");
  if (fs.existsSync(dest)) return dest;
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const part = dest + ".part";
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(signal);
    const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    let r: Response;
    try {
      r = await get(url, have > 0 ? `bytes=${have}-` : undefined, signal);
    } catch (e) {
      if (attempt < 5 && !(e as LayerswarmError).message?.includes("HTTP 4")) continue;
      throw e;
    }
    let total: number;
    let start = have;
    if (r.status === 206) {
      const m = /bytes (\d+)-(\d+)\/(\d+)/.exec(r.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== have) throw new LayerswarmError("BAD_FILE", `${url}: the server answered a resume from ${have} with "${r.headers.get("content-range")}"`);
      total = Number(m[3]);
    } else {
      total = Number(r.headers.get("content-length") ?? 0);
      start = 0; // the server ignored the range: start over
    }
    const out = fs.openSync(part, start === 0 ? "w" : "a");
    let got = start;
    try {
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
        fs.writeSync(out, chunk);
        got += chunk.length;
        onProgress?.({ what: path.basename(dest), bytes: got, total, done: false });
      }
    } catch (e) {
      fs.closeSync(out);
      if (signal?.aborted) throw e;
      if (attempt < 5) continue; // the connection broke: resume
      throw new LayerswarmError("BAD_FILE", `${url}: download failed at ${got} of ${total} bytes: ${(e as Error).message}`, { cause: e });
    }
    fs.closeSync(out);
    if (total > 0 && got < total) {
      if (attempt < 5) continue;
      throw new LayerswarmError("BAD_FILE", `${url}: download stopped at ${got} of ${total} bytes`);
    }
    if (total > 0 && got !== total) throw new LayerswarmError("BAD_FILE", `${url}: received ${got} bytes, the server announced ${total}`);
    onProgress?.({ what: path.basename(dest), bytes: got, total: got, done: true });
    fs.renameSync(part, dest);
    return dest;
  }
}

interface SparseState {
  url: string;
  size: number;
  have: [number, number][]; // downloaded [start, end) byte ranges, merged
}

function addRange(have: [number, number][], r: [number, number]): [number, number][] {
  const all = [...have, r].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const x of all) {
    const last = out[out.length - 1];
    if (last && x[0] <= last[1]) last[1] = Math.max(last[1], x[1]);
    else out.push([x[0], x[1]]);
  }
  return out;
}

function missing(have: [number, number][], r: [number, number]): [number, number][] {
  const out: [number, number][] = [];
  let cur = r[0];
  for (const [a, b] of have) {
    if (b <= cur || a >= r[1]) continue;
    if (a > cur) out.push([cur, Math.min(a, r[1])]);
    cur = Math.max(cur, b);
  }
  if (cur < r[1]) out.push([cur, r[1]]);
  return out;
}

// The header of a remote model plus the bytes of the tensors `need` names;
// returns the sparse local file's GGUF, readable like any other.
export async function openRemoteSlice(spec: string, need: (f: GGUFFile) => string[], onProgress?: Progress, signal?: AbortSignal): Promise<GGUFFile> {
  const url = resolveUrl(spec);
  const file = cachePath(url, ".sparse");
  const meta = file + ".json";
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let st: SparseState | undefined = fs.existsSync(meta) ? JSON.parse(fs.readFileSync(meta, "utf8")) : undefined;
  const size = await remoteSize(url, signal);
  if (!st || st.size !== size || st.url !== url) {
    st = { url, size, have: [] };
    fs.writeFileSync(file, "");
    fs.truncateSync(file, size);
  }
  const fd = fs.openSync(file, "r+");
  let fetched = 0;
  const fetchRange = async (r: [number, number], total: number) => {
    for (const [a, b] of missing(st!.have, r)) {
      throwIfAborted(signal);
      const res = await get(url, `bytes=${a}-${b - 1}`, signal);
      if (res.status !== 206) throw new LayerswarmError("BAD_FILE", `${url}: asked for bytes ${a}-${b - 1}, the server sent the whole file (HTTP ${res.status})`);
      const buf = Buffer.from(await res.arrayBuffer());
      if (buf.length !== b - a) throw new LayerswarmError("BAD_FILE", `${url}: asked for ${b - a} bytes at ${a}, received ${buf.length}`);
      fs.writeSync(fd, buf, 0, buf.length, a);
      st!.have = addRange(st!.have, [a, b]);
      fs.writeFileSync(meta, JSON.stringify(st));
      fetched += buf.length;
      onProgress?.({ what: path.basename(file), bytes: fetched, total, done: false });
    }
  };
  try {
    // the header: grow the prefix until it parses
    let f: GGUFFile | undefined;
    for (let n = Math.min(size, 1 << 18); ; n = Math.min(size, n * 4)) {
      await fetchRange([0, n], n);
      const prefix = file + ".head";
      const b = Buffer.alloc(n);
      fs.readSync(fd, b, 0, n, 0);
      fs.writeFileSync(prefix, b);
      try {
        readGGUF(prefix, { fileBytes: size });
        f = readGGUF(file);
        fs.rmSync(prefix);
        break;
      } catch (e) {
        fs.rmSync(prefix);
        if (n >= size || !/truncated GGUF/.test((e as Error).message)) throw e;
      }
    }
    const names = need(f);
    const ranges = names.map((n) => {
      const t = f!.tensors.get(n);
      if (!t) throw new LayerswarmError("BAD_FILE", `${url}: missing tensor "${n}"`);
      return [t.offset, t.offset + t.bytes] as [number, number];
    });
    const total = ranges.reduce((a, r) => a + missing(st!.have, r).reduce((x, [p, q]) => x + q - p, 0), 0);
    fetched = 0;
    for (const r of ranges) await fetchRange(r, total);
    onProgress?.({ what: path.basename(file), bytes: total, total, done: true });
    return f;
  } finally {
    fs.closeSync(fd);
  }
}

// Tensor names a process needs: layers [start, end) and/or the gateway's parts.
export function tensorsFor(f: GGUFFile, ranges: { start: number; end: number }[], gateway: boolean): string[] {
  const out: string[] = [];
  for (const t of f.tensors.keys()) {
    const m = /^blk\.(\d+)\./.exec(t);
    if (m) {
      const i = Number(m[1]);
      if (ranges.some((r) => r.start <= i && i < r.end)) out.push(t);
    } else if (t === "rope_freqs.weight" && ranges.length > 0) out.push(t);
    else if (gateway && (t === "token_embd.weight" || t === "output_norm.weight" || t === "output.weight")) out.push(t);
  }
  return out;
}

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
import { LayerswarmError, codeOf, throwIfAborted } from "../errors.js";
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

function cachePath(url: string, suffix: string): string {
  const h = crypto.createHash("sha256").update(url).digest("hex").slice(0, 16);
  const base = path.basename(new URL(url).pathname).replace(/[^A-Za-z0-9._-]/g, "_") || "model.gguf";
  return path.join(cacheDir(), "models", `${h}-${base}${suffix}`);
}

// The cached copy of a whole remote model, if fetchModel has downloaded it (a local file is itself).
export function cachedModel(spec: string): string | undefined {
  if (!isRemote(spec)) return spec;
  const p = cachePath(resolveUrl(spec), "");
  return fs.existsSync(p) ? p : undefined;
}

export interface RemoteOptions {
  signal?: AbortSignal;
  // How long to wait for the server's answer, and then for each read of the
  // body (default: $LAYERSWARM_HTTP_TIMEOUT_MS, or 30 s).
  timeoutMs?: number;
}

export const DEFAULT_HTTP_TIMEOUT_MS = 30_000;

export function httpTimeoutMs(): number {
  const v = Number(process.env.LAYERSWARM_HTTP_TIMEOUT_MS);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_HTTP_TIMEOUT_MS;
}

// One download: what the user asked for, where it resolved, and its limits.
interface Source {
  spec: string;
  url: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

function source(spec: string, o: RemoteOptions): Source {
  return { spec, url: resolveUrl(spec), timeoutMs: o.timeoutMs ?? httpTimeoutMs(), signal: o.signal };
}

function named(s: Source): string {
  return s.spec === s.url ? s.url : `${s.spec} (${s.url})`;
}

// What a user can do when a download fails for a reason outside this machine's control.
function howToProceed(s: Source): string {
  return `To proceed: download the file another way and pass --model FILE.gguf` +
    (s.spec.startsWith("hf:") ? `, or point LAYERSWARM_HF_ENDPOINT at a reachable mirror of the hub.` : ".");
}

const seconds = (ms: number) => `${+(ms / 1000).toFixed(3)} s`;

// A fetch failure, said as what failed: DNS, a refused or reset connection, TLS...
function networkError(s: Source, e: unknown): LayerswarmError {
  type Cause = { code?: string; message?: string; errors?: { code?: string }[] };
  const cause = ((e as { cause?: Cause }).cause ?? e) as Cause;
  const code = cause?.code ?? cause?.errors?.find((x) => x.code)?.code ?? "";
  const host = new URL(s.url).host, hostname = new URL(s.url).hostname;
  let what: string;
  if (["ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NONAME", "EAI_NODATA"].includes(code))
    what = `the name ${hostname} could not be resolved (DNS: ${code}; is this machine offline?)`;
  else if (code === "ECONNREFUSED") what = `${host} refused the connection (ECONNREFUSED): nothing listens there`;
  else if (["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"].includes(code)) what = `${host} closed the connection (${code})`;
  else if (["UND_ERR_CONNECT_TIMEOUT", "ETIMEDOUT"].includes(code)) what = `connecting to ${host} timed out (${code})`;
  else if (["ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "EHOSTDOWN"].includes(code)) what = `${host} cannot be reached from this machine (${code})`;
  else if (/CERT|SSL|TLS|SIGNATURE/.test(code)) what = `the TLS handshake with ${host} failed (${code}: ${cause.message})`;
  else what = `${cause?.message ?? String(e)}${code ? ` (${code})` : ""}`;
  return new LayerswarmError("UNREACHABLE", `cannot download ${named(s)}: ${what}. ${howToProceed(s)}`, { cause: e });
}

// An HTTP status that is not a success: 4xx names a file that is not there for
// us (a wrong reference), 5xx and 408/429 a server that may answer later.
function statusError(s: Source, r: Response): LayerswarmError {
  const st = `HTTP ${r.status}${r.statusText ? ` ${r.statusText}` : ""}`;
  if (r.status === 404)
    return new LayerswarmError("BAD_ARGUMENT", `cannot download ${named(s)}: ${st}: no such file; check the owner, repository and file name${s.spec.startsWith("hf:") ? " (hf:<owner>/<repo>/<file.gguf>[@revision])" : ""}`);
  if (r.status === 401 || r.status === 403)
    return new LayerswarmError("BAD_ARGUMENT", `cannot download ${named(s)}: ${st}: access refused (the hub answers so for a repository that does not exist, is private, or is gated behind a licence). ${howToProceed(s)}`);
  if (r.status >= 500 || r.status === 408 || r.status === 429)
    return new LayerswarmError("UNREACHABLE", `cannot download ${named(s)}: ${st}: the server failed or is busy; try again later. ${howToProceed(s)}`);
  return new LayerswarmError("BAD_ARGUMENT", `cannot download ${named(s)}: ${st}`);
}

function timeoutError(s: Source, phase: "answer" | "read", at?: string): LayerswarmError {
  const host = new URL(s.url).host;
  const what = phase === "answer" ? `${host} did not answer within ${seconds(s.timeoutMs)}` : `the download from ${host} stalled: no data for ${seconds(s.timeoutMs)}${at ? ` ${at}` : ""}`;
  return new LayerswarmError("UNREACHABLE", `cannot download ${named(s)}: ${what} (LAYERSWARM_HTTP_TIMEOUT_MS sets this limit). ${howToProceed(s)}`);
}

// A response whose body is read with a deadline on every read.
interface Opened {
  res: Response;
  chunks(at?: () => string): AsyncGenerator<Uint8Array>;
  close(): Promise<void>;
}

// One GET: a deadline for the answer (connect, TLS, headers), then one for
// each read of the body, so a server that accepts and goes silent fails in
// timeoutMs instead of hanging.
async function open(s: Source, range?: string): Promise<Opened> {
  throwIfAborted(s.signal);
  const ac = new AbortController();
  const onAbort = () => ac.abort(s.signal?.reason);
  s.signal?.addEventListener("abort", onAbort, { once: true });
  let timedOut = false;
  const arm = () => setTimeout(() => ((timedOut = true), ac.abort()), s.timeoutMs);
  const done = () => s.signal?.removeEventListener("abort", onAbort);
  const failure = (e: unknown, phase: "answer" | "read", at?: string) => {
    done();
    if (s.signal?.aborted) return new LayerswarmError("ABORTED", "download aborted", { cause: s.signal.reason });
    return timedOut ? timeoutError(s, phase, at) : networkError(s, e);
  };
  let res: Response;
  const timer = arm();
  try {
    res = await fetch(s.url, { headers: range ? { range } : {}, signal: ac.signal, redirect: "follow" });
  } catch (e) {
    throw failure(e, "answer");
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok) {
    done();
    await res.body?.cancel().catch(() => {});
    throw statusError(s, res);
  }
  const close = async () => {
    done();
    await res.body?.cancel().catch(() => {});
  };
  async function* chunks(at?: () => string): AsyncGenerator<Uint8Array> {
    if (!res.body) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const t = arm();
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          throw failure(e, "read", at?.());
        } finally {
          clearTimeout(t);
        }
        if (r.done) return;
        yield r.value;
      }
    } finally {
      done();
      await reader.cancel().catch(() => {});
    }
  }
  return { res, chunks, close };
}

// Total size of the remote file.
async function remoteSize(s: Source): Promise<number> {
  const { res: r, close } = await open(s, "bytes=0-0");
  await close();
  const cr = r.headers.get("content-range");
  const total = cr ? Number(/\/(\d+)$/.exec(cr)?.[1]) : Number(r.headers.get("content-length"));
  if (!(total > 0)) throw new LayerswarmError("BAD_FILE", `${s.url}: the server does not say how big the file is`);
  if (r.status !== 206) throw new LayerswarmError("BAD_FILE", `${s.url}: the server does not support range requests`);
  return total;
}

// What identifies a remote file's version for caches: its size and the
// server's ETag (when it sends one).
export async function remoteInfo(spec: string, o: RemoteOptions = {}): Promise<{ url: string; bytes: number; etag?: string }> {
  const s = source(spec, o);
  const { res: r, close } = await open(s, "bytes=0-0");
  await close();
  const cr = r.headers.get("content-range");
  const bytes = cr ? Number(/\/(\d+)$/.exec(cr)?.[1]) : Number(r.headers.get("content-length"));
  if (!(bytes > 0)) throw new LayerswarmError("BAD_FILE", `${s.url}: the server does not say how big the file is`);
  return { url: s.url, bytes, etag: r.headers.get("etag")?.slice(0, 256) ?? undefined };
}

// The whole remote file read once, in order, handed chunk by chunk to
// onChunk and never stored (a manifest is computed from it this way). A
// broken download starts again from the beginning.
export async function streamModel(spec: string, onChunk: (b: Uint8Array) => void, onProgress?: Progress, o: RemoteOptions = {}): Promise<{ bytes: number }> {
  const s = source(spec, o);
  const { res, chunks } = await open(s);
  const total = Number(res.headers.get("content-length") ?? 0);
  let got = 0;
  for await (const c of chunks(() => `at ${got} of ${total} bytes`)) {
    onChunk(c);
    got += c.length;
    onProgress?.({ what: path.basename(new URL(s.url).pathname), bytes: got, total, done: false });
  }
  if (total > 0 && got !== total) throw new LayerswarmError("UNREACHABLE", `cannot read ${named(s)}: the download stopped at ${got} of ${total} bytes. ${howToProceed(s)}`);
  onProgress?.({ what: path.basename(new URL(s.url).pathname), bytes: got, total: got, done: true });
  return { bytes: got };
}

// Download the whole file into the cache (resuming a partial download). An
// attempt that fails after receiving bytes resumes; one that receives nothing
// fails at once with what went wrong, the partial file kept for the next run.
export async function fetchModel(spec: string, onProgress?: Progress, o: RemoteOptions = {}): Promise<string> {
  if (!isRemote(spec)) return spec;
  const s = source(spec, o);
  const url = s.url;
  const dest = cachePath(url, "");
  if (fs.existsSync(dest)) return dest;
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const part = dest + ".part";
  for (let attempt = 0; ; attempt++) {
    const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    const { res: r, chunks, close } = await open(s, have > 0 ? `bytes=${have}-` : undefined);
    let total: number;
    let start = have;
    if (r.status === 206) {
      const m = /bytes (\d+)-(\d+)\/(\d+)/.exec(r.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== have) {
        await close();
        throw new LayerswarmError("BAD_FILE", `${url}: the server answered a resume from ${have} with "${r.headers.get("content-range")}"`);
      }
      total = Number(m[3]);
    } else {
      total = Number(r.headers.get("content-length") ?? 0);
      start = 0; // the server ignored the range: start over
    }
    const out = fs.openSync(part, start === 0 ? "w" : "a");
    let got = start;
    try {
      for await (const chunk of chunks(() => `at ${got} of ${total} bytes`)) {
        fs.writeSync(out, chunk);
        got += chunk.length;
        onProgress?.({ what: path.basename(dest), bytes: got, total, done: false });
      }
    } catch (e) {
      if (got > start && attempt < 100 && codeOf(e) === "UNREACHABLE") continue; // progress, then a break: resume
      throw e;
    } finally {
      fs.closeSync(out);
    }
    if (total > 0 && got < total) {
      if (got > start && attempt < 100) continue;
      throw new LayerswarmError("UNREACHABLE", `cannot download ${named(s)}: the download stopped at ${got} of ${total} bytes. ${howToProceed(s)}`);
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
export async function openRemoteSlice(spec: string, need: (f: GGUFFile) => string[], onProgress?: Progress, o: RemoteOptions = {}): Promise<GGUFFile> {
  const s = source(spec, o);
  const url = s.url;
  const file = cachePath(url, ".sparse");
  const meta = file + ".json";
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let st: SparseState | undefined = fs.existsSync(meta) ? JSON.parse(fs.readFileSync(meta, "utf8")) : undefined;
  const size = await remoteSize(s);
  if (!st || st.size !== size || st.url !== url) {
    st = { url, size, have: [] };
    fs.writeFileSync(file, "");
    fs.truncateSync(file, size);
  }
  const fd = fs.openSync(file, "r+");
  let fetched = 0;
  const fetchRange = async (r: [number, number], total: number) => {
    for (const [a, b] of missing(st!.have, r)) {
      const { res, chunks, close } = await open(s, `bytes=${a}-${b - 1}`);
      if (res.status !== 206) {
        await close();
        throw new LayerswarmError("BAD_FILE", `${url}: asked for bytes ${a}-${b - 1}, the server sent the whole file (HTTP ${res.status})`);
      }
      const parts: Uint8Array[] = [];
      for await (const c of chunks(() => `in bytes ${a}-${b - 1}`)) parts.push(c);
      const buf = Buffer.concat(parts);
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

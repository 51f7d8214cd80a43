// Model identity from content. A manifest holds a SHA-256 of the GGUF header
// (bytes [0, dataOffset): metadata, tensor infos, padding) and one per tensor
// (its data bytes), computed in one streaming pass over the file (a chunk at a
// time, never the whole file in memory) and cached: beside the file when its
// directory is writable, else under $LAYERSWARM_CACHE/manifests. The cache is
// keyed by path, size, mtime and inode, and checked strictly when read (it is
// input like any other file).
//
// Derived from a manifest and the header it hashes:
//   model id   sha256 over the header hash and every tensor's (name, hash): two
//              fine-tunes of one base with the same layout are different models.
//   layer i    sha256 over the compute parameters (general.architecture and
//              every metadata key outside general.* and tokenizer.*) and the
//              (name, type, dims, hash) of each blk.<i>.* tensor (plus
//              rope_freqs.weight, which every layer reads): a layer with equal
//              hashes computes the same function, whichever file it came from.
//   gateway    the same over token_embd, output_norm and output.
//   layout     the compute parameters and every tensor's (name, type, dims),
//              no data: what nodes announce in the DHT under, so a gateway
//              finds the holders of a same-shaped model and can say which
//              layers differ.

import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { z } from "zod";
import { LayerswarmError, throwIfAborted } from "../errors.js";
import { GGUFFile, MetaValue, readGGUF } from "./gguf.js";
import { typeName } from "./quant.js";
import { cacheDir } from "./synth.js";

export const MANIFEST_FORMAT = "layerswarm-manifest/1";
const HEX64 = /^[0-9a-f]{64}$/;
const CHUNK_BYTES = 8 << 20;
const MAX_CACHE_BYTES = 64 << 20; // a manifest of 100,000 tensors is ~12 MB
export const GATEWAY_TENSORS = ["token_embd.weight", "output_norm.weight", "output.weight"] as const;
const SHARED_LAYER_TENSORS = ["rope_freqs.weight"]; // read by every layer

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  fileBytes: number;
  dataOffset: number;
  header: string; // sha256 of bytes [0, dataOffset)
  tensors: { name: string; sha256: string }[]; // in header order
}

// The identities a process compares: see the top of this file.
export interface ModelIdentity {
  id: string;
  header: string;
  layout: string;
  layers: string[]; // index i: layer i's hash
  gateway: string;
}

const Hex64 = z.string().regex(HEX64, "not 64 lowercase hex digits");
const byteCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const ManifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  fileBytes: byteCount,
  dataOffset: byteCount,
  header: Hex64,
  tensors: z.array(z.strictObject({ name: z.string().min(1).max(63), sha256: Hex64 })).max(1_000_000),
});
// The cache file: a manifest and the file it was computed from.
const CacheSchema = z.strictObject({
  key: z.strictObject({ path: z.string().min(1).max(4096), bytes: byteCount, mtimeNs: z.string().regex(/^\d{1,30}$/), ino: z.string().regex(/^\d{1,30}$/) }),
  manifest: ManifestSchema,
});
type CacheKey = z.infer<typeof CacheSchema>["key"];
// The cache of a remote file's manifest: the URL, its size and its ETag ("" when the server sends none).
const UrlCacheSchema = z.strictObject({
  key: z.strictObject({ url: z.string().min(1).max(8192), bytes: byteCount, etag: z.string().max(256) }),
  manifest: ManifestSchema,
});

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

// ------------------------------------------------------------ streaming

// Hashes a file's bytes pushed in order from offset 0: the header, then each
// tensor's bytes (padding between tensors is skipped). Works on any stream of
// the file: a local read or an HTTP body.
export class ManifestHasher {
  private segs: { name: string | null; start: number; end: number }[];
  private i = 0;
  private pos = 0;
  private h?: ReturnType<typeof createHash>;
  private done = new Map<string | null, string>();

  constructor(readonly file: GGUFFile) {
    const ts = [...file.tensors.values()].sort((a, b) => a.offset - b.offset);
    this.segs = [{ name: null, start: 0, end: file.dataOffset }, ...ts.map((t) => ({ name: t.name, start: t.offset, end: t.offset + t.bytes }))];
  }

  // Bytes still needed (the end of the last tensor).
  get end(): number {
    return this.segs[this.segs.length - 1].end;
  }
  get position(): number {
    return this.pos;
  }

  push(b: Uint8Array): void {
    let off = 0;
    while (off < b.length && this.i < this.segs.length) {
      const s = this.segs[this.i], at = this.pos + off;
      if (at < s.start) {
        off += Math.min(s.start - at, b.length - off);
        continue;
      }
      const take = Math.min(s.end - at, b.length - off);
      (this.h ??= createHash("sha256")).update(b.subarray(off, off + take));
      off += take;
      if (at + take === s.end) {
        this.done.set(s.name, this.h.digest("hex"));
        this.h = undefined;
        this.i++;
      }
    }
    this.pos += b.length;
  }

  finish(): Manifest {
    if (this.i < this.segs.length)
      throw new LayerswarmError("BAD_FILE", `${this.file.path}: the stream ended at byte ${this.pos}, before ${this.segs[this.i].name ?? "the header"} (bytes up to ${this.end} needed)`);
    return {
      format: MANIFEST_FORMAT, fileBytes: this.file.fileBytes, dataOffset: this.file.dataOffset, header: this.done.get(null)!,
      tensors: [...this.file.tensors.keys()].map((name) => ({ name, sha256: this.done.get(name)! })),
    };
  }
}

export interface ManifestOptions {
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number) => void;
}

// One pass over a local file, reading the next chunk while hashing this one.
export async function computeManifest(file: string | GGUFFile, o: ManifestOptions = {}): Promise<Manifest> {
  const f = typeof file === "string" ? readGGUF(file) : file;
  const hasher = new ManifestHasher(f);
  const end = hasher.end;
  const fh = await fs.promises.open(f.path, "r");
  try {
    const bufs = [Buffer.allocUnsafe(Math.min(CHUNK_BYTES, end)), Buffer.allocUnsafe(Math.min(CHUNK_BYTES, end))];
    const read = (k: number, pos: number) => fh.read(bufs[k], 0, Math.min(bufs[k].length, end - pos), pos);
    let pos = 0, k = 0;
    let next = read(0, 0);
    while (pos < end) {
      throwIfAborted(o.signal);
      const { bytesRead } = await next;
      if (bytesRead <= 0) throw new LayerswarmError("BAD_FILE", `${f.path}: short read at byte ${pos} of ${end} while hashing (the file shrank?)`);
      const cur = bufs[k];
      pos += bytesRead;
      k ^= 1;
      if (pos < end) next = read(k, pos);
      hasher.push(cur.subarray(0, bytesRead));
      o.onProgress?.(pos, end);
    }
  } finally {
    await fh.close();
  }
  return hasher.finish();
}

// The same, synchronously (small files, tests, and callers with no manifest at hand).
export function computeManifestSync(file: string | GGUFFile): Manifest {
  const f = typeof file === "string" ? readGGUF(file) : file;
  const hasher = new ManifestHasher(f);
  const b = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, hasher.end));
  const fd = fs.openSync(f.path, "r");
  try {
    for (let pos = 0; pos < hasher.end;) {
      const n = fs.readSync(fd, b, 0, Math.min(b.length, hasher.end - pos), pos);
      if (n <= 0) throw new LayerswarmError("BAD_FILE", `${f.path}: short read at byte ${pos} of ${hasher.end} while hashing (the file shrank?)`);
      hasher.push(b.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return hasher.finish();
}

// ------------------------------------------------------------ identities

// The compute parameters: general.architecture and every key outside general.*
// and tokenizer.*, sorted, with their value types.
export function paramsDigest(f: GGUFFile): string {
  const keys = [...f.metadata.keys()].filter((k) => k === "general.architecture" || !(k.startsWith("general.") || k.startsWith("tokenizer."))).sort();
  const value = (v: MetaValue): unknown => (Array.isArray(v) ? v.map(value) : typeof v === "bigint" ? `${v}n` : v);
  return sha256(JSON.stringify(keys.map((k) => [k, f.metaTypes.get(k), value(f.metadata.get(k)!)])));
}

function tensorLine(f: GGUFFile, name: string, hash: string): string {
  const t = f.tensors.get(name)!;
  return `${name}\t${typeName(t.type)}\t${t.dims.join("x")}\t${hash}\n`;
}

// The tensors of layer i: blk.<i>.* and the ones every layer reads, sorted by name.
export function layerTensors(f: GGUFFile, i: number): string[] {
  const p = `blk.${i}.`;
  return [...f.tensors.keys()].filter((n) => n.startsWith(p) || SHARED_LAYER_TENSORS.includes(n)).sort();
}

// A part's hash from its tensors' hashes (tensorHash answers for each name given).
function partHash(f: GGUFFile, kind: string, params: string, names: string[], tensorHash: (name: string) => string): string {
  return sha256(`layerswarm-${kind}/1\n${params}\n${names.map((n) => tensorLine(f, n, tensorHash(n))).join("")}`);
}

export function layerHash(f: GGUFFile, i: number, tensorHash: (name: string) => string, params = paramsDigest(f)): string {
  return partHash(f, "layer", params, layerTensors(f, i), tensorHash);
}

// The layout: compute parameters and every tensor's name, type and dims (no data).
export function layoutId(f: GGUFFile): string {
  return partHash(f, "layout", paramsDigest(f), [...f.tensors.keys()], () => "");
}

function blockCount(f: GGUFFile): number {
  let n = 0;
  for (const name of f.tensors.keys()) {
    const m = /^blk\.(\d+)\./.exec(name);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

// A manifest checked against the header it claims to describe (the file's own
// header bytes hashed), then the identities derived from both.
export function identityOf(f: GGUFFile, m: Manifest): ModelIdentity {
  const names = [...f.tensors.keys()];
  const where = `manifest of ${f.path}`;
  if (m.fileBytes !== f.fileBytes || m.dataOffset !== f.dataOffset)
    throw new LayerswarmError("BAD_FILE", `${where}: describes a file of ${m.fileBytes} bytes with data from byte ${m.dataOffset}; the file has ${f.fileBytes} and ${f.dataOffset}`);
  if (m.tensors.length !== names.length || m.tensors.some((t, i) => t.name !== names[i])) {
    const i = m.tensors.findIndex((t, j) => t.name !== names[j]);
    throw new LayerswarmError("BAD_FILE", `${where}: lists ${m.tensors.length} tensors, the file ${names.length}; first difference at #${i < 0 ? Math.min(m.tensors.length, names.length) : i}`);
  }
  const hash = new Map(m.tensors.map((t) => [t.name, t.sha256]));
  const params = paramsDigest(f);
  const th = (n: string) => hash.get(n)!;
  return {
    id: manifestId(m),
    header: m.header,
    layout: layoutId(f),
    layers: Array.from({ length: blockCount(f) }, (_, i) => layerHash(f, i, th, params)),
    gateway: partHash(f, "gateway", params, GATEWAY_TENSORS.filter((n) => f.tensors.has(n)), th),
  };
}

// The model's id: a hash over the manifest alone, so a manifest from anyone
// can be checked against an id from someone trusted.
export function manifestId(m: Manifest): string {
  return sha256(`${MANIFEST_FORMAT}\n${m.header}\n${m.tensors.map((t) => `${t.name}\t${t.sha256}\n`).join("")}`);
}

// The header's hash, from the file's own bytes (works on a sparse file too: the header is always there).
export function headerHash(f: GGUFFile): string {
  const b = Buffer.alloc(f.dataOffset);
  const fd = fs.openSync(f.path, "r");
  try {
    fs.readSync(fd, b, 0, b.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  return createHash("sha256").update(b).digest("hex");
}

// One tensor's hash, read from the file a chunk at a time.
export function hashTensor(f: GGUFFile, name: string): string {
  const t = f.tensors.get(name);
  if (!t) throw new LayerswarmError("BAD_FILE", `${f.path}: missing tensor "${name}"`);
  const h = createHash("sha256"), b = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, t.bytes));
  const fd = fs.openSync(f.path, "r");
  try {
    for (let done = 0; done < t.bytes;) {
      const n = fs.readSync(fd, b, 0, Math.min(b.length, t.bytes - done), t.offset + done);
      if (n <= 0) throw new LayerswarmError("BAD_FILE", `${f.path}: short read of tensor "${name}" at ${t.offset + done}`);
      h.update(b.subarray(0, n));
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

// Checks tensors of a file (a partial copy, say) against a manifest; throws
// BAD_FILE naming the first tensor whose bytes differ.
export function verifyTensors(f: GGUFFile, m: Manifest, names: string[], what = "the manifest"): void {
  const want = new Map(m.tensors.map((t) => [t.name, t.sha256]));
  for (const n of names) {
    const got = hashTensor(f, n), w = want.get(n);
    if (got !== w) throw new LayerswarmError("BAD_FILE", `${f.path}: tensor "${n}" has sha256 ${got.slice(0, 16)}…, ${what} says ${w ? `${w.slice(0, 16)}…` : "there is no such tensor"}`);
  }
}

// ------------------------------------------------------------ reads

// Hashes every tensor a process reads from a file (the loaders call
// GGUFFile.onTensorRead with the bytes they loaded), and refuses bytes that
// differ from the manifest when there is one: a node's layer hashes are those
// of the bytes it computes with.
export class ReadHashes {
  private got = new Map<string, string>();
  private want: Map<string, string>;
  private params: string;
  constructor(readonly file: GGUFFile, private manifest?: Manifest) {
    this.params = paramsDigest(file);
    const want = (this.want = new Map(manifest?.tensors.map((t) => [t.name, t.sha256])));
    file.onTensorRead = (name, bytes) => {
      const h = createHash("sha256").update(bytes).digest("hex");
      const w = want.get(name);
      if (manifest && h !== w)
        throw new LayerswarmError("BAD_FILE", `${file.path}: tensor "${name}" read with sha256 ${h.slice(0, 16)}…, its manifest says ${w?.slice(0, 16) ?? "nothing"}… (the file changed since its manifest was made? remove the manifest to rebuild it)`);
      this.got.set(name, h);
    };
  }

  private tensor(name: string): string {
    let h = this.got.get(name);
    if (!h) this.got.set(name, (h = hashTensor(this.file, name))); // a tensor the loader did not read (still checked below)
    const w = this.want.get(name);
    if (this.manifest && h !== w) throw new LayerswarmError("BAD_FILE", `${this.file.path}: tensor "${name}" has sha256 ${h.slice(0, 16)}…, its manifest says ${w?.slice(0, 16) ?? "nothing"}…`);
    return h;
  }

  // Layer i's hash from the bytes read (tensors not read yet are read and hashed now).
  layer(i: number): string {
    return layerHash(this.file, i, (n) => this.tensor(n), this.params);
  }
}

// ------------------------------------------------------------ cache

function keyOf(file: string): CacheKey {
  const st = fs.statSync(file, { bigint: true });
  return { path: path.resolve(file), bytes: Number(st.size), mtimeNs: String(st.mtimeNs), ino: String(st.ino) };
}

// Where a file's manifest is cached: beside it, and in the cache directory.
export function manifestCachePaths(file: string): { beside: string; cached: string } {
  const abs = path.resolve(file);
  return { beside: `${abs}.manifest.json`, cached: path.join(cacheDir(), "manifests", `${sha256(abs).slice(0, 32)}.json`) };
}

// A cache file, validated: BAD_FILE naming the file and the field when it is
// not one. Returns undefined when it describes another version of the file.
export function readManifestCache(cachePath: string, file: string): Manifest | undefined {
  const { key: c, manifest } = parseCache(cachePath, CacheSchema);
  const k = keyOf(file);
  if (c.path !== k.path || c.bytes !== k.bytes || c.mtimeNs !== k.mtimeNs || c.ino !== k.ino) return undefined;
  return manifest;
}

// At most `max` bytes of a regular file, read through one descriptor: a
// symlink, FIFO or device planted where a cache file should be is refused, not
// followed, waited on, or read without end (its stat size says nothing).
function readRegularFile(file: string, max: number, bad: (m: string) => Error): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ELOOP") throw bad("a symbolic link");
    throw e;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw bad("not a regular file");
    if (st.size > max) throw bad(`${st.size} bytes, more than ${max}`);
    const buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (let r; n < buf.length && (r = fs.readSync(fd, buf, n, buf.length - n, n)) > 0; ) n += r;
    if (n > st.size) throw bad(`grew while being read, beyond ${st.size} bytes`);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    fs.closeSync(fd);
  }
}

function parseCache<T extends { key: { bytes: number }; manifest: Manifest }>(cachePath: string, schema: z.ZodType<T>): T {
  const bad = (m: string) => new LayerswarmError("BAD_FILE", `${cachePath}: not a valid manifest cache: ${m} (delete it to rebuild)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readRegularFile(cachePath, MAX_CACHE_BYTES, bad));
  } catch (e) {
    if (e instanceof LayerswarmError) throw e;
    throw bad(`not JSON (${(e as Error).message.slice(0, 100)})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw bad(`${i.path.join(".") || "(top)"}: ${i.message}`.slice(0, 300));
  }
  if (r.data.manifest.fileBytes !== r.data.key.bytes) throw bad(`manifest.fileBytes ${r.data.manifest.fileBytes} differs from its key's ${r.data.key.bytes}`);
  return r.data;
}

// A remote file's cached manifest: undefined when there is none or it is of
// another version of the file (size, ETag); BAD_FILE when it is malformed.
export function urlManifestCachePath(url: string): string {
  return path.join(cacheDir(), "manifests", `url-${sha256(url).slice(0, 32)}.json`);
}
export function readUrlManifestCache(url: string, bytes: number, etag = ""): Manifest | undefined {
  const p = urlManifestCachePath(url);
  if (!fs.existsSync(p)) return undefined;
  const { key, manifest } = parseCache(p, UrlCacheSchema);
  return key.url === url && key.bytes === bytes && key.etag === etag ? manifest : undefined;
}
export function writeUrlManifestCache(url: string, bytes: number, etag: string, m: Manifest): string | undefined {
  const p = urlManifestCachePath(url);
  return writeCache(p, { url, bytes, etag }, m) ? p : undefined;
}

// Writes atomically (a temporary file, then rename); false when it cannot.
function writeCache(to: string, key: CacheKey | z.infer<typeof UrlCacheSchema>["key"], m: Manifest): boolean {
  // a fresh random name, created exclusively: a symlink planted at a
  // predictable name must not redirect the write onto another file
  const tmp = `${to}.tmp-${process.pid}-${randomBytes(8).toString("hex")}`;
  try {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.writeFileSync(tmp, JSON.stringify({ key, manifest: m }), { flag: "wx", mode: 0o644 });
    fs.renameSync(tmp, to);
    return true;
  } catch {
    fs.rmSync(tmp, { force: true });
    return false;
  }
}

// A directory whose mode grants no write permission is left alone even when
// we could write there (root): a read-only model store stays untouched.
function besideWritable(file: string): boolean {
  try {
    const dir = path.dirname(path.resolve(file));
    fs.accessSync(dir, fs.constants.W_OK);
    return (fs.statSync(dir).mode & 0o222) !== 0;
  } catch {
    return false;
  }
}

export interface ModelManifest {
  manifest: Manifest;
  identity: ModelIdentity;
  source: "cache" | "computed";
  cachePath?: string; // where it was read from or written to
  ms: number;
}

// The manifest of a local model file: from its cache when the cache matches
// the file (path, size, mtime, inode), else computed by streaming the file
// once and cached. A cache that is not valid is reported through onWarning
// and rebuilt.
// `beside: false` keeps it out of the file's directory (a package's own demo model).
export async function modelManifest(file: string, o: ManifestOptions & { onWarning?: (m: string) => void; header?: GGUFFile; beside?: boolean } = {}): Promise<ModelManifest> {
  const t0 = performance.now();
  const f = o.header ?? readGGUF(file);
  const { beside, cached } = manifestCachePaths(file);
  for (const p of [beside, cached]) {
    if (!fs.existsSync(p)) continue;
    try {
      const m = readManifestCache(p, file);
      if (!m) continue;
      const identity = identityOf(f, m);
      // the header is cheap to hash again (the tensors are checked as they are loaded)
      if (headerHash(f) !== m.header) throw new LayerswarmError("BAD_FILE", `${p}: the manifest's header hash is not the file's`);
      return { manifest: m, identity, source: "cache", cachePath: p, ms: performance.now() - t0 };
    } catch (e) {
      o.onWarning?.(`${(e as Error).message}; computing the manifest again`);
    }
  }
  const key = keyOf(file);
  const m = await computeManifest(f, o);
  const after = keyOf(file);
  if (after.bytes !== key.bytes || after.mtimeNs !== key.mtimeNs || after.ino !== key.ino)
    throw new LayerswarmError("BAD_FILE", `${file}: the file changed while its manifest was computed; try again when it is complete`);
  const to = o.beside !== false && besideWritable(file) && writeCache(beside, key, m) ? beside : writeCache(cached, key, m) ? cached : undefined;
  if (!to) o.onWarning?.(`cannot cache the manifest of ${file} beside it or in ${path.dirname(cached)}; it will be computed again next time`);
  return { manifest: m, identity: identityOf(f, m), source: "computed", cachePath: to, ms: performance.now() - t0 };
}

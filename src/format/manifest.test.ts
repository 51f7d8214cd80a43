import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LayerswarmError } from "../errors.js";
import { meta, readGGUF, readTensorBytes } from "./gguf.js";
import {
  ManifestHasher, ReadHashes, computeManifest, identityOf, layerTensors, manifestCachePaths, modelManifest, readManifestCache, verifyTensors,
} from "./manifest.js";
import { synthesize } from "./synth.js";
import { fineTune } from "../testing/finetune.js";
import { STORIES_GGUF, tmpDir } from "../testing/shared.js";

const dir = tmpDir("layerswarm-manifest-");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
let savedCache: string | undefined;
let big: string; // > 8 MiB: more than one read chunk

beforeAll(() => {
  savedCache = process.env.LAYERSWARM_CACHE;
  process.env.LAYERSWARM_CACHE = path.join(dir, "cache");
  big = synthesize({ arch: "llama", dim: 256, layers: 4, heads: 8, kvHeads: 4, ffn: 768, vocab: 512, context: 256, type: "F32", tied: false, seed: 3 }, path.join(dir, "big.gguf"));
});
afterAll(() => {
  if (savedCache === undefined) delete process.env.LAYERSWARM_CACHE;
  else process.env.LAYERSWARM_CACHE = savedCache;
  fs.rmSync(dir, { recursive: true, force: true });
});

// The hashes of a file read whole into memory: what streaming must equal.
function wholeFile(p: string) {
  const b = fs.readFileSync(p), f = readGGUF(p);
  return { header: sha(b.subarray(0, f.dataOffset)), tensors: [...f.tensors.values()].map((t) => ({ name: t.name, sha256: sha(b.subarray(t.offset, t.offset + t.bytes)) })) };
}

function expectBadFile(f: () => unknown, match: RegExp) {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(LayerswarmError);
  expect((err as LayerswarmError).code).toBe("BAD_FILE");
  expect((err as Error).message).toMatch(match);
}

describe("model manifest", () => {
  it("streaming equals hashing the whole file, across read chunks and in chunks of any size", async () => {
    expect(fs.statSync(big).size).toBeGreaterThan(8 << 20);
    for (const p of [STORIES_GGUF, big]) {
      const want = wholeFile(p);
      const m = await computeManifest(p);
      expect(m.header).toBe(want.header);
      expect(m.tensors).toEqual(want.tensors);
      // pushed in ragged pieces (1 byte to 64 KiB), as an HTTP body arrives
      const h = new ManifestHasher(readGGUF(p)), b = fs.readFileSync(p);
      let seed = 1;
      for (let at = 0; at < b.length;) {
        seed = (seed * 1103515245 + 12345) >>> 0;
        const n = 1 + (seed % (at < 4096 ? 7 : 65536));
        h.push(b.subarray(at, at + n));
        at += n;
      }
      expect(h.finish()).toEqual(m);
    }
  });

  it("a stream that ends early is refused, naming what is missing", () => {
    const f = readGGUF(STORIES_GGUF), h = new ManifestHasher(f);
    h.push(fs.readFileSync(STORIES_GGUF).subarray(0, f.dataOffset + 100));
    expectBadFile(() => h.finish(), /stream ended at byte \d+, before token_embd\.weight/);
  });

  it("a fine-tune with one tensor changed is another model; its other layers keep their hashes", async () => {
    const ft = fineTune(STORIES_GGUF, path.join(dir, "ft.gguf"), ["blk.2.ffn_down.weight"]);
    const renamed = fineTune(STORIES_GGUF, path.join(dir, "renamed.gguf"), [], undefined, { "general.name": meta.str("another name") }); // same weights
    const [a, b, c] = await Promise.all([STORIES_GGUF, ft, renamed].map(async (p) => identityOf(readGGUF(p), await computeManifest(p))));
    expect(b.id).not.toBe(a.id);
    expect(b.layout).toBe(a.layout);
    expect(b.layers.map((h, i) => h === a.layers[i])).toEqual([true, true, false, true, true]);
    expect(b.gateway).toBe(a.gateway);
    // the same weights under another name: another header, so another model, but the same layers and layout
    expect(c.header).not.toBe(a.header);
    expect(c.id).not.toBe(a.id);
    expect(c.layers).toEqual(a.layers);
    expect(c.layout).toBe(a.layout);
    expect(layerTensors(readGGUF(ft), 2)).toContain("blk.2.ffn_down.weight");
  });

  it("is cached beside the file, found again, and computed again when the file changes", async () => {
    const p = fineTune(STORIES_GGUF, path.join(dir, "cached.gguf"), []);
    const first = await modelManifest(p);
    expect(first.source).toBe("computed");
    expect(first.cachePath).toBe(manifestCachePaths(p).beside);
    const again = await modelManifest(p);
    expect(again.source).toBe("cache");
    expect(again.identity).toEqual(first.identity);
    // rewritten with one tensor changed: same size, new mtime and inode
    fineTune(STORIES_GGUF, p, ["blk.0.attn_q.weight"]);
    const changed = await modelManifest(p);
    expect(changed.source).toBe("computed");
    expect(changed.identity.id).not.toBe(first.identity.id);
    expect(changed.identity.layers[0]).not.toBe(first.identity.layers[0]);
    // only the mtime moves: computed again too
    const t = new Date(Date.now() + 5000);
    fs.utimesSync(p, t, t);
    expect((await modelManifest(p)).source).toBe("computed");
    expect((await modelManifest(p)).source).toBe("cache");
    // beside: false (a package's own demo model) keeps it in the cache directory
    const q = fineTune(STORIES_GGUF, path.join(dir, "demo.gguf"), []);
    expect((await modelManifest(q, { beside: false })).cachePath).toBe(manifestCachePaths(q).cached);
    expect(fs.existsSync(manifestCachePaths(q).beside)).toBe(false);
  });

  it("a file in a directory without write permission is cached in the cache directory", async () => {
    const ro = path.join(dir, "ro");
    fs.mkdirSync(ro);
    const p = fineTune(STORIES_GGUF, path.join(ro, "m.gguf"), []);
    fs.chmodSync(ro, 0o555);
    try {
      const m = await modelManifest(p);
      expect(m.cachePath).toBe(manifestCachePaths(p).cached);
      expect(m.cachePath!.startsWith(path.join(dir, "cache", "manifests"))).toBe(true);
      expect(fs.existsSync(manifestCachePaths(p).beside)).toBe(false);
      expect((await modelManifest(p)).source).toBe("cache");
    } finally {
      fs.chmodSync(ro, 0o755);
    }
  });

  it("a symlink, FIFO or device planted where the cache goes is refused, not followed, waited on or read without end", async () => {
    const p = fineTune(STORIES_GGUF, path.join(dir, "planted.gguf"), []);
    const good = await modelManifest(p);
    const cache = good.cachePath!;
    const victim = path.join(dir, "victim.txt");
    fs.writeFileSync(victim, "keep me");
    const plants: [string, () => void, RegExp][] = [
      ["a FIFO", () => execFileSync("mkfifo", [cache]), /not a regular file/],
      ["a symlink to /dev/zero", () => fs.symlinkSync("/dev/zero", cache), /symbolic link/],
      ["a symlink to a valid cache elsewhere", () => (fs.copyFileSync(`${victim}`, `${victim}.2`), fs.symlinkSync(victim, cache)), /symbolic link/],
    ];
    for (const [what, plant, match] of plants) {
      fs.rmSync(cache, { force: true });
      plant();
      expectBadFile(() => readManifestCache(cache, p), match);
      const warnings: string[] = [];
      const m = await modelManifest(p, { onWarning: (w) => warnings.push(w) });
      expect(m.identity, what).toEqual(good.identity);
      expect(warnings.join("\n"), what).toMatch(match);
      expect(fs.lstatSync(cache).isFile(), what).toBe(true); // replaced by a regular file, never written through
    }
    expect(fs.readFileSync(victim, "utf8")).toBe("keep me");
  });

  it("a malformed cache is refused with an error naming the file and the field, and rebuilt", async () => {
    const p = fineTune(STORIES_GGUF, path.join(dir, "bad.gguf"), []);
    const good = await modelManifest(p);
    const cache = good.cachePath!;
    const orig = JSON.parse(fs.readFileSync(cache, "utf8"));
    const cases: [string, unknown, RegExp][] = [
      ["not JSON", "{", /not JSON/],
      ["a short hash", { ...orig, manifest: { ...orig.manifest, tensors: orig.manifest.tensors.map((t: object, i: number) => (i === 3 ? { ...t, sha256: "abc" } : t)) } }, /manifest\.tensors\.3\.sha256: not 64 lowercase hex/],
      ["another format", { ...orig, manifest: { ...orig.manifest, format: "other/9" } }, /manifest\.format/],
      ["an unknown field", { ...orig, extra: 1 }, /extra|unrecognized/i],
      ["a fractional size", { ...orig, key: { ...orig.key, bytes: 1.5 } }, /key\.bytes/],
      ["sizes that disagree", { ...orig, manifest: { ...orig.manifest, fileBytes: 7 } }, /fileBytes 7 differs/],
    ];
    for (const [what, body, match] of cases) {
      fs.writeFileSync(cache, typeof body === "string" ? body : JSON.stringify(body));
      expect(() => readManifestCache(cache, p), what).toThrow(cache);
      expectBadFile(() => readManifestCache(cache, p), match);
      const warnings: string[] = [];
      const m = await modelManifest(p, { onWarning: (w) => warnings.push(w) });
      expect(m.source, what).toBe("computed");
      expect(m.identity).toEqual(good.identity);
      expect(warnings.join("\n")).toMatch(match);
    }
    // a well-formed cache for this very file whose header hash is wrong: refused when used, and rebuilt
    fs.writeFileSync(cache, JSON.stringify({ ...orig, manifest: { ...orig.manifest, header: "0".repeat(64) } }));
    const warned: string[] = [];
    expect((await modelManifest(p, { onWarning: (w) => warned.push(w) })).identity).toEqual(good.identity);
    expect(warned.join("\n")).toMatch(/header hash is not the file's/);
    // a cache that lists other tensors than the file holds (valid JSON, wrong file) is refused when used
    const other = await computeManifest(big);
    expectBadFile(() => identityOf(readGGUF(p), other), /manifest of .*describes a file of/);
  });

  it("a node's reads are hashed, and bytes that differ from the manifest are refused", async () => {
    const p = fineTune(STORIES_GGUF, path.join(dir, "reads.gguf"), []);
    const m = await computeManifest(p);
    const id = identityOf(readGGUF(p), m);
    const f = readGGUF(p);
    const reads = new ReadHashes(f, m);
    for (const n of layerTensors(f, 1)) readTensorBytes(f, n);
    expect(reads.layer(1)).toBe(id.layers[1]);
    expect(reads.layer(3)).toBe(id.layers[3]); // tensors not read yet: read and hashed for the record
    // the file changes after its manifest was made
    fineTune(STORIES_GGUF, p, ["blk.4.attn_k.weight"]);
    const g = readGGUF(p);
    new ReadHashes(g, m);
    expectBadFile(() => readTensorBytes(g, "blk.4.attn_k.weight"), /tensor "blk\.4\.attn_k\.weight" read with sha256 [0-9a-f]{16}…, its manifest says [0-9a-f]{16}/);
    expectBadFile(() => verifyTensors(g, m, ["blk.4.attn_q.weight", "blk.4.attn_k.weight"]), /"blk\.4\.attn_k\.weight" has sha256/);
  });
});

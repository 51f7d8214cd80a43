// A gateway that holds only part of a remote model (a URL): it streams the
// file once to compute its manifest (hashed as it arrives, never stored),
// caches it by URL, size and ETag, and checks what it holds against it.

import * as fs from "node:fs";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGGUF } from "../format/gguf.js";
import { computeManifestSync, identityOf, manifestId } from "../format/manifest.js";
import { openRemoteSlice, tensorsFor } from "../format/remote.js";
import { fineTune } from "../testing/finetune.js";
import { STORIES_GGUF, tmpDir } from "../testing/shared.js";
import { gatewayContent, nodeManifest } from "./model.js";

const dir = tmpDir("layerswarm-urlmanifest-");
let body = fs.readFileSync(STORIES_GGUF);
let etag = '"v1"';
let served = 0;
let server: http.Server;
let url = "";
let savedCache: string | undefined;

beforeAll(async () => {
  savedCache = process.env.LAYERSWARM_CACHE;
  process.env.LAYERSWARM_CACHE = path.join(dir, "cache");
  server = http.createServer((req, res) => {
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    const a = m ? Number(m[1]) : 0, b = m?.[2] ? Number(m[2]) + 1 : body.length;
    res.writeHead(m ? 206 : 200, { etag, "content-length": b - a, ...(m ? { "content-range": `bytes ${a}-${b - 1}/${body.length}` } : {}) });
    served += b - a;
    res.end(body.subarray(a, b));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stories260K.gguf`;
});
afterAll(() => {
  server.close();
  if (savedCache === undefined) delete process.env.LAYERSWARM_CACHE;
  else process.env.LAYERSWARM_CACHE = savedCache;
  fs.rmSync(dir, { recursive: true, force: true });
});

const gatewayPart = async (u = url) => (await openRemoteSlice(u, (g) => tensorsFor(g, [], true))).path;

describe("a remote model's manifest", () => {
  it("is streamed once and equals the local file's; then it comes from the cache", async () => {
    const sparse = await gatewayPart();
    served = 0;
    const id = await gatewayContent(url, sparse);
    expect(id).toEqual(identityOf(readGGUF(STORIES_GGUF), computeManifestSync(STORIES_GGUF)));
    expect(served).toBeGreaterThanOrEqual(body.length); // the whole file went through the hash once
    served = 0;
    expect(await gatewayContent(url, sparse)).toEqual(id);
    expect(served).toBeLessThan(16); // only the size probes
  });

  it("with a trusted model id, the manifest comes from a peer instead of the network; a wrong id is refused", async () => {
    const u = url.replace(/[^/]+$/, "copy.gguf"); // another URL: nothing cached for it
    const sparse = await gatewayPart(u);
    const base = computeManifestSync(STORIES_GGUF), id = manifestId(base);
    const asked: string[] = [];
    const fromPeers = async (want: string) => (asked.push(want), want === id ? base : undefined);
    served = 0;
    expect((await gatewayContent(u, sparse, undefined, { modelId: id, fromPeers })).id).toBe(id);
    expect(asked).toEqual([id]);
    expect(served).toBeLessThan(16); // the file was not streamed
    // a node of the same URL finds it cached now, and never streams
    expect(await nodeManifest(u, sparse, undefined, { modelId: id })).toEqual(base);
    // an id nobody has and the file does not hash to: streamed, then refused
    const other = "ab".repeat(32);
    await expect(gatewayContent(u, sparse, undefined, { modelId: other, fromPeers })).rejects.toThrow(`is the model ${id}, not the --model-id ${other}`);
    // a local file is checked against the id as well
    await expect(gatewayContent(STORIES_GGUF, STORIES_GGUF, undefined, { modelId: other })).rejects.toThrow(/not the --model-id/);
  });

  it("a server file replaced by a fine-tune (new ETag) is streamed again, and the part held here, now stale, is refused naming its tensor", async () => {
    const sparse = await gatewayPart(); // holds token_embd etc. of the base
    body = fs.readFileSync(fineTune(STORIES_GGUF, path.join(dir, "ft.gguf"), ["token_embd.weight"]));
    etag = '"v2"';
    await expect(gatewayContent(url, sparse)).rejects.toThrow(/tensor "token_embd\.weight" has sha256 [0-9a-f]{16}…, the manifest of http:\S+ says [0-9a-f]{16}…/);
  });
});

// A gateway whose model is a URL holds only its own tensors: to judge a node
// it fetches that node's layers by range requests, checked against the
// manifest; without them it judges nobody (zeros would find everyone wrong).
describe("a URL gateway judging nodes", () => {
  const run = async (source: boolean, fault?: string) => {
    const { memSwarm } = await import("../testing/memswarm.js");
    const { FaultInjector, parseFault } = await import("../swarm/node/fault.js");
    body = fs.readFileSync(STORIES_GGUF); // the file itself again (a test above served a fine-tune)
    etag = '"judge"';
    const sparse = await gatewayPart();
    const content = await gatewayContent(url, sparse);
    const layers = (r: { start: number; end: number }) => openRemoteSlice(url, (g) => tensorsFor(g, [r], false)).then(() => {});
    // the gateway on the sparse copy; the node on the whole file
    const sw = await memSwarm(sparse, [], { verify: { mode: "audit", auditRate: 1 }, content, layerSource: source ? layers : undefined }, { modelPath: STORIES_GGUF, manifest: computeManifestSync(STORIES_GGUF) });
    try {
      await sw.addNode([{ start: 0, end: 5 }], fault ? { fault: new FaultInjector(parseFault(fault)!) } : {});
      await sw.gw.waitForCoverage(2000);
      await sw.complete([1], 8);
      await sw.gw.verifier.idle();
      return { bans: sw.gw.verifier.bans.size, stats: sw.gw.verifier.stats };
    } finally {
      await sw.stop();
    }
  };
  it("fetches the layers it judges with and bans a cheat; an honest node stays", async () => {
    served = 0;
    expect((await run(true, "noise")).bans).toBe(1);
    expect(served).toBeGreaterThan(0);
    const honest = await run(true);
    expect(honest.bans).toBe(0);
    expect(honest.stats.clean).toBeGreaterThan(0);
  });
  it("without a way to fetch them, judges nobody", async () => {
    fs.rmSync(path.join(dir, "cache"), { recursive: true, force: true }); // a fresh sparse copy: no layers in it
    const r = await run(false, "noise");
    expect(r.bans).toBe(0);
    expect(r.stats.clean).toBe(0);
  });
});

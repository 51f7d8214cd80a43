// Model identity is content (issue 8): a gateway pairs each layer only with
// nodes whose hash for it equals its own. Over the in-memory transport, with
// "fine-tunes" of stories260K written by our own GGUF writer (one tensor
// changed, the same layout).

import * as path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { computeManifestSync, identityOf, manifestId } from "../format/manifest.js";
import { readGGUF } from "../format/gguf.js";
import { Model, generate } from "../model/model.js";
import { fineTune } from "../testing/finetune.js";
import { MemSwarm, memOpenSwarm, memSwarm, OpenSwarm } from "../testing/memswarm.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";
import { configFromGGUF } from "../model/config.js";
import { manifestFromPeers } from "./manifests.js";
import { MemoryTransport } from "./memory.js";
import { SwarmNode, modelFingerprint } from "./node/index.js";
import { NUMERICS_VERSION, checkRecord, providerKeys } from "./protocol/index.js";
import * as fs from "node:fs";

const r = (start: number, end: number) => ({ start, end });
const dir = tmpDir("layerswarm-pairing-");
const WANT = goldenIds("4").slice(0, 61); // BOS, then 60 greedy tokens
let ft: string; // blk.2.ffn_down.weight negated: layer 2 differs, nothing else
let sw: MemSwarm | OpenSwarm | undefined;

beforeAll(() => {
  ft = fineTune(STORIES_GGUF, path.join(dir, "finetune.gguf"), ["blk.2.ffn_down.weight"]);
});
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
  vi.restoreAllMocks();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function greedy(modelPath: string, n: number): Promise<number[]> {
  const { model, stack } = Model.local(modelPath);
  const out = [1];
  for await (const t of generate(model, stack, [1], { maxTokens: n })) out.push(t.id);
  return out;
}

// The gateway's log lines of one event (default: nodes serving other weights), as logged.
function captureWarnings(event = "node serves other weights"): () => { peer: string; layers: number[]; message: string }[] {
  const lines: string[] = [];
  const orig = process.stderr.write.bind(process.stderr);
  vi.spyOn(process.stderr, "write").mockImplementation(((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(String(chunk));
    return (orig as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write);
  return () => lines.flatMap((l) => l.split("\n")).filter((l) => l.includes(`"${event}"`)).map((l) => JSON.parse(l));
}

describe("pairing layers by content hash", () => {
  it("the fine-tune computes something else (so using its layer 2 would show)", async () => {
    const theirs = await greedy(ft, 60);
    expect(theirs).not.toEqual(WANT);
    expect(await greedy(STORIES_GGUF, 60)).toEqual(WANT);
  });

  it("a node serving a fine-tune's layer 2 is never used for it; the answer stays exact and the log and the view name the layer and both hashes", async () => {
    const warnings = captureWarnings();
    sw = await memSwarm(STORIES_GGUF, []);
    const ours = identityOf(readGGUF(STORIES_GGUF), computeManifestSync(STORIES_GGUF));
    const theirs = identityOf(readGGUF(ft), computeManifestSync(ft));
    const bad = await sw.addNode([r(2, 3)], { modelPath: ft, manifest: computeManifestSync(ft) });
    await sw.addNode([r(0, 2)]);
    await sw.addNode([r(3, 5)]);
    // layer 2 has a holder, but not one that pairs: missing until a node of ours loads it
    expect(sw.gw.coverage().missing).toEqual([r(2, 3)]);
    const w = warnings();
    expect(w.length).toBe(1);
    expect(w[0].peer).toBe(bad.node.peerId);
    expect(w[0].layers).toEqual([2]);
    expect(w[0].message).toContain(`layer 2: its ${theirs.layers[2].slice(0, 12)}…, ours ${ours.layers[2].slice(0, 12)}…`);
    expect(w[0].message).toContain(`its model ${theirs.id.slice(0, 16)}…, ours ${ours.id.slice(0, 16)}…`);
    const v = sw.gw.view.nodes().find((n) => n.peer === bad.node.peerId)!;
    expect(v.model).toBe(theirs.id);
    expect(v.differs).toEqual([{ layer: 2, theirs: theirs.layers[2], ours: ours.layers[2] }]);
    expect(sw.gw.view.model.id).toBe(ours.id);

    for (let i = 0; i < 3; i++) expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(bad.node.stats.frames).toBe(0); // never sent a step
    expect(sw.nodes.filter((n) => n !== bad.node).some((n) => n.ranges().some((x) => x.start <= 2 && 2 < x.end))).toBe(true); // one of ours loaded layer 2
    expect(warnings().length).toBe(1); // said once, not on every refresh
  });

  it("a node on another numerics version (its bits would differ) is never routed through, and the log says why, once", async () => {
    const numericsWarnings = captureWarnings("node computes with other numerics");
    const real = SwarmNode.prototype.record;
    const older = vi.spyOn(SwarmNode.prototype, "record").mockImplementation(function (this: SwarmNode) {
      const rec = real.call(this);
      return { ...rec, capabilities: { ...rec.capabilities, numerics: NUMERICS_VERSION - 1 } };
    });
    sw = await memSwarm(STORIES_GGUF, []);
    const old = await sw.addNode([r(0, 5)]);
    expect(sw.gw.coverage().missing).toEqual([r(0, 5)]);
    older.mockRestore();
    const spied = vi.spyOn(old.node, "record").mockImplementation(() => ({ ...real.call(old.node), capabilities: { ...real.call(old.node).capabilities, numerics: NUMERICS_VERSION - 1 } }));
    await sw.addNode([r(0, 5)]);
    await sw.gw.waitForCoverage(2000);
    for (let i = 0; i < 2; i++) expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(old.node.stats.frames).toBe(0);
    const said = numericsWarnings();
    expect(said.length).toBe(1);
    expect(said[0].message).toContain(`numerics version ${NUMERICS_VERSION - 1}, this gateway with ${NUMERICS_VERSION}`);
    spied.mockRestore();
  });

  it("layers a fine-tune shares with our model pair: its layers 3 and 4 serve, exactly", async () => {
    sw = await memSwarm(STORIES_GGUF, []);
    await sw.addNode([r(0, 3)]);
    const shared = await sw.addNode([r(3, 5)], { modelPath: ft, manifest: computeManifestSync(ft) });
    await sw.gw.waitForCoverage(2000);
    expect(sw.gw.view.nodes().find((n) => n.peer === shared.node.peerId)!.differs).toEqual([]);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(shared.node.stats.frames).toBeGreaterThan(0);
  });

  it("found through the DHT (same layout, same keys), a fine-tune node is listed with the layer that differs and never used for it", async () => {
    const warnings = captureWarnings();
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 2), r(3, 5)]); // timing probes included: they too go only where layers pair
    const gw = sw.gateways[0];
    const bad = await sw.addNode([r(2, 3)], { modelPath: ft, manifest: computeManifestSync(ft) });
    const until = Date.now() + 2000;
    while (!gw.dir.get(bad.node.peerId) && Date.now() < until) await new Promise((res) => setTimeout(res, 10));
    expect(gw.dir.get(bad.node.peerId)?.via).toBe("dht");
    expect(gw.view.nodes().find((n) => n.peer === bad.node.peerId)!.differs.map((d) => d.layer)).toEqual([2]);
    expect(warnings().map((x) => x.layers)).toEqual([[2]]);
    expect(await sw.complete(gw, [1], 60)).toEqual(WANT);
    expect(bad.node.stats.frames).toBe(0);
  });

  it("a node checks the layers it loads against its manifest: a file changed since is refused, naming the tensor", async () => {
    sw = await memSwarm(STORIES_GGUF, []);
    // the base's manifest, but the fine-tune's bytes (same header): layer 2's tensor does not match
    await expect(sw.addNode([r(2, 3)], { modelPath: ft, manifest: computeManifestSync(STORIES_GGUF) })).rejects.toThrow(/tensor "blk\.2\.ffn_down\.weight" read with sha256 [0-9a-f]{16}…, its manifest says [0-9a-f]{16}/);
    // its other layers are the base's: they load
    const ok = await sw.addNode([r(3, 5)], { modelPath: ft, manifest: computeManifestSync(STORIES_GGUF) });
    expect(ok.node.ranges()).toEqual([r(3, 5)]);
  });

  it("a manifest from the swarm's peers is taken only when it hashes to the trusted model id: a fine-tune's is passed over", async () => {
    sw = await memOpenSwarm(STORIES_GGUF, []);
    await sw.addNode([r(2, 3)], { modelPath: ft, manifest: computeManifestSync(ft) }); // same layout, same DHT keys
    await sw.addNode([r(0, 2)], { manifest: undefined }); // holds only part of a file: has none to give
    const t = await MemoryTransport.create(sw.net, "10.9.9.9");
    const f = readGGUF(STORIES_GGUF), cfg = configFromGGUF(f);
    const keys = providerKeys(modelFingerprint(f, cfg), [r(0, 5)], 5);
    const base = computeManifestSync(STORIES_GGUF);
    expect(await manifestFromPeers(sw.dht.for(t), t, keys, manifestId(base), { timeoutMs: 500 })).toBeUndefined();
    const good = await sw.addNode([r(3, 5)]);
    const got = await manifestFromPeers(sw.dht.for(t), t, keys, manifestId(base), { timeoutMs: 5000 });
    expect(got?.from).toBe(good.node.peerId);
    expect(got?.manifest).toEqual(base);
    // and the fine-tune's, for whoever trusts its id
    expect((await manifestFromPeers(sw.dht.for(t), t, keys, manifestId(computeManifestSync(ft)), { timeoutMs: 5000 }))?.manifest).toEqual(computeManifestSync(ft));
  });

  it("a record must vouch for exactly the layers it serves", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const rec = sw.nodes[0].record();
    const model = { layers: 5, dim: 64, fingerprint: rec.model.fingerprint };
    expect(() => checkRecord(rec, model, rec.peer)).not.toThrow();
    const h = rec.model.layerHashes;
    expect(() => checkRecord({ ...rec, model: { ...rec.model, layerHashes: h.slice(1) } }, model, rec.peer)).toThrow(/no hash for layer 0, which it serves/);
    expect(() => checkRecord({ ...rec, model: { ...rec.model, layerHashes: [...h, h[0]] } }, model, rec.peer)).toThrow(/two hashes for layer 0/);
    expect(() => checkRecord({ ...rec, ranges: [r(0, 4)], model: { ...rec.model, layerHashes: h } }, model, rec.peer)).toThrow(/hash for layer 4, which it does not serve/);
  });
});

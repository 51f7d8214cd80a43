// Joining a swarm: --layers auto, models from a URL, refusal of a node too
// small for a layer, and private swarms (pre-shared key).

import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, generate } from "../model/model.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";
import { CLI, spawnNode } from "../testing/swarm.js";
import { Gateway } from "./gateway/index.js";
import { Identity, loadOrCreateIdentity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";

let server: http.Server;
let url = "";
const body = fs.readFileSync(STORIES_GGUF);
const cache = tmpDir();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    const a = m ? Number(m[1]) : 0, b = m && m[2] ? Number(m[2]) + 1 : body.length;
    res.writeHead(m ? 206 : 200, { "content-length": b - a, ...(m ? { "content-range": `bytes ${a}-${b - 1}/${body.length}` } : {}) });
    res.end(body.subarray(a, b));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stories260K.gguf`;
});
afterAll(() => server.close());

async function gateway(swarmKey?: string) {
  const identity = await Identity.generate();
  const t = await Libp2pTransport.create({ identity, swarmKey });
  const gw = new Gateway(Model.gateway(STORIES_GGUF), t, identity);
  await gw.start();
  return gw;
}

async function golden(gw: Gateway, n = 40) {
  const out: number[] = [];
  for await (const t of generate(gw.model, gw, [1], { maxTokens: n })) out.push(t.id);
  return [1, ...out];
}

describe("joining a swarm", () => {
  it("--layers auto takes the layers the swarm lacks; a URL model fetches only its part", async () => {
    const gw = await gateway();
    const env = { LAYERSWARM_CACHE: cache };
    const a = await spawnNode(STORIES_GGUF, gw.addrs()[0], "0:2", [], env);
    // 64 MiB of KV budget plus room for 3 layers of 177.5 KiB
    const b = await spawnNode(url, gw.addrs()[0], "auto", ["--max-memory", "64.55MiB"], env);
    try {
      await gw.waitForCoverage(10_000);
      expect(gw.dir.get(b.peer)!.record.ranges).toEqual([{ start: 2, end: 5 }]);
      expect(await golden(gw)).toEqual(goldenIds("4").slice(0, 41));
      const sparse = fs.readdirSync(`${cache}/models`).find((f) => f.endsWith(".sparse.json"))!;
      const have = JSON.parse(fs.readFileSync(`${cache}/models/${sparse}`, "utf8")).have as [number, number][];
      const bytes = have.reduce((s, [x, y]) => s + y - x, 0);
      expect(bytes).toBeLessThan(body.length * 0.9); // header + 3 of 5 layers, not embeddings or head
    } finally {
      a.proc.kill("SIGKILL");
      b.proc.kill("SIGKILL");
      await gw.stop();
    }
  });

  it("a node too small for one layer is refused with a clear message", () => {
    const r = spawnSync(process.execPath, [CLI, "node", "--model", STORIES_GGUF, "--layers", "0:2", "--max-memory", "64MiB"], { encoding: "utf8", timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/cannot hold one layer: a layer needs \d+ bytes/);
  });

  it("nodes join again when their gateway restarts", async () => {
    const dir = tmpDir();
    const start = async (port: number) => {
      const identity = await loadOrCreateIdentity(`${dir}/gw.key`);
      const t = await Libp2pTransport.create({ identity, listen: [`/ip4/127.0.0.1/tcp/${port}`] });
      const gw = new Gateway(Model.gateway(STORIES_GGUF), t, identity);
      await gw.start();
      return gw;
    };
    let gw = await start(0);
    const port = Number(/\/tcp\/(\d+)/.exec(gw.addrs()[0])![1]);
    const n = await spawnNode(STORIES_GGUF, gw.addrs()[0], "0:5");
    try {
      await gw.waitForCoverage(10_000);
      await gw.stop();
      gw = await start(port); // same identity, same address
      await gw.waitForCoverage(20_000);
      expect(await golden(gw, 20)).toEqual(goldenIds("4").slice(0, 21));
    } finally {
      n.proc.kill("SIGKILL");
      await gw.stop();
    }
  });

  it("a private swarm: a node with the wrong swarm key cannot join, one with the key can", async () => {
    const key = "a".repeat(64), wrong = "b".repeat(64);
    const gw = await gateway(key);
    try {
      await expect(spawnNode(STORIES_GGUF, gw.addrs()[0], "0:5", ["--swarm-key", wrong])).rejects.toThrow(/exited/);
      expect(gw.dir.nodes.size).toBe(0);
      const ok = await spawnNode(STORIES_GGUF, gw.addrs()[0], "0:5", ["--swarm-key", key]);
      await gw.waitForCoverage(10_000);
      expect(await golden(gw, 20)).toEqual(goldenIds("4").slice(0, 21));
      ok.proc.kill("SIGKILL");
    } finally {
      await gw.stop();
    }
  });
});

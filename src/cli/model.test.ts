// Which model a command serves, checked before anything starts: a file whose
// weight types we cannot compute with is refused from its header (before a
// download, before any node), and a local node that dies before the swarm is
// ready ends the wait at once.

import { spawnSync } from "node:child_process";
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import * as path from "node:path";
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LayerswarmError } from "../errors.js";
import { GGMLType } from "../format/quant.js";
import { REPO, tmpDir } from "../testing/shared.js";
import { resolveModel, supportedTypes } from "./model.js";
import { DEMO_MODEL } from "./paths.js";
import { waitForLocalNodes } from "./swarm.js";

const CLI = path.join(REPO, "dist/src/cli/index.js");
const dir = tmpDir();
const demo = fs.readFileSync(DEMO_MODEL);

// The demo with one matrix declared Q8_1 (ggml's activation type, never a weight type we load; smaller than F32, so the file stays valid GGUF).
const q5 = Buffer.from(demo);
const name = Buffer.from("blk.2.attn_q.weight");
q5.writeUInt32LE(GGMLType.Q8_1, q5.indexOf(name) + name.length + 4 + 16); // after n_dims and two dims
const q5File = path.join(dir, "q5.gguf");
fs.writeFileSync(q5File, q5);

let server: http.Server;
let base = "";
let served = 0;
beforeAll(async () => {
  process.env.LAYERSWARM_CACHE = path.join(dir, "cache");
  server = http.createServer((req, res) => {
    const body = req.url === "/q5.gguf" ? q5 : demo;
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    const a = m ? Number(m[1]) : 0, b = m?.[2] ? Number(m[2]) + 1 : body.length;
    res.writeHead(m ? 206 : 200, { "content-length": b - a, ...(m ? { "content-range": `bytes ${a}-${b - 1}/${body.length}` } : {}) });
    served += b - a;
    res.end(body.subarray(a, b));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => server.close());

const quiet = () => () => {};

describe("the model a command serves", () => {
  it("an unsupported weight type is refused by run before any node starts, naming the type, a tensor and what is supported", () => {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [CLI, "run", "--model", q5File, "--nodes", "2", "--port", "0"], { encoding: "utf8", timeout: 60_000, env: { ...process.env, LAYERSWARM_HOME: path.join(dir, "state") } });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe(""); // no node-ready
    expect(r.stderr).toMatch(/error \[UNSUPPORTED\]: .*q5\.gguf holds weight types not supported yet: Q8_1 \(1 tensor, e.g\. blk\.2\.attn_q\.weight\); supported: ([A-Z0-9_]+, )+[A-Z0-9_]+\. Choose a file/);
    expect(r.stderr).toContain(`supported: ${supportedTypes().join(", ")}.`);
    expect(supportedTypes()).toEqual(expect.arrayContaining(["F32", "Q8_0", "Q4_K", "Q6_K"]));
    expect(r.stderr).not.toMatch(/OPEN swarm/); // nothing was started
    console.log(`run refused an unsupported file in ${(performance.now() - t0).toFixed(0)} ms`);
  });

  it("from the hub, only the header is fetched before the refusal", async () => {
    served = 0;
    const e = await resolveModel(`${base}/q5.gguf`, quiet).then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(LayerswarmError);
    expect((e as LayerswarmError).code).toBe("UNSUPPORTED");
    expect(served).toBeLessThan(q5.length / 2); // the 256 KiB header probe and the size probe, never the whole file
    expect(fs.readdirSync(path.join(dir, "cache", "models")).some((f) => f.endsWith("-q5.gguf"))).toBe(false);
    // a supported file is downloaded whole; later runs check the cached copy without the network
    const ok = await resolveModel(`${base}/ok.gguf`, quiet);
    expect(fs.readFileSync(ok.file).equals(demo)).toBe(true);
    served = 0;
    expect((await resolveModel(`${base}/ok.gguf`, quiet)).file).toBe(ok.file);
    expect(served).toBe(0);
  });

  it("a local node that exits before every layer is served ends the wait with NO_ROUTE", async () => {
    const gw = {
      waitForCoverage: (_ms: number, signal?: AbortSignal) =>
        new Promise<void>((_, reject) => signal?.addEventListener("abort", () => reject(new LayerswarmError("ABORTED", "operation aborted")))),
    };
    const children = [new EventEmitter(), new EventEmitter()] as unknown as ChildProcess[];
    const wait = waitForLocalNodes(gw, children);
    setTimeout(() => children[1].emit("exit", 2, null), 20);
    await expect(wait).rejects.toMatchObject({ code: "NO_ROUTE", message: "local node 1 exited (2) before every layer was served; its error is above" });
    expect(children.every((c) => c.listenerCount("exit") === 0)).toBe(true);
  });
});

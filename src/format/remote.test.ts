// Models over HTTP, against a local server (this machine cannot reach the hub).

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORIES_GGUF, firstDiff, tmpDir } from "../testing/shared.js";
import { fetchModel, openRemoteSlice, resolveUrl, tensorsFor } from "./remote.js";
import { readGGUF } from "./gguf.js";
import { configFromGGUF } from "../model/config.js";
import { Model, loadSlice } from "../model/model.js";
import { createKernels } from "../kernels/index.js";
import { layerBytes } from "../model/weights.js";

const body = fs.readFileSync(STORIES_GGUF);
let server: http.Server;
let base = "";
let served = 0;
let breakNext = false; // cut the next full download halfway
let lieAboutSize = false;

beforeAll(async () => {
  process.env.LAYERSWARM_CACHE = tmpDir();
  server = http.createServer((req, res) => {
    if (!req.url!.endsWith(".gguf")) return void res.writeHead(404).end();
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
    if (m) {
      const a = Number(m[1]), b = m[2] ? Number(m[2]) + 1 : body.length;
      const send = lieAboutSize && b - a > 1 ? b - a - 1 : b - a; // a server that sends less than it says
      res.writeHead(206, { "content-range": `bytes ${a}-${b - 1}/${body.length}`, "content-length": send });
      served += send;
      res.end(body.subarray(a, a + send));
      return;
    }
    res.writeHead(200, { "content-length": body.length });
    if (breakNext) {
      breakNext = false;
      res.write(body.subarray(0, 500_000));
      served += 500_000;
      setTimeout(() => res.destroy(), 20);
      return;
    }
    served += body.length;
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => server.close());

describe("models over HTTP", () => {
  it("hf: references resolve against the hub (or LAYERSWARM_HF_ENDPOINT)", () => {
    expect(resolveUrl("hf:ggml-org/tiny-llamas/stories15M-q8_0.gguf")).toBe("https://huggingface.co/ggml-org/tiny-llamas/resolve/main/stories15M-q8_0.gguf");
    process.env.LAYERSWARM_HF_ENDPOINT = base;
    expect(resolveUrl("hf:a/b/c/d.gguf@v2")).toBe(`${base}/a/b/resolve/v2/c/d.gguf`);
    delete process.env.LAYERSWARM_HF_ENDPOINT;
    expect(() => resolveUrl("hf:nope")).toThrow(/hf:<owner>\/<repo>\/<file.gguf>/);
  });

  it("a node fetches only the header and its own layers' bytes, and computes exactly as from the file", async () => {
    served = 0;
    const url = `${base}/m/slice.gguf`;
    const f = await openRemoteSlice(url, (g) => tensorsFor(g, [{ start: 2, end: 4 }], false));
    const local = readGGUF(STORIES_GGUF);
    const want = layerBytes(local, 2) + layerBytes(local, 3);
    expect(served).toBeLessThan(want + (1 << 20) + 1);
    expect(served).toBeGreaterThanOrEqual(want);
    expect(served).toBeLessThan(body.length); // not the whole file
    const k = createKernels();
    const a = loadSlice(f, configFromGGUF(f), { start: 2, end: 4 }, k), b = loadSlice(local, configFromGGUF(local), { start: 2, end: 4 }, k);
    const h = new Float32Array(3 * 64).map((_, i) => Math.sin(i));
    expect(firstDiff(a.forward([{ session: "s", pos: 0, T: 3, hidden: h }])[0], b.forward([{ session: "s", pos: 0, T: 3, hidden: h }])[0])).toBeUndefined();
    // a second open of the same layers downloads nothing more
    served = 0;
    await openRemoteSlice(url, (g) => tensorsFor(g, [{ start: 2, end: 3 }], false));
    expect(served).toBe(1); // the size probe
  });

  it("a full download resumes after a broken connection and verifies its size", async () => {
    breakNext = true;
    const p = await fetchModel(`${base}/m/full.gguf`);
    expect(crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex")).toBe("1d9847737c52a3ec33b9757eb67d2a92b8f0282d0775f6cfd9c70db30e098c94");
    const { model, stack } = Model.local(p);
    expect(model.cfg.nLayers).toBe(5);
    expect(stack.slices).toHaveLength(1);
    // cached: no second download
    served = 0;
    expect(await fetchModel(`${base}/m/full.gguf`)).toBe(p);
    expect(served).toBe(0);
  });

  it("a server that lies about the size or answers 404 gives a clear error", async () => {
    await expect(fetchModel(`${base}/missing`)).rejects.toThrow(/HTTP 404/);
    lieAboutSize = true;
    try {
      await expect(openRemoteSlice(`${base}/m/lie.gguf`, (g) => tensorsFor(g, [{ start: 0, end: 1 }], false))).rejects.toThrow(/asked for \d+ bytes at \d+, received \d+/);
    } finally {
      lieAboutSize = false;
    }
  });
});

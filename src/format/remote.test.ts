// Models over HTTP, against a local server (this machine cannot reach the hub).

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORIES_GGUF, firstDiff, tmpDir } from "../testing/shared.js";
import { fetchModel, openRemoteSlice, resolveUrl, tensorsFor } from "./remote.js";
import { LayerswarmError } from "../errors.js";
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
let stallNext = false; // send the next full download halfway, then go silent

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
    if (stallNext) {
      stallNext = false;
      res.write(body.subarray(0, 500_000));
      served += 500_000;
      return; // never ends
    }
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

  it("a download that stalls after some bytes resumes where it stopped", async () => {
    stallNext = true;
    served = 0;
    const p = await fetchModel(`${base}/m/stall-resume.gguf`, undefined, { timeoutMs: 300 });
    expect(crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex")).toBe("1d9847737c52a3ec33b9757eb67d2a92b8f0282d0775f6cfd9c70db30e098c94");
    expect(served).toBe(body.length); // the second request asked only for the rest
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

// Servers that fail in each way a download can: one that accepts connections
// and never answers, one that answers headers and then sends nothing, one that
// answers an HTTP error, and a port where nothing listens.
describe("a download that cannot succeed fails in bounded time, saying what failed and what to do", () => {
  const held: net.Socket[] = [];
  let silent: net.Server, stalling: http.Server, failing: http.Server;
  let silentBase = "", stallBase = "", failBase = "", refusedBase = "";
  const listen = async (srv: net.Server) => {
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  };
  beforeAll(async () => {
    silent = net.createServer((sock) => void held.push(sock)); // accepts, never answers
    stalling = http.createServer((req, res) => {
      res.writeHead(req.headers.range ? 206 : 200, { "content-length": body.length, "content-range": `bytes 0-${body.length - 1}/${body.length}` });
      res.flushHeaders(); // and never a byte of the body
      held.push(req.socket);
    });
    failing = http.createServer((req, res) => void res.writeHead(Number(/\/(\d{3})\//.exec(req.url!)?.[1] ?? 500)).end());
    silentBase = await listen(silent);
    stallBase = await listen(stalling);
    failBase = await listen(failing);
    const gone = net.createServer();
    refusedBase = await listen(gone);
    await new Promise((r) => gone.close(r));
  });
  afterAll(() => {
    held.forEach((s) => s.destroy());
    silent.close();
    stalling.close();
    failing.close();
  });

  // the error it fails with, and how long it took
  const failure = async (p: Promise<unknown>) => {
    const t0 = performance.now();
    const e = await p.then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(LayerswarmError);
    return { e: e as LayerswarmError, ms: performance.now() - t0 };
  };

  it("a server that accepts and never answers: UNREACHABLE after the timeout, for the whole file and for a slice", async () => {
    const { e, ms } = await failure(fetchModel(`${silentBase}/m/x.gguf`, undefined, { timeoutMs: 300 }));
    expect(e.code).toBe("UNREACHABLE");
    expect(e.message).toMatch(/127\.0\.0\.1:\d+ did not answer within 0\.3 s \(LAYERSWARM_HTTP_TIMEOUT_MS sets this limit\)\. To proceed: download the file another way and pass --model FILE\.gguf\.$/);
    expect(ms).toBeGreaterThanOrEqual(290);
    expect(ms).toBeLessThan(3000);
    const s = await failure(openRemoteSlice(`${silentBase}/m/y.gguf`, () => [], undefined, { timeoutMs: 300 }));
    expect(s.e.code).toBe("UNREACHABLE");
    expect(s.e.message).toMatch(/did not answer within 0\.3 s/);
    expect(s.ms).toBeLessThan(3000);
    console.log(`silent server: fetchModel failed after ${ms.toFixed(0)} ms, openRemoteSlice after ${s.ms.toFixed(0)} ms (timeout 300 ms)`);
  });

  it("the timeout comes from LAYERSWARM_HTTP_TIMEOUT_MS, and hf: references name the endpoint variable", async () => {
    process.env.LAYERSWARM_HTTP_TIMEOUT_MS = "200";
    process.env.LAYERSWARM_HF_ENDPOINT = silentBase;
    try {
      const { e, ms } = await failure(fetchModel("hf:someone/some-repo/model.gguf"));
      expect(e.code).toBe("UNREACHABLE");
      expect(e.message).toContain(`cannot download hf:someone/some-repo/model.gguf (${silentBase}/someone/some-repo/resolve/main/model.gguf)`);
      expect(e.message).toMatch(/did not answer within 0\.2 s .*--model FILE\.gguf, or point LAYERSWARM_HF_ENDPOINT at a reachable mirror of the hub\.$/);
      expect(ms).toBeLessThan(3000);
    } finally {
      delete process.env.LAYERSWARM_HTTP_TIMEOUT_MS;
      delete process.env.LAYERSWARM_HF_ENDPOINT;
    }
  });

  it("a server that sends headers and then nothing: the read stalls and fails", async () => {
    const { e, ms } = await failure(fetchModel(`${stallBase}/m/stall.gguf`, undefined, { timeoutMs: 300 }));
    expect(e.code).toBe("UNREACHABLE");
    expect(e.message).toMatch(new RegExp(`the download from 127\\.0\\.0\\.1:\\d+ stalled: no data for 0\\.3 s at 0 of ${body.length} bytes`));
    expect(ms).toBeLessThan(3000);
    const s = await failure(openRemoteSlice(`${stallBase}/m/stall2.gguf`, () => [], undefined, { timeoutMs: 300 }));
    expect(s.e.message).toMatch(/stalled: no data for 0\.3 s in bytes 0-\d+/);
  });

  it("HTTP errors: 404 is a wrong reference (BAD_ARGUMENT), 401 says gated or private, 500 is the server's (UNREACHABLE)", async () => {
    const nf = await failure(fetchModel(`${failBase}/404/x.gguf`, undefined, { timeoutMs: 2000 }));
    expect(nf.e.code).toBe("BAD_ARGUMENT");
    expect(nf.e.message).toMatch(/HTTP 404 Not Found: no such file; check the owner, repository and file name/);
    const au = await failure(fetchModel(`${failBase}/401/x.gguf`, undefined, { timeoutMs: 2000 }));
    expect(au.e.code).toBe("BAD_ARGUMENT");
    expect(au.e.message).toMatch(/HTTP 401 Unauthorized: access refused .*private, or is gated.*--model FILE\.gguf/);
    const se = await failure(fetchModel(`${failBase}/500/x.gguf`, undefined, { timeoutMs: 2000 }));
    expect(se.e.code).toBe("UNREACHABLE");
    expect(se.e.message).toMatch(/HTTP 500 Internal Server Error: the server failed or is busy; try again later\. To proceed: .*--model FILE\.gguf/);
    const sl = await failure(openRemoteSlice(`${failBase}/503/x.gguf`, () => [], undefined, { timeoutMs: 2000 }));
    expect(sl.e.code).toBe("UNREACHABLE");
    expect(sl.e.message).toMatch(/HTTP 503/);
  });

  it("a refused connection and an unknown host say so at once", async () => {
    const rf = await failure(fetchModel(`${refusedBase}/x.gguf`, undefined, { timeoutMs: 5000 }));
    expect(rf.e.code).toBe("UNREACHABLE");
    expect(rf.e.message).toMatch(/127\.0\.0\.1:\d+ refused the connection \(ECONNREFUSED\): nothing listens there\. To proceed/);
    expect(rf.ms).toBeLessThan(3000);
    // .invalid never resolves (RFC 6761); a machine without any resolver may time out instead
    const dns = await failure(fetchModel("http://layerswarm-test.invalid/x.gguf", undefined, { timeoutMs: 5000 }));
    expect(dns.e.code).toBe("UNREACHABLE");
    expect(dns.e.message).toMatch(/the name layerswarm-test\.invalid could not be resolved \(DNS: E[A-Z_]+|did not answer within 5 s/);
  });
});

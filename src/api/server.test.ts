// The API server in this process over a local model (no swarm): what a hostile
// or careless client can send (a 1 MB prompt, an oversized body, nulls,
// parameters we do not implement), and what browsers may do (CORS, the key).

import * as http from "node:http";
import * as path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../format/synth.js";
import { Model, speculationStats } from "../model/model.js";
import { REPO, STORIES_GGUF, tmpDir } from "../testing/shared.js";
import { DASHBOARD_CSP } from "./http.js";
import { ApiOptions, ApiServer, json } from "./server.js";

const KEY = "test-key";
const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine with her red ball. ";
const servers: ApiServer[] = [];

async function serve(file: string, o: Partial<ApiOptions> = {}): Promise<{ url: string; api: ApiServer }> {
  const { model, stack } = Model.local(file);
  const api = new ApiServer(model, stack, { modelId: "m", ...o });
  servers.push(api);
  return { url: `http://127.0.0.1:${await api.listen(0)}`, api };
}
afterAll(async () => {
  for (const s of servers) await s.close();
});

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });

describe("a 1 MB prompt", () => {
  it("is refused while other requests keep being answered", async () => {
    // a context of 2^18 tokens: the prompt's length alone does not prove it too long, so it is tokenized (in slices)
    const file = synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 700, context: 2 ** 18, type: "F32", tied: true, seed: 1, tokenizer: "llama" }, path.join(tmpDir(), "long.gguf"));
    let bodyRead!: () => void;
    const started = new Promise<void>((r) => (bodyRead = r));
    const { url } = await serve(file, { apiKey: KEY, onRequest: () => bodyRead() });
    const prompt = STORY.repeat(Math.ceil(1e6 / STORY.length)).slice(0, 1e6);
    const order: string[] = [];
    const t0 = performance.now();
    const big = post(`${url}/v1/completions`, { prompt, max_tokens: 1 }).then(async (r) => {
      order.push("big");
      return { status: r.status, body: await r.json(), ms: performance.now() - t0 };
    });
    await started; // the server has the whole body and is tokenizing it
    const small = await Promise.all([
      fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${KEY}` } }).then(async (r) => (order.push("models"), r.status)),
      post(`${url}/v1/completions`, { prompt: "Once upon a time", max_tokens: 5, temperature: 0 }).then(async (r) => {
        const j = await r.json();
        order.push("completion");
        return j.usage?.completion_tokens;
      }),
      fetch(`${url}/health`).then(async (r) => (order.push("health"), (await r.json()).status)),
    ]);
    const b = await big;
    console.log(`1 MB prompt (context 2^18 tokens) refused in ${b.ms.toFixed(0)} ms: ${b.body.error.message}`);
    expect(b.status).toBe(400);
    expect(b.body.error).toMatchObject({ code: "context_length_exceeded", param: "prompt" });
    expect(small).toEqual([200, 5, "ok"]);
    expect(order.at(-1), order.join(" ")).toBe("big"); // the small ones did not wait for it
  });

  it("is refused before tokenizing when its length alone proves it too long (stories260K: 512 tokens)", async () => {
    const { url } = await serve(STORIES_GGUF);
    const t0 = performance.now();
    for (const body of [{ prompt: "x".repeat(1e6) }, { messages: [{ role: "user", content: "x".repeat(1e6) }] }]) {
      const r = await post(url + (("messages" in body) ? "/v1/chat/completions" : "/v1/completions"), body);
      expect(r.status).toBe(400);
      expect((await r.json()).error).toMatchObject({ code: "context_length_exceeded", param: "messages" in body ? "messages" : "prompt" });
    }
    console.log(`1 MB prompt (context 512) refused twice in ${(performance.now() - t0).toFixed(0)} ms`);
  });
});

describe("the API over stories260K", () => {
  let url = "";
  let client: OpenAI;
  let api: ApiServer;
  let tokens = 0;
  beforeAll(async () => {
    ({ url, api } = await serve(STORIES_GGUF, {
      apiKey: KEY, onTokens: (n) => (tokens += n), corsOrigins: ["https://app.example"], staticDir: path.join(REPO, "web"),
      routes: {
        "/metrics": () => json(200, { secret: 1 }),
        "/v1/swarm": () => json(200, { secret: 2 }),
        // a route that writes its own headers, a CORS wildcard among them: the server's decision stands
        "/v1/swarm/events": () => new Response("event: snapshot\ndata: {}\n\n", { headers: { "content-type": "text/event-stream", "access-control-allow-origin": "*" } }),
      },
    }));
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
  });

  it("a body over the limit: 413 with an error object, and the connection closed cleanly", async () => {
    const big = JSON.stringify({ prompt: "x".repeat(3 * 2 ** 20) });
    const r = await post(`${url}/v1/completions`, big);
    expect(r.status).toBe(413);
    expect(await r.json()).toEqual({ error: { message: expect.stringMatching(/exceeds 1048576 bytes/), type: "invalid_request_error", param: null, code: "request_too_large" } });
    // without a content-length (chunked), so that the limit is found while reading
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${url}/v1/completions`, { method: "POST", headers: { authorization: `Bearer ${KEY}`, "transfer-encoding": "chunked" } }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d)).on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      for (let i = 0; i < 48; i++) req.write("x".repeat(2 ** 16));
      req.end();
    });
    expect(chunked.status).toBe(413);
    expect(JSON.parse(chunked.body).error.code).toBe("request_too_large");
    expect((await client.models.list()).data[0].id).toBe("m"); // and the server is fine
  });

  it("null is 'not given' for every optional field", async () => {
    const nulls = { model: null, n: null, stream: null, stream_options: null, temperature: null, top_p: null, max_tokens: null, max_completion_tokens: null, stop: null, seed: null,
      logprobs: null, top_logprobs: null, presence_penalty: null, frequency_penalty: null, logit_bias: null, response_format: null, tools: null, tool_choice: null, user: null };
    const c = await post(`${url}/v1/completions`, { ...nulls, prompt: "Once upon a time", echo: null, suffix: null, best_of: null });
    expect(c.status, await c.clone().text()).toBe(200);
    expect((await c.json()).usage.completion_tokens).toBe(16); // the default max_tokens
    const ch = await post(`${url}/v1/chat/completions`, { ...nulls, messages: [{ role: "user", content: "Lily" }], max_tokens: 3 });
    expect(ch.status, await ch.clone().text()).toBe(200);
  });

  it("parameters we do not implement: 400 naming them, unless given their neutral value", async () => {
    const prompt = "Once upon a time";
    // (response_format, tools and tool_choice are implemented: structured.test.ts; tools are refused on /v1/completions)
    const refused: [string, unknown, boolean?][] = [
      ["tools", [{ type: "function", function: { name: "f" } }]], ["tool_choice", "required"],
      ["echo", true], ["suffix", " the end"], ["best_of", 3], ["functions", [{ name: "f" }], true], ["function_call", { name: "f" }, true],
    ];
    for (const [k, v, chat] of refused) {
      const r = chat ? await post(`${url}/v1/chat/completions`, { messages: [{ role: "user", content: prompt }], [k]: v }) : await post(`${url}/v1/completions`, { prompt, [k]: v });
      expect(r.status, `${k}: ${JSON.stringify(v)}`).toBe(400);
      expect((await r.json()).error, `${k}: ${JSON.stringify(v)}`).toMatchObject({ type: "invalid_request_error", param: k, message: expect.stringContaining(k) });
    }
    const neutral = { logprobs: false, top_logprobs: 0, presence_penalty: 0, frequency_penalty: 0, logit_bias: {}, echo: false, suffix: "", best_of: 1, n: 1, tools: [], tool_choice: "none", response_format: { type: "text" } };
    const ok = await post(`${url}/v1/completions`, { prompt, max_tokens: 2, ...neutral });
    expect(ok.status, await ok.clone().text()).toBe(200);
    // and the official client, which sends what it is given
    await expect(client.completions.create({ model: "m", prompt, echo: true })).rejects.toMatchObject({ status: 400, param: "echo" });
    await expect(client.chat.completions.create({ model: "m", messages: [{ role: "user", content: prompt }], function_call: "auto", functions: [{ name: "f" }] })).rejects.toMatchObject({ status: 400, param: "functions" });
  });

  it("values out of range are refused as OpenAI does", async () => {
    const bad: [string, unknown][] = [
      ["temperature", 2.5], ["temperature", -0.1], ["top_p", 1.5], ["max_tokens", 0], ["max_tokens", 1.5], ["max_completion_tokens", -3], ["seed", 0.5], ["n", 0],
      ["presence_penalty", 5], ["frequency_penalty", -2.5], ["top_logprobs", 21], ["logprobs", 6], ["logit_bias", { "1": 101 }], ["best_of", 0], ["stream", "yes"], ["stop", ["a", "b", "c", "d", "e"]], ["model", 3],
      ["stream_options", { include_usage: true }], // only with stream: true
      ["n", 129], ["n", 1.5], ["logit_bias", { abc: 1 }], ["logit_bias", { "512": 1 }], ["logit_bias", [1]], ["logprobs", true], ["top_logprobs", 2],
      ["prompt", []], ["prompt", [1, "a"]], ["prompt", [[1], []]], ["prompt", [[600]]], ["verify", "maybe"], ["verify", true],
      ["speculate", "draft"], ["speculate", false],
    ];
    for (const [k, v] of bad) {
      const r = await post(`${url}/v1/completions`, { prompt: "Lily", [k]: v });
      expect(r.status, `${k}: ${JSON.stringify(v)}`).toBe(400);
      expect((await r.json()).error.param, `${k}: ${JSON.stringify(v)}`).toBe(k);
    }
  });

  it("speculate: \"off\" and \"ngram\" answer the same text, sampled with a seed too; only ngram drafts", async () => {
    const text = async (speculate: string | undefined, temperature: number) => {
      const d0 = speculationStats.drafted;
      const r = await post(`${url}/v1/completions`, { prompt: STORY + STORY + "Once upon", max_tokens: 40, temperature, seed: 3, ...(speculate ? { speculate } : {}) });
      expect(r.status).toBe(200);
      return { text: (await r.json()).choices[0].text as string, drafted: speculationStats.drafted - d0 };
    };
    for (const t of [0, 0.9]) {
      const off = await text("off", t), on = await text("ngram", t), dflt = await text(undefined, t);
      expect(off.drafted).toBe(0);
      expect(on.drafted).toBeGreaterThan(0);
      expect(on.text).toBe(off.text);
      expect(dflt).toEqual(on);
    }
  });

  it("CORS: localhost origins, the gateway's own and the named ones; the official client's preflight passes; others get 403", async () => {
    const stainless = "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout";
    const preflight = (origin: string) => fetch(`${url}/v1/chat/completions`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": stainless } });
    for (const origin of ["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8000", url, "https://app.example"]) {
      const r = await preflight(origin);
      expect(r.status, origin).toBe(204);
      expect(r.headers.get("access-control-allow-origin"), origin).toBe(origin);
      expect(r.headers.get("access-control-allow-headers"), origin).toBe(stainless);
      expect(r.headers.get("access-control-allow-methods")).toMatch(/POST/);
    }
    for (const origin of ["https://evil.example", "http://localhost.evil.example", "null", "https://app.example.evil"]) {
      const r = await preflight(origin);
      expect(r.status, origin).toBe(403);
      expect(r.headers.get("access-control-allow-origin"), origin).toBeNull();
      const p = await post(`${url}/v1/completions`, { prompt: "Lily", max_tokens: 2 }, { origin });
      expect(p.status, origin).toBe(403);
      expect((await p.json()).error.code).toBe("origin_not_allowed");
    }
    // an allowed origin reads the answer, whatever headers the route wrote
    const r = await post(`${url}/v1/completions`, { prompt: "Lily", max_tokens: 2 }, { origin: "http://localhost:3000" });
    expect(r.status).toBe(200);
    expect(r.headers.get("access-control-allow-origin")).toBe("http://localhost:3000");
    expect(r.headers.get("access-control-expose-headers")).toMatch(/x-request-id/);
    const ev = await fetch(`${url}/v1/swarm/events?api_key=${KEY}`, { headers: { origin: "http://localhost:3000" } });
    expect(ev.headers.get("access-control-allow-origin")).toBe("http://localhost:3000");
  });

  it("the API key: any case of 'Bearer', every data route, but not /health nor the dashboard's files", async () => {
    for (const scheme of ["Bearer", "bearer", "BEARER"]) {
      const r = await fetch(`${url}/v1/models`, { headers: { authorization: `${scheme} ${KEY}` } });
      expect(r.status, scheme).toBe(200);
    }
    for (const p of ["/v1/models", "/metrics", "/v1/swarm", "/v1/swarm/events", "/nope"]) {
      const r = await fetch(url + p);
      expect(r.status, p).toBe(401);
      expect((await r.json()).error.code).toBe("invalid_api_key");
      expect((await fetch(url + p, { headers: { authorization: "Bearer wrong" } })).status, p).toBe(401);
    }
    expect(await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).json()).toEqual({ secret: 1 });
    expect(await (await fetch(`${url}/v1/swarm?api_key=${KEY}`)).json()).toEqual({ secret: 2 });
    expect((await fetch(`${url}/nope`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(404);
    const h = await fetch(`${url}/health`);
    expect(await h.json()).toEqual({ status: "ok" });
    for (const p of ["/", "/app.js", "/style.css"]) {
      const r = await fetch(url + p);
      expect(r.status, p).toBe(200);
      expect(r.headers.get("content-security-policy"), p).toBe(DASHBOARD_CSP);
      expect(r.headers.get("x-content-type-options"), p).toBe("nosniff");
    }
  });

  it("every answer carries an x-request-id, a new one each time", async () => {
    const ids = new Set<string>();
    const rs = [
      await fetch(`${url}/health`), await fetch(`${url}/`), await fetch(`${url}/v1/models`), await fetch(`${url}/nope`, { headers: { authorization: `Bearer ${KEY}` } }),
      await post(`${url}/v1/completions`, { prompt: "Lily", max_tokens: 2 }), await post(`${url}/v1/completions`, { prompt: "Lily", max_tokens: 2, stream: true }),
      await fetch(`${url}/v1/swarm/events`, { headers: { authorization: `Bearer ${KEY}` } }), await post(`${url}/v1/completions`, "x".repeat(2 ** 21)),
    ];
    for (const r of rs) {
      const id = r.headers.get("x-request-id");
      expect(id, r.url).toMatch(/^req_[0-9a-f]{24}$/);
      ids.add(id!);
      await r.arrayBuffer();
    }
    expect(ids.size).toBe(rs.length);
  });

  it("streaming is unchanged, and a client that hangs up mid-stream stops its generation", async () => {
    const s = await client.completions.create({ model: "m", prompt: "Once upon a time", max_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "", usage: unknown;
    for await (const c of s) (text += c.choices[0]?.text ?? ""), (usage = c.usage ?? usage);
    const whole = await client.completions.create({ model: "m", prompt: "Once upon a time", max_tokens: 30, temperature: 0 });
    expect(text).toBe(whole.choices[0].text);
    expect(usage).toEqual(whole.usage);
    const ac = new AbortController();
    const before = tokens;
    const r = await fetch(`${url}/v1/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${KEY}` }, body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 500, temperature: 0, stream: true }) });
    const reader = r.body!.getReader();
    await reader.read();
    ac.abort();
    for (let i = 0; i < 100 && api.active > 0; i++) await new Promise((res) => setTimeout(res, 10));
    expect(api.active).toBe(0);
    expect(tokens - before).toBeLessThan(500);
  });
});

// The main job as a user runs it: `layerswarm run` (a gateway and 3 node
// processes) driven by the official openai client, unmodified.

import { ChildProcess, spawn } from "node:child_process";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenText, tmpDir } from "../testing/shared.js";
import { CLI } from "../testing/swarm.js";
import { StopMatcher } from "./server.js";

const GOLDEN = goldenText("1").slice("Once upon a time".length, -1); // run.c's continuation, without its final newline
let proc: ChildProcess;
let url = "";
const nodePids: number[] = [];
let client: OpenAI;

beforeAll(async () => {
  proc = spawn(process.execPath, [CLI, "run", "--model", STORIES_GGUF, "--nodes", "3", "--port", "0", "--api-key", "test-key", "--step-timeout", "3000"], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LAYERSWARM_LOG: "warn", LAYERSWARM_HOME: tmpDir() },
  });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d) => {
      out += d;
      for (const line of out.split("\n")) {
        if (!line.startsWith("{")) continue;
        const m = JSON.parse(line);
        if (m.event === "node-ready" && !nodePids.includes(m.pid)) nodePids.push(m.pid);
        if (m.event === "api-ready") {
          url = m.url;
          resolve();
        }
      }
    });
    proc.on("exit", (c) => reject(new Error(`run exited with ${c}: ${err}`)));
  });
  client = new OpenAI({ baseURL: url, apiKey: "test-key", maxRetries: 0 });
});

afterAll(() => {
  proc?.kill("SIGTERM");
  for (const p of nodePids) try { process.kill(p, "SIGKILL"); } catch { /* gone */ }
});

describe("OpenAI API over a local swarm (layerswarm run)", () => {
  it("lists the model", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["stories260K"]);
    expect(nodePids).toHaveLength(3);
  });

  it("completions, not streamed: run.c's golden text", async () => {
    const r = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 252, temperature: 0 });
    expect(r.choices[0].text).toBe(GOLDEN);
    expect(r.choices[0].finish_reason).toBe("length");
    expect(r.usage).toEqual({ prompt_tokens: 5, completion_tokens: 252, total_tokens: 257 });
  });

  it("completions, streamed: the same text, finish_reason on the last chunk, usage chunk", async () => {
    const stream = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 252, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "", finish: string | null = null, usage: unknown;
    for await (const c of stream) {
      if (c.choices[0]) {
        text += c.choices[0].text;
        if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
      }
      if (c.usage) usage = c.usage;
    }
    expect(text).toBe(GOLDEN);
    expect(finish).toBe("length");
    expect(usage).toEqual({ prompt_tokens: 5, completion_tokens: 252, total_tokens: 257 });
  });

  it("chat completions, streamed and not (the model has no template: the message is the prompt)", async () => {
    const r = await client.chat.completions.create({ model: "stories260K", messages: [{ role: "user", content: "Once upon a time" }], max_completion_tokens: 40, temperature: 0 });
    expect(r.choices[0].message.role).toBe("assistant");
    expect(GOLDEN.startsWith(r.choices[0].message.content!)).toBe(true);
    expect(r.choices[0].message.content!.length).toBeGreaterThan(50);
    const s = await client.chat.completions.create({ model: "stories260K", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 40, temperature: 0, stream: true });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe("length");
    expect(chunks.map((c) => c.choices[0].delta.content ?? "").join("")).toBe(r.choices[0].message.content);
  });

  it("stop sequences end the text before the stop string, streamed or not", async () => {
    const r = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 100, temperature: 0, stop: ["Lily"] });
    expect(r.choices[0].text).toBe(GOLDEN.slice(0, GOLDEN.indexOf("Lily")));
    expect(r.choices[0].finish_reason).toBe("stop");
    const s = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 100, temperature: 0, stop: ["red ball", "zzz"], stream: true });
    let text = "";
    for await (const c of s) text += c.choices[0]?.text ?? "";
    expect(text).toBe(GOLDEN.slice(0, GOLDEN.indexOf("red ball")));
  });

  it("16 concurrent streaming requests all complete, each equal to its single-request output", async () => {
    const prompts = Array.from({ length: 16 }, (_, i) => ["Once upon a time", "Lily", "The cat", "One day", "Tom"][i % 5] + (i >= 5 ? " " + "abcdefghijklmnop"[i] : ""));
    const run = async (prompt: string, seed: number) => {
      const s = await client.completions.create({ model: "stories260K", prompt, max_tokens: 50, temperature: 0.8, seed, stream: true });
      let text = "";
      for await (const c of s) text += c.choices[0]?.text ?? "";
      return text;
    };
    const alone: string[] = [];
    for (const [i, p] of prompts.slice(0, 5).entries()) alone.push(await run(p, i));
    const together = await Promise.all(prompts.map((p, i) => run(p, i)));
    alone.forEach((a, i) => expect(together[i], `request ${i}`).toBe(a));
    expect(new Set(together).size).toBeGreaterThan(10);
  });

  it("seeded sampling is reproducible", async () => {
    const a = await client.completions.create({ model: "stories260K", prompt: "Lily", max_tokens: 30, temperature: 1, top_p: 0.9, seed: 7 });
    const b = await client.completions.create({ model: "stories260K", prompt: "Lily", max_tokens: 30, temperature: 1, top_p: 0.9, seed: 7 });
    expect(a.choices[0].text).toBe(b.choices[0].text);
  });

  it("errors are OpenAI error objects naming the field", async () => {
    const bad = new OpenAI({ baseURL: url, apiKey: "wrong", maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401, code: "invalid_api_key" });
    await expect(client.completions.create({ model: "stories260K", prompt: "x", temperature: 5 })).rejects.toMatchObject({ status: 400, param: "temperature" });
    await expect(client.chat.completions.create({ model: "stories260K", messages: [] })).rejects.toMatchObject({ status: 400, param: "messages" });
    await expect(client.completions.create({ model: "stories260K", prompt: "Once ".repeat(600) })).rejects.toMatchObject({ status: 400, code: "context_length_exceeded" });
    await expect(client.completions.create({ model: "stories260K", prompt: "x", n: 129 })).rejects.toMatchObject({ status: 400, param: "n" });
    const r = await fetch(`${url}/nope`, { headers: { authorization: "Bearer test-key" } });
    expect(r.status).toBe(404);
    expect((await r.json()).error.code).toBe("not_found");
    const j = await fetch(`${url}/completions`, { method: "POST", headers: { authorization: "Bearer test-key" }, body: "{not json" });
    expect(j.status).toBe(400);
  });

  it("n > 1, logprobs, several prompts and embeddings across the node processes", async () => {
    const r = await client.completions.create({ model: "stories260K", prompt: ["Once upon a time", "Lily"], n: 2, max_tokens: 30, temperature: 0, logprobs: 1 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(r.choices[0].text).toBe(GOLDEN.slice(0, r.choices[0].text.length));
    expect(r.choices[1].text).toBe(r.choices[0].text);
    expect(r.choices.every((c) => c.logprobs!.tokens!.join("") === c.text && c.logprobs!.token_logprobs!.every((x) => x <= 0))).toBe(true);
    const e = await client.embeddings.create({ model: "stories260K", input: ["Once upon a time", "Lily"] });
    expect(e.data.map((d) => d.embedding.length)).toEqual([64, 64]);
    expect(Math.hypot(...e.data[0].embedding)).toBeCloseTo(1, 5);
  });

  it("when every node dies mid-stream: an error frame inside the stream, then 503 for new requests", async () => {
    const s = await client.completions.create({ model: "stories260K", prompt: "Once upon a time", max_tokens: 400, temperature: 0, stream: true });
    let n = 0;
    const consume = (async () => {
      for await (const c of s) {
        void c;
        if (++n === 5) for (const p of nodePids) process.kill(p, "SIGKILL");
      }
    })();
    await expect(consume).rejects.toThrow(/no route/i);
    await expect(client.completions.create({ model: "stories260K", prompt: "x", max_tokens: 5 })).rejects.toMatchObject({ status: 503 });
  });
});

describe("StopMatcher", () => {
  it("holds back a possible stop prefix and cuts at the first stop", () => {
    const m = new StopMatcher(["END", "xy"]);
    expect(m.push("abc E")).toEqual({ emit: "abc ", stopped: false });
    expect(m.push("N")).toEqual({ emit: "", stopped: false });
    expect(m.push("Dzz")).toEqual({ emit: "", stopped: true });
    const k = new StopMatcher(["END"]);
    expect(k.push("EN")).toEqual({ emit: "", stopped: false });
    expect(k.flush("o")).toBe("ENo");
  });
});

// The swarm with real processes on loopback: a gateway in this process, nodes
// as child processes speaking libp2p (TCP + Noise + Yamux).

import * as net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../model/model.js";
import { decodeAll } from "../tokenizer/index.js";
import { STORIES_GGUF, goldenIds, goldenText } from "../testing/shared.js";
import { TestSwarm, compositions, rangesOf, startSwarm } from "../testing/swarm.js";

async function complete(sw: TestSwarm, prompt: string, positions: number, onToken?: (n: number) => void): Promise<number[]> {
  const ids = sw.model.tokenizer.encode(prompt);
  const out: number[] = [];
  for await (const t of generate(sw.model, sw.gw, ids, { maxTokens: positions - ids.length + 1 })) {
    out.push(t.id);
    onToken?.(out.length);
  }
  return [...ids, ...out];
}

const swarms: TestSwarm[] = [];
afterAll(async () => {
  await Promise.all(swarms.map((s) => s.stop()));
});

describe("stories260K over a swarm of node processes", () => {
  it("3 nodes give run.c's golden tokens and text", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 2, 1]));
    swarms.push(sw);
    const ids = await complete(sw, "Once upon a time", 256);
    expect(ids).toEqual(goldenIds("1"));
    expect("Once upon a time" + decodeAll(sw.model.tokenizer, ids.slice(5), 378) + "\n").toBe(goldenText("1"));
    expect(await complete(sw, "", 128)).toEqual(goldenIds("4"));
  });

  it("every split of the 5 layers over 1-5 nodes gives identical output", async () => {
    const want = goldenIds("4").slice(0, 49);
    const all = compositions(5);
    expect(all).toHaveLength(16);
    for (let i = 0; i < all.length; i += 4) {
      await Promise.all(all.slice(i, i + 4).map(async (parts) => {
        const sw = await startSwarm(STORIES_GGUF, rangesOf(parts));
        try {
          expect(await complete(sw, "", 48), `split ${parts.join("+")}`).toEqual(want);
        } finally {
          await sw.stop();
        }
      }));
    }
  });

  it("kill -9 of a node mid-generation: the request completes with the undisturbed tokens", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 2, 1]), { stepTimeoutMs: 5000 });
    swarms.push(sw);
    let killed = false;
    const ids = await complete(sw, "Once upon a time", 256, (n) => {
      if (n === 60 && !killed) {
        killed = true;
        sw.nodes[1].kill("SIGKILL"); // the middle stage, layers [2, 4)
      }
    });
    expect(killed).toBe(true);
    expect(ids).toEqual(goldenIds("1"));
    expect(sw.gw.stats.recoveries).toBeGreaterThanOrEqual(1);
    // a surviving node loaded the lost layers
    expect(sw.gw.coverage().covered).toBe(true);
  });

  it("kill -9 while a multi-chunk prompt's session decodes: the whole history is replayed", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([1, 2, 2]), { stepTimeoutMs: 5000 });
    swarms.push(sw);
    const prompt = goldenIds("1").slice(0, 150); // three 64-token chunks
    const run = async (kill: boolean) => {
      const out: number[] = [];
      for await (const t of generate(sw.model, sw.gw, prompt, { maxTokens: 60 })) {
        out.push(t.id);
        if (kill && out.length === 10) sw.nodes[2].kill("SIGKILL");
      }
      return out;
    };
    const want = await run(false);
    expect(await run(true)).toEqual(want);
    expect(sw.gw.stats.replayedPositions).toBeGreaterThanOrEqual(159);
  });

  it("two nodes of four killed at the same moment (kill -9), five times: every answer exact", async () => {
    const want = goldenIds("1").slice(0, 101);
    for (let trial = 0; trial < 5; trial++) {
      const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 1, 1, 1]), { stepTimeoutMs: 5000 });
      try {
        const victims = [[0, 1], [1, 2], [2, 3], [0, 3], [1, 3]][trial];
        let killed = false;
        const ids = await complete(sw, "Once upon a time", 100, (n) => {
          if (n === 15 + 10 * trial && !killed) {
            killed = true;
            for (const v of victims) sw.nodes[v].kill("SIGKILL");
          }
        });
        expect(killed).toBe(true);
        expect(ids, `trial ${trial}: nodes ${victims} killed`).toEqual(want);
      } finally {
        await sw.stop();
      }
    }
  });

  it("a node that stalls (SIGSTOP) is detected by the step timeout and routed around", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 3]), { stepTimeoutMs: 1500 });
    swarms.push(sw);
    let stopped = false;
    const ids = await complete(sw, "", 128, (n) => {
      if (n === 20 && !stopped) {
        stopped = true;
        sw.nodes[0].kill("SIGSTOP");
      }
    });
    expect(ids).toEqual(goldenIds("4"));
    sw.nodes[0].kill("SIGKILL");
  });

  it("16 concurrent sessions each equal their single-session output", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 2, 1]));
    swarms.push(sw);
    const prompts = Array.from({ length: 16 }, (_, i) => ["Once upon a time", "Lily", "The cat", "One day", ""][i % 5] + (i >= 5 ? " " + "abcdefghijklmnop"[i] : ""));
    const alone: number[][] = [];
    for (const p of prompts.slice(0, 6)) alone.push(await complete(sw, p, 60));
    const together = await Promise.all(prompts.map((p) => complete(sw, p, 60)));
    alone.forEach((a, i) => expect(together[i], `prompt ${i}`).toEqual(a));
  });

  it("a node's session limit gives a clear error to the session over it; the others finish", async () => {
    // no probe sessions (the gateway's route measurements): they would take one of the two slots for a moment
    const sw = await startSwarm(STORIES_GGUF, rangesOf([5]), { probeMs: 0 }, ["--max-sessions", "2"]);
    swarms.push(sw);
    const results = await Promise.allSettled(["Once upon a time", "Lily", "The cat"].map((p) => complete(sw, p, 40)));
    const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    expect(failed).toHaveLength(1);
    expect(String(failed[0].reason)).toMatch(/all 2 session slots are taken/);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    expect(await complete(sw, "", 40)).toEqual(goldenIds("4").slice(0, 41)); // the finished sessions freed their places
  });

  it("garbage bytes and malformed frames do not stop a node from serving", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([5]));
    swarms.push(sw);
    const addr = sw.gw.dir.get(sw.peers[0])!.record.addrs[0];
    const port = Number(/\/tcp\/(\d+)/.exec(addr)![1]);
    for (const junk of [Buffer.from("GET / HTTP/1.1\r\n\r\n"), Buffer.alloc(100_000, 0xff), Buffer.from([0x13, 0x2f, 0x6d, 0x75, 0x6c])]) {
      await new Promise<void>((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => s.end(junk));
        s.on("error", () => resolve());
        s.on("close", () => resolve());
        s.setTimeout(3000, () => s.destroy());
      });
    }
    expect(await complete(sw, "", 40)).toEqual(goldenIds("4").slice(0, 41));
  });
});

// Failover over the in-memory transport: exact answers after losing nodes,
// including several at the same moment, in milliseconds per scenario.

import { describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { memSwarm } from "../testing/memswarm.js";

const r = (start: number, end: number) => ({ start, end });

describe("failover (in-memory swarm)", () => {
  it("golden tokens through 3 nodes", async () => {
    const sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)]);
    try {
      expect(await sw.complete([1], 128)).toEqual(goldenIds("4"));
    } finally {
      await sw.stop();
    }
  });

  it("two nodes of four killed at the same moment, five times: every answer exact", async () => {
    const want = goldenIds("1");
    const prompt = want.slice(0, 5);
    for (let trial = 0; trial < 5; trial++) {
      const sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 3), r(3, 4), r(4, 5)], { stepTimeoutMs: 2000 });
      try {
        const victims = [[0, 1], [1, 2], [2, 3], [0, 3], [1, 3]][trial];
        let killed = false;
        const ids = await sw.complete(prompt, want.length - prompt.length, (n) => {
          if (n === 20 + 7 * trial && !killed) {
            killed = true;
            for (const v of victims) void sw.transports[v].stop();
          }
        });
        expect(killed).toBe(true);
        expect(ids, `trial ${trial}, killed nodes ${victims}`).toEqual(want);
        expect(sw.gw.stats.recoveries).toBeGreaterThanOrEqual(1);
      } finally {
        await sw.stop();
      }
    }
  });

  it("a node lost while it loads the missing layers: recovery goes on to the next one", async () => {
    const sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5), r(0, 1)], { stepTimeoutMs: 2000 });
    try {
      const want = goldenIds("4").slice(0, 61);
      let killed = false;
      // when [2,5) dies, the first candidate asked to load it dies too
      const ids = await sw.complete([1], 60, (n) => {
        if (n === 10 && !killed) {
          killed = true;
          void sw.transports[1].stop();
          const loader = sw.nodes[0];
          const orig = loader.loadRange.bind(loader);
          loader.loadRange = async (x) => {
            void sw.transports[0].stop();
            return orig(x);
          };
        }
      });
      expect(ids).toEqual(want);
    } finally {
      await sw.stop();
    }
  });
});

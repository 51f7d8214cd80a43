// A relay that cuts a circuit mid-answer (its limits, a restart), over the
// in-memory transport: the peers reach each other again at once, the steps in
// flight are lost, and the gateway replays the session on the same route
// without dropping anyone: the answer is exact. The same with real NATs and a
// real relay: src/swarm/nat.process.test.ts.

import { describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { memSwarm } from "../testing/memswarm.js";

const r = (start: number, end: number) => ({ start, end });

describe("a relay cuts a circuit mid-answer (in-memory swarm)", () => {
  it("gateway <-> first node cut twice, then first <-> second node: exact, nobody lost, the view says relayed", async () => {
    const sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { stepTimeoutMs: 2000 });
    try {
      for (const t of sw.transports) t.reachedAs = "relayed"; // behind NATs: every link to them is a circuit
      const want = goldenIds("1");
      const prompt = want.slice(0, 5);
      const [n0, n1] = sw.transports.map((t) => t.peerId);
      // cut while a step is on its way: when the node has just received it
      const cuts: [string, string][] = [];
      const cutAt = (a: string, b: string) => {
        cuts.push([a, b]);
        queueMicrotask(() => sw.net.interrupt(a, b));
      };
      let fromGw = 0, fromN0 = 0;
      sw.transports[0].tap = (from) => {
        if (from === sw.gw.peerId && (++fromGw === 20 || fromGw === 60)) cutAt(sw.gw.peerId, n0);
      };
      sw.transports[1].tap = (from) => {
        if (from === n0 && ++fromN0 === 100) cutAt(n0, n1);
      };
      const ids = await sw.complete(prompt, want.length - prompt.length);
      expect(cuts.length).toBe(3);
      expect(ids).toEqual(want);
      expect(sw.gw.stats.recoveries, "the sessions replayed after the cuts").toBeGreaterThanOrEqual(2);
      const nodes = sw.gw.view.nodes();
      expect(nodes.map((n) => n.state)).toEqual(["serving", "serving", "serving"]); // a cut circuit loses no node
      expect(nodes.map((n) => n.reach)).toEqual(["relayed", "relayed", "relayed"]);
    } finally {
      await sw.stop();
    }
  });
});

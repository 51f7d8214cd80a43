// A relay that cuts a circuit mid-answer (its limits, a restart), over the
// in-memory transport: the peers reach each other again at once, the steps in
// flight are lost, and the gateway replays the session on the same route
// without dropping anyone: the answer is exact. The same with real NATs and a
// real relay: src/swarm/nat.process.test.ts.

import { describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { memSwarm } from "../testing/memswarm.js";
import { MemoryTransport } from "./memory.js";
import { PROTOCOLS } from "./protocol/index.js";
import { DialOptions, Transport } from "./transport.js";

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
      // the cut between two nodes is told to the gateway by the stage before it: no step waited out its timeout
      expect(sw.gw.stats.timeouts).toBe(0);
      const nodes = sw.gw.view.nodes();
      expect(nodes.map((n) => n.state)).toEqual(["serving", "serving", "serving"]); // a cut circuit loses no node
      expect(nodes.map((n) => n.reach)).toEqual(["relayed", "relayed", "relayed"]);
    } finally {
      await sw.stop();
    }
  });

  it("a circuit between two nodes cut with a step on it (lost): the stage before tells the gateway, which replays at once instead of waiting out its step timeout", async () => {
    const sw = await memSwarm(STORIES_GGUF, [], { stepTimeoutMs: 60_000 });
    try {
      const want = goldenIds("1");
      const prompt = want.slice(0, 5);
      const { t: t1 } = await sw.addNode([r(2, 4)]);
      await sw.addNode([r(4, 5)]);
      let sent = 0, lost = 0;
      // the first stage's frames to the second: the 30th and 90th vanish with the circuit they were on
      const cutting = (t: MemoryTransport): Transport => wrap(t, {
        dial: async (peer: string, addrs: string[], protocol: string, o: DialOptions) => {
          const ch = await t.dial(peer, addrs, protocol, o);
          if (peer !== t1.peerId || !PROTOCOLS.steps.includes(protocol)) return ch;
          return wrap(ch, {
            send: async (msg: Uint8Array, signal?: AbortSignal) => {
              if (++sent === 30 || sent === 90) return void (lost++, sw.net.interrupt(t.peerId, peer));
              return ch.send(msg, signal);
            },
          });
        },
      });
      await sw.addNode([r(0, 2)], {}, undefined, cutting);
      await sw.gw.waitForCoverage(2000);
      const ids = await sw.complete(prompt, want.length - prompt.length);
      expect(lost).toBe(2);
      expect(ids).toEqual(want);
      expect(sw.gw.stats.recoveries).toBeGreaterThanOrEqual(2);
      expect(sw.gw.stats.timeouts, "steps that waited out the 60 s step timeout").toBe(0);
      expect(sw.gw.view.nodes().map((n) => n.state)).toEqual(["serving", "serving", "serving"]);
    } finally {
      await sw.stop();
    }
  }, 180_000);
});

// An object whose methods `over` replaces, the rest bound to it.
function wrap<T extends object>(target: T, over: Record<string, unknown>): T {
  return new Proxy(target, {
    get(obj, prop) {
      if (typeof prop === "string" && prop in over) return over[prop];
      const v = Reflect.get(obj, prop);
      return typeof v === "function" ? v.bind(obj) : v;
    },
  });
}

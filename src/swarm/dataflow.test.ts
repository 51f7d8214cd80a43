// The data path over the real libp2p transport, in one process: hidden states
// of a 2048-wide model (4 MB per 512-row frame) through four stages with
// 20 ms links, to nodes that are busy computing while frames arrive (they
// share this process's event loop). A step that stalls shows up as a step
// timeout and a reroute in the gateway's counters; a frame a stream refused
// shows up as a banned peer.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../format/synth.js";
import { Model, generate } from "../model/model.js";
import { P2PSwarm, p2pSwarm } from "../testing/p2pswarm.js";
import { rangesOf } from "../testing/swarm.js";

const WIDE = synthesize({ arch: "llama", dim: 2048, layers: 4, heads: 16, kvHeads: 2, ffn: 64, vocab: 256, context: 1024, type: "Q8_0", tied: true, seed: 3 });
const promptOf = (n: number, s: number) => [1, ...Array.from({ length: n - 1 }, (_, i) => 3 + ((i * 31 + s * 7) % 250))];

async function local(prompt: number[], maxTokens: number): Promise<number[]> {
  const { model, stack } = Model.local(WIDE);
  const out: number[] = [];
  for await (const t of generate(model, stack, prompt, { maxTokens, stopAtEog: false })) out.push(t.id);
  model.kernels.close();
  return out;
}

describe("large steps through slow links (libp2p, one process)", () => {
  let sw: P2PSwarm;
  beforeAll(async () => {
    // the gateway packs its hop (4 MB frames as byte planes), the nodes send theirs as they are (links not measured slow)
    // No route probes: in one process, four nodes' 512-row batches hold the one event loop for
    // seconds, and a probe's dial that waits behind them would count the node as lost (a
    // separate process per node does not starve like this); this test is about the data path.
    sw = await p2pSwarm(WIDE, rangesOf([1, 1, 1, 1]), { delayMs: 20, gateway: { stepTimeoutMs: 60_000, wirePack: "always", probeMs: 0 } });
  }, 60_000);
  afterAll(async () => {
    await sw?.stop();
  });

  it("4 sessions x 3 rounds of whole 512-token prompts (4 MB frames, packed on the first hop) and decode: no step stalls or is lost, tokens exact", async () => {
    const S = 4, R = 3, N = 3;
    const want = await Promise.all(Array.from({ length: S * R }, (_, i) => local(promptOf(512, i), N)));
    for (let r = 0; r < R; r++) {
      const got = await Promise.all(Array.from({ length: S }, (_, s) => sw.complete(promptOf(512, r * S + s), N, 512)));
      expect(got, `round ${r}`).toEqual(want.slice(r * S, r * S + S));
    }
    expect(sw.gw.pipe.stats.timeouts, "steps that timed out").toBe(0);
    expect(sw.gw.stats.recoveries, "reroutes").toBe(0);
    expect(sw.nodes.map((n) => n.stats.badFrames), "peers banned for bad frames").toEqual([0, 0, 0, 0]);
    expect(sw.gw.pipe.stats.steps).toBe(S * R * N);
    expect(sw.gw.stats.wire.packedFrames, "frames the gateway packed").toBeGreaterThan(0);
    expect(sw.nodes.map((n) => n.wire.stats.packedFrames), "frames the nodes packed").toEqual([0, 0, 0, 0]);
  }, 300_000);
});

// npm run bench:spec: one conversation's decoding over 4 node processes with
// 20 ms one-way per link, speculation off beside prompt lookup (ngram), in one
// run, on stories260K's own text and on an input that repeats itself, with the
// acceptance that explains the figures. Greedy; every run's tokens are checked
// equal to the run without speculation (the point: faster, never different).
//
//   npm run bench:spec [-- --tokens 160 --k 4,8 --delay 20]
//
// Not measured yet (issue 11, later parts): a draft model, pipelined
// speculation (several trips in flight), multi-turn prefix reuse.

import { GenerateOptions, generate, speculationStats } from "../src/model/model.js";
import { rangesOf, startSwarm } from "../src/testing/swarm.js";
import { STORIES_GGUF, goldenIds } from "../src/testing/shared.js";
import { args, ratio, row } from "./common.js";

const a = args();
const DELAY = Number(a.get("delay") ?? 20);
const TOKENS = Number(a.get("tokens") ?? 160);
const KS = (a.get("k") ?? "4,8").split(",").map(Number);
process.env.LAYERSWARM_LINK_DELAY_MS = String(DELAY); // the gateway's links (startSwarm wraps its transport)

const sw = await startSwarm(STORIES_GGUF, rangesOf([2, 1, 1, 1]), { stepTimeoutMs: 120_000, probeMs: 0 }, ["--threads", "1"], { LAYERSWARM_LINK_DELAY_MS: String(DELAY) });

// Decode tokens/s (from the first generated token to the last: the prompt's prefill is the same for both) and what was drafted.
async function decode(prompt: number[], opts: GenerateOptions) {
  const d0 = speculationStats.drafted, a0 = speculationStats.accepted, s0 = speculationStats.steps;
  const ids: number[] = [];
  let t1 = 0;
  for await (const t of generate(sw.model, sw.gw, prompt, { maxTokens: TOKENS, stopAtEog: false, ...opts })) {
    if (ids.length === 0) t1 = performance.now();
    ids.push(t.id);
  }
  const ms = performance.now() - t1;
  return { ids, tps: ((ids.length - 1) * 1000) / ms, drafted: speculationStats.drafted - d0, accepted: speculationStats.accepted - a0, specSteps: speculationStats.steps - s0 };
}

try {
  const story = goldenIds("1");
  const inputs: [string, number[]][] = [
    ["stories260K text (\"Once upon a time\")", story.slice(0, 5)],
    // the model is shown a passage, then its opening again: a copy is the likely continuation
    ["repeating input (a 120-token passage, then its opening)", [...story.slice(0, 120), ...story.slice(1, 9)]],
  ];
  await decode([1, 403], { maxTokens: 4, speculate: "off" }); // warm up the connections
  const W = [36, 10, 10, 10, 12, 12];
  console.log(`\n# one conversation, 4 stages (node processes), ${DELAY} ms one-way per link, ${TOKENS} tokens, greedy`);
  for (const [name, prompt] of inputs) {
    console.log(`\n## ${name}`);
    console.log(row(["speculation", "tokens/s", "speedup", "drafted", "accepted", "tokens/trip"], W));
    const off = await decode(prompt, { speculate: "off" });
    console.log(row(["off", off.tps.toFixed(1), "1.00", "-", "-", "1.00"], W));
    for (const k of KS) {
      const on = await decode(prompt, { draftTokens: k });
      if (on.ids.join() !== off.ids.join()) throw new Error(`speculation with k=${k} changed the tokens`);
      // trips: one per step; a step with drafts emits its accepted drafts plus one
      const trips = TOKENS - 1 - on.accepted;
      console.log(row([`ngram, k=${k}`, on.tps.toFixed(1), ratio(on.tps, off.tps), String(on.drafted),
        `${on.accepted} (${on.drafted ? ((100 * on.accepted) / on.drafted).toFixed(0) : 0}%)`, ((TOKENS - 1) / trips).toFixed(2)], W));
    }
  }
  console.log(`\n(acceptance: drafted tokens the model confirmed; a rejected draft costs one rollback round trip to every stage, in parallel)`);
} finally {
  await sw.stop();
}
process.exit(0);

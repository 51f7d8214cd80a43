import { describe, expect, it } from "vitest";
import { FaultInjector, FaultKind, parseFault } from "./fault.js";
import { memSwarm } from "../../testing/memswarm.js";
import * as path from "node:path";
import { fineTune } from "../../testing/finetune.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../../testing/shared.js";

describe("LAYERSWARM_TEST_FAULT", () => {
  it.each([
    ["noise", { kind: "noise" }],
    ["noise-after:12", { kind: "noise-after", steps: 12 }],
    ["noise-rate:0.25", { kind: "noise-rate", rate: 0.25 }],
    ["skip-layer", { kind: "skip-layer" }],
    ["cheap-model:/tmp/a:b.gguf", { kind: "cheap-model", file: "/tmp/a:b.gguf" }],
    ["bad-receipt", { kind: "bad-receipt" }],
  ])("%s parses", (s, want) => expect(parseFault(s)).toEqual(want));

  it.each([
    ["noise:3", /takes no argument/],
    ["noise-after:-1", /whole number/],
    ["noise-after:x", /whole number/],
    ["noise-rate:0", /fraction/],
    ["noise-rate:1.5", /fraction/],
    ["cheap-model:", /needs a file/],
    ["flip", /unknown kind "flip"/],
  ])("%s is refused, saying what is wrong", (s, re) => expect(() => parseFault(s)).toThrow(re));

  it("is off when unset, and each kind misbehaves as named, deterministically", () => {
    expect(FaultInjector.fromEnv({})).toBeUndefined();
    const row = () => new Float32Array(8).fill(1);
    const corrupted = (f: FaultInjector, n: number) => Array.from({ length: n }, () => f.afterStep(row()));
    expect(corrupted(new FaultInjector({ kind: "noise" }), 5)).toEqual([true, true, true, true, true]);
    expect(corrupted(new FaultInjector({ kind: "noise-after", steps: 3 }), 5)).toEqual([false, false, false, true, true]);
    const a = corrupted(new FaultInjector({ kind: "noise-rate", rate: 0.2 }), 1000), b = corrupted(new FaultInjector({ kind: "noise-rate", rate: 0.2 }), 1000);
    expect(a).toEqual(b);
    expect(a.filter(Boolean).length).toBeGreaterThan(140);
    expect(a.filter(Boolean).length).toBeLessThan(260);
    const x = row();
    new FaultInjector({ kind: "noise" }).afterStep(x);
    expect(Array.from(x).some((v) => v !== 1)).toBe(true);
    expect(new FaultInjector({ kind: "skip-layer" }).layers(2, 5)).toEqual({ start: 2, end: 4 });
    expect(new FaultInjector({ kind: "skip-layer" }).layers(2, 3)).toEqual({ start: 2, end: 3 });
    expect(corrupted(new FaultInjector({ kind: "skip-layer" }), 3)).toEqual([false, false, false]);
    const h = new Uint8Array(16).fill(3);
    expect(new FaultInjector({ kind: "bad-receipt" }).receiptHash(h)).not.toEqual(h);
    expect(new FaultInjector({ kind: "noise" }).receiptHash(h)).toBe(h);
  });
});

// The node really computes wrong: a swarm whose middle stage is faulty answers
// otherwise than the golden tokens (what audits and strict mode will catch),
// and exactly when the fault has not started yet.
describe("a faulty node in a swarm (in memory)", () => {
  const WANT = goldenIds("4").slice(0, 41); // BOS, then 40 greedy tokens
  const cheap = fineTune(STORIES_GGUF, path.join(tmpDir("layerswarm-fault-"), "cheap.gguf"), ["blk.2.ffn_down.weight"]);
  const answer = async (fault: FaultKind) => {
    const sw = await memSwarm(STORIES_GGUF, []);
    try {
      await sw.addNode([{ start: 0, end: 2 }]);
      await sw.addNode([{ start: 2, end: 4 }], { fault: new FaultInjector(fault) });
      await sw.addNode([{ start: 4, end: 5 }]);
      await sw.gw.waitForCoverage(2000);
      return await sw.complete([1], 40);
    } finally {
      await sw.stop();
    }
  };
  it.each<[string, FaultKind, boolean]>([
    ["noise", { kind: "noise" }, false],
    ["skip-layer", { kind: "skip-layer" }, false],
    ["cheap-model (another file's layer 2; its record still names ours)", { kind: "cheap-model", file: cheap }, false],
    ["noise-after:10 (turns bad mid-answer)", { kind: "noise-after", steps: 10 }, false],
    ["noise-after:1000 (still honest)", { kind: "noise-after", steps: 1000 }, true],
  ])("%s", async (_what, fault, exact) => {
    const got = await answer(fault);
    if (exact) expect(got).toEqual(WANT);
    else expect(got).not.toEqual(WANT);
  });
});

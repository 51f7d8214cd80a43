// `layerswarm node pause` / `resume` on node processes: paused, a node opens no
// new sessions and hands its live ones over (replayed exactly elsewhere) but
// keeps its layers and its place; resumed, it serves again.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../model/model.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";
import { CLI, spawnNode, startTestGateway } from "../testing/swarm.js";

// asynchronously: the gateway in this process must go on hearing the node meanwhile
const control = async (cmd: "pause" | "resume", key: string, ...extra: string[]) => {
  const r = await promisify(execFile)(process.execPath, [CLI, "node", cmd, "--key", key, ...extra], { encoding: "utf8", timeout: 60_000 });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout);
};

describe("node pause and resume", () => {
  const stops: (() => unknown)[] = [];
  afterAll(async () => {
    for (const s of stops.reverse()) await s();
  });

  it("a paused node hands its session over and opens none; resumed, it serves again; every answer is exact", async () => {
    const WANT = goldenIds("4");
    const { gw, model } = await startTestGateway(STORIES_GGUF);
    stops.push(() => gw.stop());
    const dir = tmpDir();
    const keys = [path.join(dir, "a.key"), path.join(dir, "b.key")];
    const nodes = await Promise.all(keys.map((k) => spawnNode(STORIES_GGUF, gw.addrs()[0], "0:5", ["--key", k])));
    for (const n of nodes) stops.push(() => n.proc.kill("SIGKILL"));
    await gw.waitForCoverage(30_000);
    while (gw.serving().length < 2) await new Promise((r) => setTimeout(r, 20));
    const entry = (peer: string) => gw.serving().find((n) => n.record.peer === peer)!;

    const it = generate(model, gw, [1], { maxTokens: WANT.length - 1 })[Symbol.asyncIterator]();
    const out: number[] = [1];
    for (let i = 0; i < 20; i++) out.push((await it.next()).value!.id);
    const k = nodes.findIndex((n) => entry(n.peer).sessions > 0);
    expect(k).toBeGreaterThanOrEqual(0);
    const [held, other] = [nodes[k], nodes[1 - k]];
    // the live session is handed over at once (no time to finish), and pause returns once it is
    expect(await control("pause", keys[k], "--drain-timeout", "0")).toEqual({ event: "node-paused", ranges: [{ start: 0, end: 5 }] });
    expect(entry(held.peer).record.draining).toEqual([{ start: 0, end: 5 }]);
    for (let r = await it.next(); !r.done; r = await it.next()) out.push(r.value.id);
    expect(out).toEqual(WANT);
    // paused, and the only other node paused too: nothing opens a session
    await control("pause", keys[1 - k], "--drain-timeout", "0");
    await expect((async () => {
      for await (const _ of generate(model, gw, [1], { maxTokens: 4 })) void _;
    })()).rejects.toMatchObject({ code: "NO_ROUTE" });
    // resumed, with its layers still loaded: it serves alone, exactly
    expect(await control("resume", keys[k])).toEqual({ event: "node-resumed", ranges: [{ start: 0, end: 5 }] });
    expect(entry(held.peer).record.draining).toBeUndefined();
    const again: number[] = [1];
    for await (const tok of generate(model, gw, [1], { maxTokens: 32 })) again.push(tok.id);
    expect(again).toEqual(WANT.slice(0, 33));
    expect(entry(other.peer).record.draining).toEqual([{ start: 0, end: 5 }]);
    expect(held.proc.exitCode).toBe(null);
  }, 90_000);
});

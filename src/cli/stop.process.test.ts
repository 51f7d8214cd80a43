// SIGTERM on a node process: it drains (no new sessions, live ones finish or
// are handed over and replayed exactly elsewhere), then exits by itself by its
// --drain-timeout; a second signal stops it at once.
import { ChildProcess } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { generate } from "../model/model.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { TestSwarm, startSwarm } from "../testing/swarm.js";
import { until } from "../testing/wait.js";

const exitOf = (p: ChildProcess) => new Promise<{ code: number | null; signal: string | null }>((resolve) => {
  if (p.exitCode !== null || p.signalCode !== null) return resolve({ code: p.exitCode, signal: p.signalCode });
  p.once("exit", (code, signal) => resolve({ code, signal }));
});

describe("a node stopped with SIGTERM", () => {
  let sw: TestSwarm | undefined;
  afterEach(async () => {
    await sw?.stop();
    sw = undefined;
  });

  it("drains: its live session finishes there, is handed over at the deadline and replayed exactly; it exits by itself", async () => {
    const WANT = goldenIds("4"); // BOS + 128 greedy tokens
    const drainMs = 5000; // long enough for the checks below to run while it drains
    sw = await startSwarm(STORIES_GGUF, [{ start: 0, end: 5 }, { start: 0, end: 5 }], {}, ["--drain-timeout", String(drainMs)]);
    const s = sw;
    let stdout = "";
    s.nodes.forEach((p) => p.stdout!.on("data", (d) => (stdout += d)));
    // the generator is pulled: no step runs while the test does not ask for the next token
    const it = generate(s.model, s.gw, [1], { maxTokens: WANT.length - 1 })[Symbol.asyncIterator]();
    const out: number[] = [1];
    const take = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const r = await it.next();
        if (r.done) return;
        out.push(r.value.id);
      }
    };
    await take(20);
    const holder = s.gw.serving().find((n) => n.sessions > 0)!;
    expect(holder).toBeDefined();
    const k = s.peers.indexOf(holder.record.peer), proc = s.nodes[k];
    const exited = exitOf(proc);
    proc.kill("SIGTERM");
    // its record says it drains every layer: the gateway opens no new sessions there
    await until(async () => !!s.gw.serving().find((n) => n.record.peer === holder.record.peer)?.record.draining?.length, 20_000, "the draining record");
    expect(s.gw.serving().find((n) => n.record.peer === holder.record.peer)!.record.draining).toEqual([{ start: 0, end: 5 }]);
    // a live session goes on where it was
    await take(20);
    expect(proc.exitCode).toBe(null);
    // a new session goes to the other node, and is exact
    const fresh: number[] = [1];
    for await (const t of generate(s.model, s.gw, [1], { maxTokens: 32 })) fresh.push(t.id);
    expect(fresh).toEqual(WANT.slice(0, 33));
    expect(s.gw.serving().find((n) => n.record.peer === holder.record.peer)!.sessions).toBe(1);
    // the first session, idle past the deadline, is handed over; the node exits by itself
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(stdout).toContain('"event":"node-stopped"');
    await take(WANT.length);
    expect(out).toEqual(WANT);
  }, 60_000);

  it("a second signal stops it at once, whatever is still draining", async () => {
    sw = await startSwarm(STORIES_GGUF, [{ start: 0, end: 5 }], {}, ["--drain-timeout", "600000"]);
    const s = sw;
    const it = generate(s.model, s.gw, [1], { maxTokens: 64 })[Symbol.asyncIterator]();
    await it.next(); // a live session on the node, which would keep it draining for ten minutes
    const proc = s.nodes[0];
    const exited = exitOf(proc);
    proc.kill("SIGTERM");
    await until(async () => !!s.gw.serving()[0]?.record.draining?.length, 20_000, "the draining record");
    expect(proc.exitCode).toBe(null);
    proc.kill("SIGINT");
    expect(await exited).toEqual({ code: 0, signal: null });
    await it.return?.(undefined);
  }, 60_000);
});

// A deterministic fuzz test of the GGUF loader: a few hundred mutations of
// stories260K.gguf (src/testing/ggufmutations.ts), each loaded in a child process
// the way `inspect` and `generate` load a model (src/testing/ggufworker.ts) and
// killed when it takes more than a few seconds. Each must end as a LayerswarmError
// (BAD_FILE or UNSUPPORTED) that names the problem, or, when the file is in fact
// valid, as a model that runs. Never a hang, never a crash.

import { ChildProcess, fork } from "node:child_process";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { Mutation, mutations } from "../testing/ggufmutations.js";
import type { CaseResult } from "../testing/ggufworker.js";
import { REPO, STORIES_GGUF, tmpDir } from "../testing/shared.js";

const CASE_TIMEOUT_MS = 5000; // a case takes ~20 ms; one that takes this long hangs
const START_TIMEOUT_MS = 30_000;
const HOOKS = pathToFileURL(path.join(REPO, "src/testing/tshooks.mjs")).href;
const WORKER = path.join(REPO, "src/testing/ggufworker.ts");

type Outcome = CaseResult | { id: number; outcome: "hang" };

// One child process at a time, replaced after a hang or a crash.
class Runner {
  private started?: Promise<ChildProcess>;
  private stderr = "";
  private dir = tmpDir("layerswarm-fuzz-");

  private start(): Promise<ChildProcess> {
    const child = fork(WORKER, [STORIES_GGUF, this.dir], {
      execArgv: ["--max-old-space-size=1024", "--import", `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(HOOKS)})`],
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    this.stderr = "";
    child.stderr!.on("data", (d) => (this.stderr = (this.stderr + d).slice(-4000)));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fuzz worker did not start: ${this.stderr}`)), START_TIMEOUT_MS);
      child.once("message", () => (clearTimeout(timer), resolve(child)));
      child.once("exit", (c) => (clearTimeout(timer), reject(new Error(`fuzz worker exited with ${c} at start: ${this.stderr}`))));
    });
  }

  async run(msg: number | "hang" | "throw", id: number, timeoutMs = CASE_TIMEOUT_MS): Promise<Outcome> {
    this.started ??= this.start();
    const child = await this.started;
    return new Promise((resolve) => {
      const done = (o: Outcome, kill: boolean) => {
        clearTimeout(timer);
        child.off("message", onMessage);
        child.off("exit", onExit);
        if (kill) {
          child.kill("SIGKILL");
          this.started = undefined;
        }
        resolve(o);
      };
      const onMessage = (r: CaseResult) => done(r, r.outcome === "crash");
      const onExit = (code: number | null, signal: string | null) =>
        done({ id, outcome: "crash", error: `the worker died (${code ?? signal}): ${this.stderr}` }, true);
      const timer = setTimeout(() => done({ id, outcome: "hang" }, true), timeoutMs);
      child.on("message", onMessage);
      child.on("exit", onExit);
      child.send(msg);
    });
  }

  stop(): void {
    void this.started?.then((c) => c.kill("SIGKILL"));
  }
}

// "" when the outcome is what the mutation calls for, else what is wrong.
function judge(m: Mutation, r: Outcome): string {
  if (r.outcome === "hang") return `hung (no answer in ${CASE_TIMEOUT_MS} ms)`;
  if (r.outcome === "crash") return `crashed: ${r.error.split("\n").slice(0, 4).join(" | ")}`;
  if (r.outcome === "ok") return m.expect === "reject" ? "accepted although invalid" : "";
  const clear = r.message.includes(`mutation-${m.id}.gguf: `) && !/undefined|\[object /.test(r.message);
  if (r.code !== "BAD_FILE" && r.code !== "UNSUPPORTED") return `refused with code ${r.code}: ${r.message}`;
  if (!clear) return `refused with an unclear message: ${r.message}`;
  if (m.expect === "accept") return `refused although valid: ${r.message}`;
  if (!m.match.test(r.message)) return `refused, but the message does not match ${m.match}: ${r.message}`;
  return "";
}

describe("GGUF fuzz (stories260K)", () => {
  const runner = new Runner();
  afterAll(() => runner.stop());

  it("every mutation ends as a clear error naming the problem or as a valid model that runs", async () => {
    const all = mutations(STORIES_GGUF);
    expect(all.length).toBeGreaterThanOrEqual(300);
    const table = new Map<string, Record<string, number>>();
    const problems: string[] = [];
    for (const m of all) {
      const r = await runner.run(m.id, m.id);
      const wrong = judge(m, r);
      if (wrong) problems.push(`#${m.id} ${m.family}: ${m.name}: ${wrong}`);
      const kind = wrong ? "WRONG" : r.outcome === "ok" ? "valid, ran" : r.outcome === "error" ? `refused (${r.code})` : r.outcome;
      const row = table.get(m.family) ?? {};
      row[kind] = (row[kind] ?? 0) + 1;
      table.set(m.family, row);
    }
    const count = (f: (m: Mutation) => boolean) => all.filter(f).length;
    console.log(`GGUF fuzz: ${all.length} mutations (expected: ${count((m) => m.expect === "reject")} invalid, ${count((m) => m.expect === "accept")} valid, ` +
      `${count((m) => m.expect === "either")} either)\n` + [...table].map(([f, row]) => `  ${f.padEnd(12)} ${Object.entries(row).map(([k, n]) => `${k} ${n}`).join(", ")}`).join("\n"));
    expect(problems).toEqual([]);
  }, 240_000);

  it("the harness catches a hang and a crash", async () => {
    expect((await runner.run("hang", -1, 1000)).outcome).toBe("hang");
    expect((await runner.run("throw", -2)).outcome).toBe("crash");
  }, 60_000);
});

// Settings from a config file, LAYERSWARM_* variables and flags, as the real
// program resolves them (`layerswarm config --json`), and a node started from
// nothing but its config file.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate } from "../model/model.js";
import { startTestGateway } from "../testing/swarm.js";
import { REPO, STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";

const CLI = path.join(REPO, "dist/src/cli/index.js");
// a state directory of its own, so that no default config file of the machine's is read
const HOME = tmpDir();
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000, env: { ...cleanEnv(), LAYERSWARM_HOME: HOME, ...env } });

// the test's own environment without LAYERSWARM_* settings that would leak into the program's
function cleanEnv(): NodeJS.ProcessEnv {
  const keep = new Set(["LAYERSWARM_SHARED", "LAYERSWARM_KERNELS", "LAYERSWARM_CACHE"]);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LAYERSWARM_") || keep.has(k)));
}

function writeConfig(o: unknown): string {
  const f = path.join(tmpDir(), "node.json");
  fs.writeFileSync(f, JSON.stringify(o));
  return f;
}

type Settings = { configFile: string | null; settings: { key: string; value: unknown; source: string; from?: string }[] };
function settings(args: string[], env: NodeJS.ProcessEnv = {}): Record<string, { value: unknown; source: string; from?: string }> {
  const r = cli(["config", ...args, "--json"], env);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  const s = JSON.parse(r.stdout) as Settings;
  return Object.fromEntries(s.settings.map((x) => [x.key, x]));
}

describe("layerswarm config", () => {
  const file = writeConfig({ model: "m.gguf", "max-memory": "6GB", threads: 3, bootstrap: ["10.0.0.5:4001", "10.0.0.6:4001"], mdns: false, "drain-timeout": 5000 });

  it("a node's effective settings from a file, and the defaults for the rest", () => {
    const s = settings(["node", "--config", file]);
    expect(s.model).toEqual({ key: "model", env: "LAYERSWARM_MODEL", value: "m.gguf", source: "file", from: file });
    expect(s["max-memory"]).toMatchObject({ value: "6GB", source: "file" });
    expect(s.threads).toMatchObject({ value: 3, source: "file" });
    expect(s.bootstrap).toMatchObject({ value: ["10.0.0.5:4001", "10.0.0.6:4001"], source: "file" });
    expect(s.mdns).toMatchObject({ value: false, source: "file" });
    expect(s["drain-timeout"]).toMatchObject({ value: 5000, source: "file" });
    expect(s["max-sessions"]).toMatchObject({ value: 256, source: "default" });
    expect(s.layers).toMatchObject({ value: "auto", source: "default" });
  });

  it("the default file is <state dir>/node.json; LAYERSWARM_CONFIG names another", () => {
    const home = tmpDir();
    fs.writeFileSync(path.join(home, "node.json"), JSON.stringify({ threads: 7 }));
    expect(settings(["node"], { LAYERSWARM_HOME: home }).threads).toMatchObject({ value: 7, source: "file", from: path.join(home, "node.json") });
    expect(settings(["node"], { LAYERSWARM_HOME: home, LAYERSWARM_CONFIG: file }).threads).toMatchObject({ value: 3, source: "file", from: file });
    expect(settings(["node", "--no-config"], { LAYERSWARM_HOME: home }).threads).toMatchObject({ value: 1, source: "default" });
  });

  it("the environment overrides the file, and a flag overrides the environment", () => {
    const env = { LAYERSWARM_MAX_MEMORY: "8GB", LAYERSWARM_THREADS: "4", LAYERSWARM_BOOTSTRAP: "10.0.0.7:4001,10.0.0.8:4001", LAYERSWARM_NO_MDNS: "0" };
    const s = settings(["node", "--config", file], env);
    expect(s["max-memory"]).toMatchObject({ value: "8GB", source: "env", from: "LAYERSWARM_MAX_MEMORY" });
    expect(s.threads).toMatchObject({ value: 4, source: "env" });
    expect(s.bootstrap).toMatchObject({ value: ["10.0.0.7:4001", "10.0.0.8:4001"], source: "env" });
    expect(s.mdns).toMatchObject({ value: true, source: "env" }); // LAYERSWARM_NO_MDNS=0: mDNS stays on
    expect(s.model).toMatchObject({ value: "m.gguf", source: "file" });
    const f = settings(["node", "--config", file, "--threads", "2", "--max-memory", "1GB", "--no-mdns"], env);
    expect(f.threads).toMatchObject({ value: 2, source: "flag" });
    expect(f["max-memory"]).toMatchObject({ value: "1GB", source: "flag" });
    expect(f.mdns).toMatchObject({ value: false, source: "flag" });
    expect(f.bootstrap).toMatchObject({ source: "env" });
  });

  it("every long-running command has them: gateway, run and bootstrap too", () => {
    expect(settings(["gateway"], { LAYERSWARM_PORT: "9000" }).port).toMatchObject({ value: 9000, source: "env" });
    expect(settings(["run", "--nodes", "2"]).nodes).toMatchObject({ value: 2, source: "flag" });
    expect(settings(["bootstrap"], { LAYERSWARM_LISTEN: "/ip4/0.0.0.0/tcp/4001" }).listen).toMatchObject({ value: ["/ip4/0.0.0.0/tcp/4001"], source: "env" });
  });

  it("secrets are not printed", () => {
    const r = cli(["config", "gateway"], { LAYERSWARM_API_KEY: "sk-very-secret" });
    expect(r.stdout).toMatch(/api-key\s+\(set\)\s+env/);
    expect(r.stdout).not.toContain("sk-very-secret");
  });

  it("an unknown key, a bad value or bad JSON is refused, naming the key and the file", () => {
    const unknown = writeConfig({ model: "m.gguf", "max-memroy": "6GB" });
    const r = cli(["node", "--config", unknown]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`error [BAD_ARGUMENT]: config file ${unknown}: unknown key "max-memroy"`);
    const bad = writeConfig({ threads: "many" });
    expect(cli(["config", "node", "--config", bad]).stderr).toContain(`config file ${bad}: "threads": "many" is not an integer`);
    const wrongKind = writeConfig({ mdns: "no" });
    expect(cli(["config", "node", "--config", wrongKind]).stderr).toMatch(new RegExp(`config file ${wrongKind}: "mdns": .*boolean`));
    const notJson = writeConfig("x");
    fs.writeFileSync(notJson, "{ threads: 3 }");
    expect(cli(["node", "--config", notJson]).stderr).toContain(`config file ${notJson}:`);
    expect(cli(["config", "node"], { LAYERSWARM_THREADS: "x" }).stderr).toContain("environment variable LAYERSWARM_THREADS: \"x\" is not an integer");
    expect(cli(["node", "--config", path.join(tmpDir(), "missing.json")]).stderr).toMatch(/config file .*missing\.json: no such file/);
  });
});

describe("layerswarm run's own nodes", () => {
  it("take no node settings from the environment: a LAYERSWARM_MAX_MEMORY meant for a node does not reach them", async () => {
    // one byte of memory: a node that read it would refuse to start, and run with it
    const c = spawn(process.execPath, [CLI, "run", "--nodes", "1", "--port", "0"], { stdio: ["ignore", "pipe", "pipe"], env: { ...cleanEnv(), LAYERSWARM_HOME: tmpDir(), LAYERSWARM_LOG: "warn", LAYERSWARM_MAX_MEMORY: "1" } });
    let err = "";
    c.stderr!.on("data", (d) => (err += d));
    try {
      await new Promise<void>((resolve, reject) => {
        let out = "";
        c.stdout!.on("data", (d) => {
          out += d;
          if (out.includes('"api-ready"')) resolve();
        });
        c.once("exit", (code) => reject(new Error(`run exited (${code}) before api-ready:\n${err}`)));
      });
    } finally {
      c.kill("SIGTERM");
    }
  }, 60_000);
});

describe("a node started only from a config file", () => {
  const stops: (() => unknown)[] = [];
  afterAll(async () => {
    for (const s of stops) await s();
  });

  it("serves a gateway, which then answers with the golden tokens", async () => {
    const { gw, model } = await startTestGateway(STORIES_GGUF);
    stops.push(() => gw.stop());
    const dir = tmpDir();
    const file = path.join(dir, "node.json");
    fs.writeFileSync(file, JSON.stringify({
      model: STORIES_GGUF, join: [gw.addrs()[0]], mdns: false, listen: ["/ip4/127.0.0.1/tcp/0"], layers: "0:5", "max-memory": "1GB", key: path.join(dir, "node.key"), control: false, name: "from-file",
    }));
    const proc = spawn(process.execPath, [CLI, "node", "--config", file], { stdio: ["ignore", "pipe", "pipe"], env: { ...cleanEnv(), LAYERSWARM_HOME: HOME, LAYERSWARM_LOG: "warn" } });
    stops.push(() => proc.kill("SIGKILL"));
    let err = "";
    proc.stderr!.on("data", (d) => (err += d));
    const exited = new Promise<never>((_, reject) => proc.on("exit", (code) => reject(new Error(`node exited with ${code}: ${err}`))));
    await Promise.race([gw.waitForCoverage(30_000), exited]);
    expect(gw.serving().map((n) => n.record.name)).toContain("from-file");
    const want = goldenIds("4").slice(0, 33); // BOS and 32 greedy tokens
    const out: number[] = [];
    for await (const tok of generate(model, gw, [1], { maxTokens: want.length - 1 })) out.push(tok.id);
    expect([1, ...out]).toEqual(want);
  }, 60_000);
});

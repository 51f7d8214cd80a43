// The README's first command on a fresh machine: `npm install && npx layerswarm run`.
// The package is laid out in a temporary folder as npm installs it (dist, web,
// models, package.json; node_modules linked), far from ../shared, with HOME and
// every cache in a temporary folder and the hub endpoint pointed at a closed
// port: it must answer from the demo model it ships, offline.

import { ChildProcess, spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO, tmpDir } from "../testing/shared.js";

let pkg = "";
let home = "";
const started: ChildProcess[] = [];

// A closed port: any download attempt fails at once, so a test that passes used no network.
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

let env: NodeJS.ProcessEnv = {};

beforeAll(async () => {
  pkg = path.join(tmpDir("layerswarm-fresh-"), "layerswarm");
  home = tmpDir("layerswarm-home-");
  fs.mkdirSync(pkg);
  for (const d of ["dist/src", "web", "models"]) fs.cpSync(path.join(REPO, d), path.join(pkg, d), { recursive: true });
  fs.copyFileSync(path.join(REPO, "package.json"), path.join(pkg, "package.json"));
  const addon = path.join(REPO, "build/Release/layerswarm_kernels.node");
  if (fs.existsSync(addon)) {
    fs.mkdirSync(path.join(pkg, "build/Release"), { recursive: true });
    fs.copyFileSync(addon, path.join(pkg, "build/Release/layerswarm_kernels.node"));
  }
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(pkg, "node_modules"));
  const dead = `http://127.0.0.1:${await closedPort()}`;
  env = {
    PATH: process.env.PATH, HOME: home, TMPDIR: process.env.TMPDIR,
    LAYERSWARM_CACHE: path.join(home, "cache"), LAYERSWARM_HOME: path.join(home, "state"), LAYERSWARM_HF_ENDPOINT: dead,
  };
});

afterAll(() => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

const CLI = () => path.join(pkg, "dist/src/cli/index.js");

// Linux: a pid that is gone or a zombie is not running.
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    if (process.platform === "linux") return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

describe("first run on a fresh machine", () => {
  it("the package ships the demo model: npm pack lists it with its licence", () => {
    const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: REPO, encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(["models/stories260K.gguf", "models/LICENSE", "models/README.md", "dist/src/cli/index.js", "web/index.html", "scripts/build-native.js", "binding.gyp"]));
    // the file is the converted llama2.c stories260K, byte for byte
    const sha = crypto.createHash("sha256").update(fs.readFileSync(path.join(REPO, "models/stories260K.gguf"))).digest("hex");
    expect(sha).toBe("1d9847737c52a3ec33b9757eb67d2a92b8f0282d0775f6cfd9c70db30e098c94");
  });

  it("`layerswarm run` with no --model serves the demo offline; killing it takes its nodes with it", async () => {
    const t0 = performance.now();
    const c = spawn(process.execPath, [CLI(), "run", "--nodes", "2", "--port", "0"], { cwd: home, env, stdio: ["ignore", "pipe", "pipe"] });
    started.push(c);
    let out = "", err = "";
    c.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const events: { event: string; url?: string; pid?: number }[] = [];
    const ready = new Promise<string>((resolve, reject) => {
      c.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const lines = out.split("\n");
        out = lines.pop()!;
        for (const l of lines) {
          const m = JSON.parse(l);
          events.push(m);
          if (m.event === "api-ready") resolve(m.url);
        }
      });
      c.once("exit", (code) => reject(new Error(`run exited (${code}) before api-ready:\n${err}`)));
    });
    const url = await ready;
    const tReady = performance.now();
    expect(err).toContain("no --model given, so this is the built-in demo stories260K, a 260K-parameter toy that writes children's stories");
    expect(err).toMatch(/--model hf:<owner>\/<repo>\/<file\.gguf> or --model FILE\.gguf/);
    const r = await fetch(`${url}/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 20, temperature: 0 }) });
    const text = await r.text();
    expect(r.status, text).toBe(200);
    const j = JSON.parse(text) as { model: string; choices: { text: string }[] };
    const tAnswer = performance.now();
    expect(j.model).toBe("stories260K");
    expect(j.choices[0].text.trim().length).toBeGreaterThan(0);
    console.log(`fresh run: api-ready after ${(tReady - t0).toFixed(0)} ms, first answer after ${(tAnswer - t0).toFixed(0)} ms: ${JSON.stringify(j.choices[0].text)}`);
    // nothing was downloaded: the cache holds no model
    expect(fs.existsSync(path.join(home, "cache", "models"))).toBe(false);

    const nodes = events.filter((e) => e.event === "node-ready").map((e) => e.pid!);
    expect(nodes).toHaveLength(2);
    expect(nodes.every(running)).toBe(true);
    c.kill("SIGKILL"); // as a process manager may: no chance to clean up
    expect(await until(() => nodes.every((p) => !running(p)), 15_000)).toBe(true);
  });

  it("`layerswarm generate` with no --model uses the demo too", () => {
    const r = spawnSync(process.execPath, [CLI(), "generate", "-n", "20", "Once upon a time"], { cwd: home, env, encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stderr).toContain("the built-in demo stories260K");
    expect(r.stdout.trim().length).toBeGreaterThan(0);
  });

  it("a port in use is reported at once, before the model loads or any node starts", async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    const port = String((busy.address() as net.AddressInfo).port);
    try {
      for (const args of [["run", "--nodes", "2", "--port", port], ["gateway", "--model", path.join(pkg, "models/stories260K.gguf"), "--port", port]]) {
        const t0 = performance.now();
        const r = spawnSync(process.execPath, [CLI(), ...args], { cwd: home, env, encoding: "utf8", timeout: 30_000 });
        const ms = performance.now() - t0;
        expect(r.status).toBe(2);
        expect(r.stdout).toBe(""); // no node-ready, no api-ready
        expect(r.stderr).toMatch(new RegExp(`error \\[BAD_ARGUMENT\\]: port ${port} on 127\\.0\\.0\\.1 is already in use .*--port N \\(--port 0 takes any free port\\)`));
        expect(r.stderr).not.toMatch(/OPEN swarm|built-in demo/); // nothing started, no model chosen
        console.log(`${args[0]} on a busy port: exit 2 after ${ms.toFixed(0)} ms`);
      }
    } finally {
      busy.close();
    }
  });
});

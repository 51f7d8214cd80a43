// Test helpers: an in-process gateway with real node processes on loopback.

import { ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { LayerRange } from "../model/config.js";
import { Model } from "../model/model.js";
import { Gateway, GatewayOptions } from "../swarm/gateway/index.js";
import { Identity } from "../swarm/identity.js";
import { Libp2pTransport } from "../swarm/libp2p.js";
import { withLinkDelay } from "../swarm/delay.js";
import { REPO, tmpDir } from "./shared.js";

export const CLI = path.join(REPO, "dist/src/cli/index.js");

export interface TestSwarm {
  gw: Gateway;
  model: Model;
  nodes: ChildProcess[];
  peers: string[];
  stop(): Promise<void>;
}

const keyDir = tmpDir();
let nodeCounter = 0;

export function spawnNode(model: string, join: string, layers: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ proc: ChildProcess; peer: string; addrs: string[] }> {
  const key = extra.includes("--key") ? [] : ["--key", path.join(keyDir, `node-${++nodeCounter}.key`)];
  const listen = extra.includes("--listen") ? [] : ["--listen", "/ip4/127.0.0.1/tcp/0"];
  const proc = spawn(process.execPath, [CLI, "node", "--model", model, "--join", join, "--no-mdns", ...listen, "--layers", layers, "--max-memory", "4GB", ...key, ...extra], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LAYERSWARM_LOG: "warn", ...env },
  });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d) => {
      out += d;
      const line = out.split("\n").find((l) => l.includes('"node-ready"'));
      if (line) {
        const m = JSON.parse(line);
        resolve({ proc, peer: m.peer, addrs: m.addrs });
      }
    });
    proc.on("exit", (code) => reject(new Error(`node exited with ${code}: ${err}`)));
  });
}

// A gateway in this process, over libp2p on loopback, started: for node processes to --join.
export async function startTestGateway(modelPath: string, opts: GatewayOptions = {}): Promise<{ gw: Gateway; model: Model }> {
  const identity = await Identity.generate();
  const t = withLinkDelay(await Libp2pTransport.create({ identity }));
  const model = Model.gateway(modelPath);
  const gw = new Gateway(model, t, identity, opts);
  await gw.start();
  return { gw, model };
}

export async function startSwarm(modelPath: string, ranges: LayerRange[], opts: GatewayOptions = {}, nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<TestSwarm> {
  const { gw, model } = await startTestGateway(modelPath, opts);
  const started = await Promise.all(ranges.map((r) => spawnNode(modelPath, gw.addrs()[0], `${r.start}:${r.end}`, nodeArgs, env)));
  await gw.waitForCoverage(30_000);
  // every node registered
  const until = Date.now() + 10_000;
  while (gw.serving().length < ranges.length && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return {
    gw, model, nodes: started.map((s) => s.proc), peers: started.map((s) => s.peer),
    async stop() {
      for (const s of started) s.proc.kill("SIGKILL");
      await gw.stop();
    },
  };
}

export function compositions(n: number): number[][] {
  if (n === 0) return [[]];
  const out: number[][] = [];
  for (let first = 1; first <= n; first++) for (const rest of compositions(n - first)) out.push([first, ...rest]);
  return out;
}

export function rangesOf(parts: number[]): LayerRange[] {
  let s = 0;
  return parts.map((p) => ({ start: s, end: (s += p) }));
}

export { tmpDir };

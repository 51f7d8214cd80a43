// Start `layerswarm run` as a real process and read its JSON events.

import { ChildProcess, spawn } from "node:child_process";
import { CLI } from "./swarm.js";
import { tmpDir } from "./shared.js";

export interface RunningSwarm {
  proc: ChildProcess;
  url: string; // http://host:port (no /v1)
  nodes: { pid: number; peer: string; index: number }[];
  stop(): void;
}

export function startRun(model: string, args: string[] = []): Promise<RunningSwarm> {
  const proc = spawn(process.execPath, [CLI, "run", "--model", model, "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LAYERSWARM_LOG: "warn", LAYERSWARM_HOME: tmpDir() },
  });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const nodes: RunningSwarm["nodes"] = [];
  return new Promise((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d) => {
      out += d;
      const lines = out.split("\n");
      out = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith("{")) continue;
        const m = JSON.parse(line);
        if (m.event === "node-ready") nodes.push({ pid: m.pid, peer: m.peer, index: m.index });
        if (m.event === "api-ready")
          resolve({
            proc, url: m.url.replace(/\/v1$/, ""), nodes,
            stop() {
              proc.kill("SIGTERM");
              for (const n of nodes) try { process.kill(n.pid, "SIGKILL"); } catch { /* gone */ }
            },
          });
      }
    });
    proc.on("exit", (c) => reject(new Error(`layerswarm run exited with ${c}: ${err}`)));
  });
}

// A node's local control: a Unix socket beside its identity key (node.sock
// beside node.key in the state directory), through which its own operator
// moves it (`layerswarm node move`). Only someone who may open that file (the
// same user, or root: it is created with mode 0600) can use it, and no peer of
// the swarm can reach it, so nobody but the node's owner can make it move.
// One JSON request line, one JSON answer line.

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import { z } from "zod";
import { LayerswarmError, errorCode } from "../errors.js";
import { LayerRange, parseRange } from "../model/config.js";

export function controlPath(keyPath: string): string {
  if (process.platform === "win32") return `\\\\.\\pipe\\layerswarm-${createHash("sha256").update(keyPath).digest("hex").slice(0, 16)}`;
  const p = `${keyPath.replace(/\.key$/, "")}.sock`;
  if (Buffer.byteLength(p) > 103) throw new LayerswarmError("BAD_ARGUMENT", `the control socket path ${p} is too long for a Unix socket (over 103 bytes): give --key a shorter path`);
  return p;
}

const ControlRequest = z.discriminatedUnion("cmd", [
  z.object({ cmd: z.literal("move"), layers: z.string().max(32), drainMs: z.number().int().nonnegative().max(24 * 3600_000).optional(), force: z.boolean().optional() }),
  z.object({ cmd: z.literal("status") }),
  z.object({ cmd: z.literal("pause"), drainMs: z.number().int().nonnegative().max(24 * 3600_000).optional() }),
  z.object({ cmd: z.literal("resume") }),
]);
export type ControlRequest = z.infer<typeof ControlRequest>;

export interface Controlled {
  move(to: LayerRange | "auto", o: { drainMs?: number; force?: boolean }): Promise<LayerRange[]>;
  ranges(): LayerRange[];
  pause(o: { drainMs?: number }): Promise<void>;
  resume(): Promise<void>;
}

// Serve the node's control socket; returns a function that closes it.
export async function serveControl(path: string, node: Controlled): Promise<() => void> {
  if (process.platform !== "win32" && fs.existsSync(path)) {
    // a socket left by a node that died, or one in use by a node with the same key
    const alive = await new Promise<boolean>((res) => {
      const c = net.connect(path, () => (c.destroy(), res(true)));
      c.on("error", () => res(false));
    });
    if (alive) throw new LayerswarmError("BAD_ARGUMENT", `another node is running with this identity (its control socket ${path} answers): give this one its own --key`);
    fs.rmSync(path, { force: true });
  }
  const server = net.createServer((c) => {
    let buf = "";
    c.setEncoding("utf8");
    c.on("error", () => {});
    c.on("data", (d: string) => {
      buf += d;
      if (buf.length > 4096) return void c.destroy();
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      void answer(buf.slice(0, nl)).then((a) => c.end(JSON.stringify(a) + "\n"));
    });
  });
  const answer = async (line: string): Promise<object> => {
    try {
      const r = ControlRequest.safeParse(JSON.parse(line));
      if (!r.success) throw new LayerswarmError("BAD_ARGUMENT", `control request: ${r.error.issues[0].path.join(".")}: ${r.error.issues[0].message}`);
      if (r.data.cmd === "status") return { ok: true, ranges: node.ranges() };
      if (r.data.cmd === "pause") return await node.pause({ drainMs: r.data.drainMs }), { ok: true, ranges: node.ranges() };
      if (r.data.cmd === "resume") return await node.resume(), { ok: true, ranges: node.ranges() };
      const to = r.data.layers === "auto" ? "auto" : parseRange(r.data.layers);
      return { ok: true, ranges: await node.move(to, { drainMs: r.data.drainMs, force: r.data.force }) };
    } catch (e) {
      return { ok: false, code: e instanceof LayerswarmError ? e.code : "INTERNAL", error: (e as Error).message };
    }
  };
  const old = process.umask(0o177); // the socket file is created 0600: its owner's alone
  try {
    await new Promise<void>((res, rej) => server.once("error", rej).listen(path, () => res()));
  } finally {
    process.umask(old);
  }
  server.unref();
  return () => {
    server.close();
    if (process.platform !== "win32") fs.rmSync(path, { force: true });
  };
}

// Ask the node listening at path; resolves with its answer, or throws its error.
export async function callControl(path: string, req: ControlRequest): Promise<{ ranges: LayerRange[] }> {
  const text = await new Promise<string>((res, rej) => {
    let out = "";
    const c = net.connect(path, () => c.write(JSON.stringify(req) + "\n"));
    c.setEncoding("utf8");
    c.on("data", (d: string) => (out += d));
    c.on("end", () => res(out));
    c.on("error", (e) => rej(new LayerswarmError("UNREACHABLE", `no node answers at ${path} (${(e as NodeJS.ErrnoException).code ?? e.message}): is it running, with this --key?`)));
  });
  const a = JSON.parse(text) as { ok: boolean; ranges?: LayerRange[]; code?: string; error?: string };
  if (!a.ok) throw new LayerswarmError(errorCode(a.code ?? "INTERNAL"), `the node refused: ${a.error}`);
  return { ranges: a.ranges ?? [] };
}

// `layerswarm node move`: ask the node that runs with this key (on this machine) to move.
export async function nodeMoveCommand(o: { layers: string; key: string; drainTimeout?: number; force?: boolean }): Promise<void> {
  if (o.layers !== "auto") parseRange(o.layers); // a clear error before asking
  const { ranges } = await callControl(controlPath(o.key), { cmd: "move", layers: o.layers, drainMs: o.drainTimeout, force: o.force });
  process.stdout.write(JSON.stringify({ event: "node-moved", ranges }) + "\n");
}

// `layerswarm node pause` / `resume`: the owner wants the machine back for a
// while. Paused, the node opens no new sessions, lets live ones finish for
// --drain-timeout and hands the rest over, but keeps its layers loaded and its
// place in the swarm, so resume serves again at once.
export async function nodePauseCommand(o: { key: string; drainTimeout?: number }): Promise<void> {
  const { ranges } = await callControl(controlPath(o.key), { cmd: "pause", drainMs: o.drainTimeout });
  process.stdout.write(JSON.stringify({ event: "node-paused", ranges }) + "\n");
}

export async function nodeResumeCommand(o: { key: string }): Promise<void> {
  const { ranges } = await callControl(controlPath(o.key), { cmd: "resume" });
  process.stdout.write(JSON.stringify({ event: "node-resumed", ranges }) + "\n");
}

// An open swarm of separate processes on loopback, started as a user would:
// a `layerswarm bootstrap` peer, 4 `layerswarm node` and 2 `layerswarm
// gateway` processes with only --bootstrap (no --join), gateway 2
// bootstrapping from a node and two nodes from gateway 1, so that gateways
// can find the nodes' records only through the DHT. Both gateways answer concurrent completions
// over HTTP with the single-process tokens; the first gateway is killed and
// the second keeps answering exactly. Then the same with mDNS alone (no
// --bootstrap anywhere). Prints the time a new node takes to become usable
// by a gateway, and the time a gateway takes to stop using a killed node.
// A fifth node serves layer 2 of a fine-tune (same layout, one tensor
// changed): both gateways find it, name the layer that differs, and never
// route through it.

import { ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Model, generate } from "../model/model.js";
import { decodeAll } from "../tokenizer/index.js";
import { CLI } from "../testing/swarm.js";
import { fineTune } from "../testing/finetune.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";
import { until } from "../testing/wait.js";

const home = tmpDir();
const procs: ChildProcess[] = [];
afterAll(() => procs.forEach((p) => p.kill("SIGKILL")));

interface Started {
  proc: ChildProcess;
  line: Record<string, unknown>; // its ready line
  at: number; // when the ready line came (performance.now())
  stderr: () => string;
  key: string; // its identity key (a node's control socket lies beside it)
}

let keys = 0;
function start(args: string[], ready: string, env: NodeJS.ProcessEnv = {}): Promise<Started> {
  const key = path.join(home, `k${++keys}.key`);
  const proc = spawn(process.execPath, [CLI, ...args, "--key", key], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LAYERSWARM_HOME: home, LAYERSWARM_LOG: "warn", ...env },
  });
  procs.push(proc);
  let err = "", out = "";
  proc.stderr!.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    proc.stdout!.on("data", (d) => {
      out += d;
      for (const l of out.split("\n")) {
        try {
          const m = JSON.parse(l);
          if (m.event === ready) return resolve({ proc, line: m, at: performance.now(), stderr: () => err, key });
        } catch { /* partial line */ }
      }
    });
    proc.on("exit", (code) => reject(new Error(`${args[0]} exited (${code}) before ${ready}:\n${err}`)));
  });
}

const addr = (s: Started) => (s.line.addrs as string[])[0];
const gatewayUrl = (s: Started) => String(s.line.url);

interface SwarmNodeView { peer: string; state: string; via: string; ranges: { start: number; end: number }[]; differs: { layer: number }[]; recordAgeMs: number }
async function nodes(gw: Started): Promise<SwarmNodeView[]> {
  const r = await fetch(`${gatewayUrl(gw).replace(/\/v1$/, "")}/v1/swarm`);
  return ((await r.json()) as { nodes: SwarmNodeView[] }).nodes;
}


const serving = async (gw: Started, n: number) => (await nodes(gw)).filter((x) => x.state === "serving").length >= n;

async function complete(gw: Started, prompt: string, maxTokens: number): Promise<string> {
  const r = await fetch(`${gatewayUrl(gw)}/completions`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }),
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${text}`);
  return (JSON.parse(text) as { choices: { text: string }[] }).choices[0].text;
}

// A streamed completion; onChunk sees how many pieces of text have arrived.
async function completeStream(gw: Started, prompt: string, maxTokens: number, onChunk: (n: number) => void): Promise<string> {
  const r = await fetch(`${gatewayUrl(gw)}/completions`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, stream: true }),
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  let text = "", buf = "", n = 0;
  const dec = new TextDecoder();
  for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = ev.split("\n").find((l) => l.startsWith("data: "))?.slice(6);
      if (!data || data === "[DONE]") continue;
      text += (JSON.parse(data) as { choices: { text: string }[] }).choices[0]?.text ?? "";
      onChunk(++n);
    }
  }
  return text;
}

interface SessionRoute { route: { peer: string; start: number; end: number }[] }
async function sessions(gw: Started): Promise<SessionRoute[]> {
  const r = await fetch(`${gatewayUrl(gw).replace(/\/v1$/, "")}/v1/swarm`);
  return ((await r.json()) as { sessions: SessionRoute[] }).sessions;
}

// `layerswarm node move`, run by the node's operator on its machine (through the socket beside its key).
function move(node: Started, layers: string, extra: string[] = []): Promise<{ code: number | null; out: string; err: string; at: number }> {
  const p = spawn(process.execPath, [CLI, "node", "move", "--layers", layers, "--key", node.key, ...extra], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LAYERSWARM_HOME: home } });
  let out = "", err = "";
  p.stdout!.on("data", (d) => (out += d));
  p.stderr!.on("data", (d) => (err += d));
  return new Promise((res) => p.on("exit", (code) => res({ code, out, err, at: performance.now() })));
}

const reroutes = async (gw: Started) =>
  Number(/^layerswarm_reroutes_total (\d+)/m.exec(await (await fetch(`${gatewayUrl(gw).replace(/\/v1$/, "")}/metrics`)).text())?.[1] ?? NaN);

// The single-process answer: the whole model here, the same prompt, greedy.
const local = Model.local(STORIES_GGUF);
const localIds = new Map<string, number[]>();
async function expected(prompt: string, maxTokens: number): Promise<string> {
  const tok = local.model.tokenizer, ids = tok.encode(prompt);
  const out: number[] = [];
  for await (const t of generate(local.model, local.stack, ids, { maxTokens })) out.push(t.id);
  localIds.set(prompt, [...ids, ...out]);
  return decodeAll(tok, out, ids.at(-1));
}

const PROMPTS = ["Once upon a time", "Lily and Tom"];
const SLOW = { LAYERSWARM_LINK_DELAY_MS: "3", LAYERSWARM_LOG: "info" };
const RANGES = ["0:2", "2:3", "3:4", "4:5"];

// Both gateways at once, two prompts each, every answer the single-process one.
async function concurrentExact(gws: Started[], want: Map<string, string>, maxTokens: number): Promise<void> {
  const asks = gws.flatMap((g) => PROMPTS.map(async (p) => ({ g, p, text: await complete(g, p, maxTokens) })));
  for (const a of await Promise.all(asks)) expect(a.text, `gateway ${gws.indexOf(a.g) + 1}, prompt ${JSON.stringify(a.p)}`).toBe(want.get(a.p));
}

describe("an open swarm of separate processes (loopback)", () => {
  it("bootstrap peer, 4 nodes, 2 gateways with only --bootstrap: both exact at once; the first gateway killed, the second goes on; a new node and a killed one, timed; a hole filled by --layers auto; a node moved under live sessions", async () => {
    const want = new Map<string, string>(), long = new Map<string, string>();
    for (const p of PROMPTS) want.set(p, await expected(p, 100));
    expect(localIds.get("Once upon a time")).toEqual(goldenIds("1").slice(0, 105)); // the single-process tokens are run.c's
    for (const p of PROMPTS) long.set(p, await expected(p, 400));

    const noMdns = ["--no-mdns"];
    const t0 = performance.now();
    const boot = await start(["bootstrap", ...noMdns], "bootstrap-ready");
    // gateway 1 from the bootstrap peer; nodes 1-2 from the bootstrap peer, nodes 3-4 from gateway 1;
    // gateway 2 from node 1, given as host:port (no peer id). No --join anywhere: records only come through the DHT.
    const g1 = await start(["gateway", "--model", STORIES_GGUF, "--port", "0", "--bootstrap", addr(boot), ...noMdns], "api-ready");
    // the holders of layer 3 send with 3 ms of added latency, so that the answers running while one of them moves (below) last long enough
    const ns = await Promise.all(RANGES.map((l, i) =>
      start(["node", "--model", STORIES_GGUF, "--layers", l, "--bootstrap", i < 2 ? addr(boot) : String((g1.line.gateway as string[])[0]), "--max-memory", "1GB", ...noMdns], "node-ready", i === 2 ? SLOW : {})));
    const ft = fineTune(STORIES_GGUF, path.join(home, "finetune.gguf"), ["blk.2.ffn_down.weight"]);
    const other = await start(["node", "--model", ft, "--layers", "2:3", "--bootstrap", addr(boot), "--max-memory", "1GB", ...noMdns], "node-ready");
    const hostPort = /\/ip4\/([^/]+)\/tcp\/(\d+)/.exec(addr(ns[0]))!.slice(1).join(":");
    const g2 = await start(["gateway", "--model", STORIES_GGUF, "--port", "0", "--bootstrap", hostPort, ...noMdns], "api-ready");
    for (const g of [g1, g2]) await until(() => serving(g, 5), 30_000, "every node found");
    console.log(`both gateways found all 5 nodes through the DHT ${(performance.now() - t0).toFixed(0)} ms after the bootstrap peer was started (gateway 2: ${(performance.now() - g2.at).toFixed(0)} ms after it was ready)`);
    for (const g of [g1, g2]) expect((await nodes(g)).map((n) => n.via)).toEqual(["dht", "dht", "dht", "dht", "dht"]); // no node announced itself to a gateway
    // the fine-tune's node: listed with the layer that differs, and said so in the log
    for (const g of [g1, g2]) expect((await nodes(g)).find((n) => n.peer === other.line.peer)!.differs.map((d) => d.layer)).toEqual([2]);
    expect(g2.stderr()).toMatch(new RegExp(`node ${other.line.peer} \\(\\S+\\) serves other weights than this gateway for layer 2 \\(layer 2: its [0-9a-f]{12}…, ours [0-9a-f]{12}…\\)`));

    await concurrentExact([g1, g2], want, 100);

    // the first gateway, which nodes 3 and 4 bootstrapped from, dies (SIGKILL) while the second is answering
    let g1Killed = 0;
    expect(await completeStream(g2, PROMPTS[0], 100, (n) => n === 10 && (g1Killed = performance.now()) && g1.proc.kill("SIGKILL"))).toBe(want.get(PROMPTS[0]));
    expect(g1.proc.signalCode ?? (await new Promise((r) => g1.proc.once("exit", (_c, sig) => r(sig))))).toBe("SIGKILL");
    expect(await reroutes(g2)).toBe(0); // nothing to recover from
    await concurrentExact([g2], want, 100);

    // a new node (the whole model) becomes usable by gateway 2: found through the DHT
    const n5 = await start(["node", "--model", STORIES_GGUF, "--layers", "0:5", "--bootstrap", addr(boot), "--max-memory", "1GB", ...noMdns], "node-ready");
    const peer5 = String(n5.line.peer);
    await until(async () => (await nodes(g2)).some((n) => n.peer === peer5 && n.state === "serving"), 40_000, "the new node found", 20);
    const usableMs = performance.now() - n5.at;
    console.log(`a new node became usable by a gateway ${usableMs.toFixed(0)} ms after it was ready (discovery rounds every 15 s once every layer is held)`);
    // gateway 2 went on finding all four nodes after gateway 1 died (nodes 3 and 4 included): each record arrived again since
    const ids = new Set(ns.map((n) => String(n.line.peer)));
    await until(async () => (await nodes(g2)).filter((n) => ids.has(n.peer) && n.state === "serving" && n.recordAgeMs < performance.now() - g1Killed).length === 4,
      20_000, "every record found again after gateway 1 died");

    // it holds every layer, so new sessions go through it alone; it is killed mid-answer:
    // the answer stays exact, and the gateway stops using it at once
    let tKill = 0;
    const answer = completeStream(g2, PROMPTS[1], 100, (n) => {
      if (n !== 10) return;
      tKill = performance.now();
      n5.proc.kill("SIGKILL");
    });
    await until(async () => tKill > 0 && (await nodes(g2)).find((n) => n.peer === peer5)?.state === "lost", 10_000, "the killed node dropped", 5);
    const lostMs = performance.now() - tKill;
    console.log(`a killed node was dropped by the gateway ${lostMs.toFixed(0)} ms after SIGKILL`);
    expect(await answer).toBe(want.get(PROMPTS[1]));
    expect(await reroutes(g2)).toBeGreaterThanOrEqual(1); // it was on the route, and the session moved
    expect(lostMs).toBeLessThan(2000);
    await concurrentExact([g2], want, 100);

    // a hole: the only node with layer 2 (the fine-tune's does not count) dies; a fresh node with
    // --layers auto and memory for one layer finds it from the DHT's holders, and fills it
    ns[1].proc.kill("SIGKILL");
    await until(async () => (await nodes(g2)).find((n) => n.peer === ns[1].line.peer)?.state === "lost", 10_000, "node 2 dropped");
    const n6 = await start(["node", "--model", STORIES_GGUF, "--layers", "auto", "--bootstrap", addr(boot), "--max-memory", "64.2MiB", ...noMdns], "node-ready");
    expect(n6.line.ranges).toEqual([{ start: 2, end: 3 }]);
    await until(async () => (await nodes(g2)).some((n) => n.peer === n6.line.peer && n.state === "serving"), 40_000, "the auto node found", 20);
    console.log(`a node with --layers auto filled the hole and was usable ${(performance.now() - n6.at).toFixed(0)} ms after it was ready`);
    await concurrentExact([g2], want, 100);

    // a node moves while sessions run through it: a replica of layers 3-5 joins, two long answers
    // start, and the operator of the node serving layer 3 on a live route moves it to layers 0-2
    // (its old layers stay held by others). It drains for 200 ms, then hands the sessions still
    // running over by replay: neither answer fails or changes a token.
    const n7 = await start(["node", "--model", STORIES_GGUF, "--layers", "3:5", "--bootstrap", addr(boot), "--max-memory", "1GB", ...noMdns], "node-ready", SLOW);
    await until(async () => (await nodes(g2)).some((n) => n.peer === n7.line.peer && n.state === "serving"), 40_000, "the replica found", 20);
    const before = await reroutes(g2);
    let moving: ReturnType<typeof move> | undefined, mover: Started | undefined, tMove = 0;
    const answers = PROMPTS.map((p, i) => completeStream(g2, p, 400, (n) => {
      if (i !== 0 || n !== 5 || moving) return;
      moving = sessions(g2).then((ss) => {
        const peer = ss.flatMap((x) => x.route).find((st) => st.start <= 3 && 3 < st.end)!.peer;
        mover = [n7, ns[2]].find((x) => x.line.peer === peer)!;
        tMove = performance.now();
        return move(mover, "0:2", ["--drain-timeout", "200"]);
      });
    }));
    for (const [i, a] of answers.entries()) expect(await a, `answer ${i} while a node moved`).toBe(long.get(PROMPTS[i]));
    const moved = await moving!;
    expect(moved.code, moved.err).toBe(0);
    const log = mover!.stderr().split("\n").filter((l) => /"(draining|handed sessions over|moved)"/.test(l)).map((l) => JSON.parse(l) as { t: string; event: string });
    const at = (e: string) => Date.parse(log.find((l) => l.event === e)!.t);
    console.log(`node move 3:x -> 0:2 under two live answers: ${(moved.at - tMove).toFixed(0)} ms from the command to its answer (${at("moved") - at("draining")} ms from draining to moved: drain 200 ms, ` +
      `${log.find((l) => l.event === "handed sessions over") ? "then the sessions left handed over" : "every session finished"}), ${(await reroutes(g2)) - before} reroutes`);
    expect(JSON.parse(moved.out).ranges).toEqual([{ start: 0, end: 2 }]);
    expect(await reroutes(g2)).toBeGreaterThan(before); // handed over by replay
    const seen = (await nodes(g2)).find((n) => n.peer === mover!.line.peer)!;
    expect(seen.ranges).toEqual([{ start: 0, end: 2 }]); // it told the gateway itself
    await concurrentExact([g2], want, 100);
    // a move that would leave layers held by nobody else is refused, and the node keeps serving
    const refused = await move(n6, "0:1");
    expect(refused.code).toBe(2);
    expect(refused.err).toMatch(/would leave layers \[2, 3\) held by nobody else/);
    await concurrentExact([g2], want, 100);
    for (const p of [boot, ns[0], ns[2], ns[3], other, n6, n7, g2]) expect(p.proc.exitCode, p.stderr()).toBeNull(); // everyone still up
  }, 240_000);

  it("the same with mDNS alone: no --bootstrap anywhere", async () => {
    const want = new Map<string, string>();
    for (const p of PROMPTS) want.set(p, await expected(p, 60));
    // a service name of our own: other swarms on this machine or LAN (other tests, other people) stay apart
    const env = { LAYERSWARM_MDNS_SERVICE: `_ls-test-${process.pid}-${Date.now() % 100000}._udp.local` };
    const t0 = performance.now();
    const ns = await Promise.all(RANGES.map((l) => start(["node", "--model", STORIES_GGUF, "--layers", l, "--max-memory", "1GB"], "node-ready", env)));
    const [g1, g2] = await Promise.all([0, 1].map(() => start(["gateway", "--model", STORIES_GGUF, "--port", "0"], "api-ready", env)));
    for (const g of [g1, g2]) await until(() => serving(g, 4), 30_000, "every node found by mDNS and the DHT");
    console.log(`mDNS: both gateways found all 4 nodes ${(performance.now() - t0).toFixed(0)} ms after the first process was started`);
    await concurrentExact([g1, g2], want, 60);
    g1.proc.kill("SIGKILL");
    await concurrentExact([g2], want, 60);
    for (const p of [...ns, g2]) expect(p.proc.exitCode, p.stderr()).toBeNull();
  }, 120_000);
});

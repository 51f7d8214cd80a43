// NAT traversal with real NATs: network namespaces joined by a bridge (the
// internet), each private host behind its own router with an nftables
// masquerade that lets nothing in (src/testing/netns.ts), and real processes
// in them (`layerswarm bootstrap`, `node`, `gateway`). A synthetic random-weight
// model of dim 2048 (4 layers), answers of a few hundred tokens, every answer
// equal to the single-process one:
//   A. nodes behind two different NATs serve consecutive stages to a gateway
//      outside, all through a relay (the bootstrap peer): measured per token;
//   B. a gateway behind a third NAT uses the same nodes;
//   C. a gateway at a public-looking address (DCUtR only dials those): the
//      relayed connections are upgraded, the test prints which path carried
//      each hop and the extra latency the relayed hops cost (A beside C, same
//      run, same route);
//   D. a relay that cuts every circuit after 8 s (LAYERSWARM_RELAY_MAX_SECONDS)
//      carries a node and a gateway behind two more NATs; 600-token answers
//      back to back for 20 s: circuits are cut mid-answer, the gateway
//      reaches the node again through the relay and replays: exact.
// Needs root, ip and nft: in CI (CI=true) it runs or fails, never skips.

import { ChildProcess } from "node:child_process";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { synthesize } from "../format/synth.js";
import { Model, generate } from "../model/model.js";
import { decodeAll } from "../tokenizer/index.js";
import { CLI } from "../testing/swarm.js";
import { Host, NetLab, netnsAvailable } from "../testing/netns.js";
import { tmpDir } from "../testing/shared.js";
import { until as waitUntil } from "../testing/wait.js";

const WIDE = { arch: "llama", dim: 2048, layers: 4, heads: 16, kvHeads: 2, ffn: 64, vocab: 256, context: 1024, type: "Q8_0", tied: true, seed: 13 } as const;
const PROMPT = "Once upon a time";
const LONG = 300; // tokens of the relayed answers
const LONGER = 600; // of the answer a relay cuts: longer than the relay's circuits last (8 s)
const CI = process.env.CI === "true" || process.env.CI === "1";
const avail = netnsAvailable();
if (!avail.ok && !CI) console.warn(`\n*** SKIPPING the NAT test (src/swarm/nat.process.test.ts): ${avail.why}. It runs as root with iproute2 and nftables (CI installs them). ***\n`);

interface Proc {
  proc: ChildProcess;
  host: Host;
  line: Record<string, unknown>; // its ready line
  events: Record<string, unknown>[]; // its JSON lines on stdout
  stderr: () => string;
}

describe.skipIf(!avail.ok && !CI)("NAT traversal through real NATs (network namespaces)", () => {
  let lab: NetLab;
  const home = tmpDir();
  let keys = 0;
  let want = "", wantLonger = "";
  const model = synthesize({ ...WIDE });

  function start(host: Host, args: string[], ready: string, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    const proc = lab.spawn(host, process.execPath, [CLI, ...args, "--key", path.join(home, `k${++keys}.key`)], { LAYERSWARM_HOME: home, LAYERSWARM_LOG: "warn", ...env });
    let err = "", out = "";
    const p: Proc = { proc, host, line: {}, events: [], stderr: () => err };
    proc.stderr!.on("data", (d) => (err += d));
    return new Promise((resolve, reject) => {
      proc.stdout!.on("data", (d) => {
        out += d;
        const lines = out.split("\n");
        out = lines.pop()!;
        for (const l of lines) {
          try {
            const m = JSON.parse(l);
            p.events.push(m);
            if (m.event === ready) resolve(Object.assign(p, { line: m }));
          } catch { /* not a JSON line */ }
        }
      });
      proc.on("exit", (code, sig) => reject(new Error(`${args[0]} in ${host.name} exited (${code ?? sig}) before ${ready}:\n${err}`)));
    });
  }

  // HTTP to a gateway's API, from inside its namespace (the API listens on its loopback).
  function http(gw: Proc, route: string, body?: unknown): Promise<{ status: number; text: string; ms: number }> {
    const port = Number(gw.line.port);
    const script = `const t0 = performance.now();
      const r = await fetch("http://127.0.0.1:${port}${route}", ${body ? `{ method: "POST", headers: { "content-type": "application/json" }, body: process.argv[1] }` : "{}"});
      const text = await r.text();
      process.stdout.write(JSON.stringify({ status: r.status, text, ms: performance.now() - t0 }));`;
    const p = lab.spawn(gw.host, process.execPath, ["--input-type=module", "-e", script, JSON.stringify(body ?? null)]);
    let out = "", err = "";
    p.stdout!.on("data", (d) => (out += d));
    p.stderr!.on("data", (d) => (err += d));
    return new Promise((resolve, reject) => p.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`fetch in ${gw.host.name}: ${err}`)))));
  }

  async function complete(gw: Proc, maxTokens: number): Promise<{ text: string; ms: number }> {
    const r = await http(gw, "/v1/completions", { prompt: PROMPT, max_tokens: maxTokens, temperature: 0 });
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.text}`);
    return { text: (JSON.parse(r.text) as { choices: { text: string }[] }).choices[0].text, ms: r.ms };
  }

  interface NodeView { peer: string; state: string; reach?: string; rttMs?: number; ranges: { start: number; end: number }[] }
  const swarm = async (gw: Proc): Promise<NodeView[]> => (JSON.parse((await http(gw, "/v1/swarm")).text) as { nodes: NodeView[] }).nodes;
  const reroutes = async (gw: Proc) => Number(/^layerswarm_reroutes_total (\d+)/m.exec((await http(gw, "/metrics")).text)?.[1] ?? NaN);

  const until = <T>(f: () => Promise<T | undefined | false>, ms: number, what: string) => waitUntil(f, ms, what, 250);
  const servingAll = (gw: Proc, peers: string[]) => async () => {
    const ns = await swarm(gw);
    return peers.every((p) => ns.some((n) => n.peer === p && n.state === "serving")) && ns;
  };
  const addrOn = (p: Proc, ip: string) => (p.line.addrs as string[]).find((a) => a.startsWith(`/ip4/${ip}/`))!;
  const peerOf = (p: Proc) => String(p.line.peer);
  const reachability = (p: Proc) => until(async () => p.events.find((e) => e.event === "reachability") as { reachable: boolean; relayed: string[] } | undefined, 40_000, `${p.host.name} decides it is unreachable`);

  let R: Proc, N1: Proc, N2: Proc, G: Proc, G2: Proc, N3: Proc | undefined;
  const figures: string[] = [];
  const perToken = new Map<string, { ms: number; relayedHops: number }>(); // answer -> ms/token, relayed hops per step
  const name = (peer: string) => (peer === peerOf(N1) ? "node1" : peer === peerOf(N2) ? "node2" : peer.slice(-6));
  const gateway = (h: Host, extra: string[] = []) => start(h, ["gateway", "--model", model, "--port", "0", "--bootstrap", addrOn(R, R.host.ip), "--no-mdns", "--step-timeout", "20000", ...extra], "api-ready");

  // The route gateway -> node1 -> node2 -> gateway: how each hop went (the gateway's view for its own two hops; node1 -> node2 is always relayed:
  // both are behind NATs and neither has an address DCUtR would dial).
  const hops = (ns: NodeView[]) => {
    const r1 = ns.find((n) => n.peer === peerOf(N1))!.reach, r2 = ns.find((n) => n.peer === peerOf(N2))!.reach;
    return { text: `gateway -> node1 ${r1}, node1 -> node2 relayed, node2 -> gateway ${r2}`, relayed: 1 + Number(r1 === "relayed") + Number(r2 === "relayed") };
  };

  beforeAll(async () => {
    if (!avail.ok) throw new Error(`CI must run the NAT test, but: ${avail.why}`);
    // the single-process answer
    const { model: m, stack } = Model.local(model);
    const ids = m.tokenizer.encode(PROMPT), out: number[] = [];
    for await (const t of generate(m, stack, ids, { maxTokens: LONGER })) out.push(t.id);
    m.kernels.close();
    expect(out.length, "the reference answer runs its full length (no end-of-text)").toBe(LONGER);
    want = decodeAll(m.tokenizer, out.slice(0, LONG), ids.at(-1));
    wantLonger = decodeAll(m.tokenizer, out, ids.at(-1));

    lab = NetLab.create();
    const hR = lab.addPublic("relay", 2), hG = lab.addPublic("gw", 3);
    const h1 = lab.addNatted("node1"), h2 = lab.addNatted("node2");
    R = await start(hR, ["bootstrap", "--listen", "/ip4/0.0.0.0/tcp/4001", "--no-mdns"], "bootstrap-ready");
    const node = (h: Host, layers: string) =>
      start(h, ["node", "--model", model, "--layers", layers, "--bootstrap", addrOn(R, hR.ip), "--max-memory", "600MB", "--no-mdns"], "node-ready");
    [N1, N2, G] = await Promise.all([node(h1, "0:2"), node(h2, "2:4"), gateway(hG)]);
  }, 120_000);

  afterAll(async () => {
    await lab?.destroy();
    for (const f of figures) console.log(f);
  });

  it("A: two consecutive stages behind two different NATs, unreachable from outside, serve a gateway outside; exact", async () => {
    // each NATed peer found that nobody can dial it, and took a relay address
    for (const p of [N1, N2]) {
      const r = await reachability(p);
      expect(r.reachable, p.host.name).toBe(false);
      expect(r.relayed.length, `${p.host.name} has a relay address`).toBeGreaterThan(0);
    }
    const t0 = performance.now();
    await until(servingAll(G, [peerOf(N1), peerOf(N2)]), 60_000, "the gateway outside finds both NATed nodes through the DHT");
    figures.push(`NAT: the gateway outside could use both NATed nodes ${(performance.now() - t0).toFixed(0)} ms after they had relay addresses`);
    const a = await complete(G, LONG);
    expect(a.text).toBe(want);
    // through the relay, or over a connection a node opened itself through its NAT (to the DHT or a relay: the gateway is both)
    const h = hops(await swarm(G));
    perToken.set("A", { ms: a.ms / LONG, relayedHops: h.relayed });
    figures.push(`NAT A (gateway outside): ${LONG} tokens exact, ${(a.ms / LONG).toFixed(2)} ms/token, ${await reroutes(G)} replay(s); ${h.text}`);
  }, 180_000);

  it("B: a gateway behind a third NAT: every hop through the relay; exact", async () => {
    G2 = await gateway(lab.addNatted("gwnat"));
    const r = await reachability(G2);
    expect(r.reachable).toBe(false);
    const ns = await until(servingAll(G2, [peerOf(N1), peerOf(N2)]), 60_000, "the NATed gateway finds both nodes");
    for (const n of ns) expect(n.reach, `how the NATed gateway reaches ${name(n.peer)}`).toBe("relayed");
    const b = await complete(G2, LONG);
    expect(b.text).toBe(want);
    const h = hops(await swarm(G2));
    expect(h.relayed).toBe(3);
    perToken.set("B", { ms: b.ms / LONG, relayedHops: 3 });
    figures.push(`NAT B (gateway behind a NAT, reached through ${r.relayed[0]?.split("/p2p-circuit")[0]}): ${LONG} tokens exact, ${(b.ms / LONG).toFixed(2)} ms/token; ${h.text}; round trips ${ns.map((n) => `${name(n.peer)} ${n.rttMs} ms`).join(", ")}`);
  }, 180_000);

  it("C: where the NAT allows (a gateway at a public address), DCUtR upgrades the relayed connections; exact; the path of each hop printed", async () => {
    const GD = await gateway(lab.addPublic("gwpub", 4, { publicLooking: true }));
    const ns = await until(async () => {
      const v = await servingAll(GD, [peerOf(N1), peerOf(N2)])();
      return v && v.every((n) => n.reach === "hole-punched") && v;
    }, 60_000, "the public gateway's relayed connections to both NATed nodes upgraded by DCUtR");
    const c = await complete(GD, LONG);
    expect(c.text).toBe(want);
    const h = hops(await swarm(GD));
    perToken.set("C", { ms: c.ms / LONG, relayedHops: h.relayed });
    figures.push(`NAT C (gateway at a public address): ${LONG} tokens exact, ${(c.ms / LONG).toFixed(2)} ms/token; ${h.text}; round trips ${ns.map((n) => `${name(n.peer)} ${n.rttMs} ms`).join(", ")}`);
    // A, B and C: the same nodes, route and tokens; they differ in how many hops of each step went through the relay
    const all = [...perToken.values()];
    const relayedHopSteps = all.reduce((x, p) => x + p.relayedHops * LONG, 0), hopSteps = all.length * 3 * LONG;
    const B = perToken.get("B")!, C = perToken.get("C")!;
    figures.push(`NAT: hop-steps through a relay in A-C: ${relayedHopSteps}/${hopSteps} (${((100 * relayedHopSteps) / hopSteps).toFixed(0)}%); every step crossed at least one relayed hop (node1 -> node2). ` +
      `Extra latency per relayed hop, B (3 relayed hops) beside C (${C.relayedHops}): (${B.ms.toFixed(2)} - ${C.ms.toFixed(2)}) / ${3 - C.relayedHops} = ${((B.ms - C.ms) / (3 - C.relayedHops)).toFixed(2)} ms per token`);
  }, 180_000);

  it("D: a relay cuts the circuit to a NATed node mid-answer; the gateway reaches it again and replays: exact", async () => {
    // a relay whose circuits last 8 s; a node and a gateway, each behind another NAT, reserve on it alone
    // (--relay), so that every connection between them is one of its circuits; the other nodes go
    const hR2 = lab.addPublic("relay2", 5), h3 = lab.addNatted("node3");
    const R2 = await start(hR2, ["bootstrap", "--listen", "/ip4/0.0.0.0/tcp/4002", "--no-mdns", "--bootstrap", addrOn(R, R.host.ip)], "bootstrap-ready", { LAYERSWARM_RELAY_MAX_SECONDS: "8" });
    const relay2 = addrOn(R2, hR2.ip);
    for (const n of [N1, N2]) n.proc.kill("SIGKILL");
    const G3 = await gateway(lab.addNatted("gwnat2"), ["--relay", relay2]);
    const n3 = (N3 = await start(h3, ["node", "--model", model, "--layers", "0:4", "--bootstrap", relay2, "--relay", relay2, "--max-memory", "600MB", "--no-mdns"], "node-ready"));
    for (const p of [n3, G3]) {
      const r = await reachability(p);
      expect(r.relayed.length).toBeGreaterThan(0);
      expect(r.relayed.every((a) => a.includes(`/p2p/${peerOf(R2)}/p2p-circuit`)), `reserved on the 8-second relay: ${r.relayed}`).toBe(true);
    }
    await until(servingAll(G3, [peerOf(n3)]), 90_000, "the NATed gateway finds the node behind the 8-second relay");
    const via = (await swarm(G3)).find((n) => n.peer === peerOf(n3))?.reach;
    const before = await reroutes(G3);
    // answers back to back for 20 s, whatever this machine's speed: circuits of 8 s are cut while they carry steps
    const t0 = performance.now();
    let answers = 0;
    while (performance.now() - t0 < 20_000) {
      const d = await complete(G3, LONGER);
      expect(d.text, `answer ${answers + 1}`).toBe(wantLonger);
      answers++;
    }
    const d = { ms: performance.now() - t0 };
    const cuts = (await reroutes(G3)) - before;
    figures.push(`NAT D: a relay cutting each circuit after 8 s, between a gateway and a node behind two NATs: ${answers} answers of ${LONGER} tokens back to back, all exact, in ${(d.ms / 1000).toFixed(1)} s with ${cuts} replay(s)`);
    expect(via, "the gateway reaches the node through the 8-second relay").toBe("relayed");
    expect(cuts, "the relay cut the circuit during the answer and the session replayed").toBeGreaterThanOrEqual(1);
    for (const p of [R, R2, G, G2, G3, N3]) expect(p.proc.exitCode, p.stderr()).toBeNull();
  }, 180_000);

  it("E: bandwidth limited with tbf: routes follow the throughput the gateway measures", async () => {
    N3?.proc.kill("SIGKILL"); // E chooses between two other nodes
    // two public nodes holding every layer; one link limited to 4 Mbit/s each way; a fresh gateway
    // (it probes each node when it appears) takes the other; then the limit moves and another fresh
    // gateway takes the first. A long prompt, so that each row's cost on the link matters.
    const longPrompt = Array.from({ length: 12 }, () => PROMPT).join(". ");
    const { model: m, stack } = Model.local(model);
    const ids = m.tokenizer.encode(longPrompt), out: number[] = [];
    for await (const t of generate(m, stack, ids, { maxTokens: 20 })) out.push(t.id);
    m.kernels.close();
    const wantLong = decodeAll(m.tokenizer, out, ids.at(-1));
    const hA = lab.addPublic("nodea", 6), hB = lab.addPublic("nodeb", 7);
    lab.limitRate(hB, "4mbit");
    const boot = addrOn(R, R.host.ip);
    const [NA, NB] = await Promise.all([hA, hB].map((h) => start(h, ["node", "--model", model, "--layers", "0:4", "--bootstrap", boot, "--max-memory", "600MB", "--no-mdns"], "node-ready")));
    const routeOf = async (gw: Proc, hostIp: string) => {
      const seen = new Set<string>();
      let done = false;
      const answer = (async () => {
        const r = await http(gw, "/v1/completions", { prompt: longPrompt, max_tokens: 20, temperature: 0 });
        done = true;
        if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.text}`);
        return (JSON.parse(r.text) as { choices: { text: string }[] }).choices[0].text;
      })();
      while (!done) {
        const s = JSON.parse((await http(gw, "/v1/swarm")).text) as { sessions: { positions: number; route: { peer: string }[] }[] };
        for (const x of s.sessions) if (x.positions >= ids.length) for (const h of x.route) seen.add(h.peer);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await answer, `the answer through the gateway at ${hostIp}`).toBe(wantLong);
      return [...seen].map((p) => (p === peerOf(NA) ? "nodeA" : p === peerOf(NB) ? "nodeB" : p.slice(-6)));
    };
    const fresh = async (n: number) => {
      const gw = await gateway(lab.addPublic(`gwe${n}`, 7 + n));
      await until(servingAll(gw, [peerOf(NA), peerOf(NB)]), 90_000, "the fresh gateway finds both public nodes");
      await new Promise((r) => setTimeout(r, 5000)); // its probes of both
      return gw;
    };
    const G4 = await fresh(1);
    const first = await routeOf(G4, "10.77.0.8");
    lab.limitRate(hB, null);
    lab.limitRate(hA, "4mbit");
    const G5 = await fresh(2);
    const second = await routeOf(G5, "10.77.0.9");
    figures.push(`NAT E (tbf 4 Mbit/s on one node's link, a ${ids.length}-token prompt): limited B -> the route took ${first.join(", ")}; limit moved to A -> ${second.join(", ")}`);
    expect(first).toEqual(["nodeA"]);
    expect(second).toEqual(["nodeB"]);
  }, 240_000);
});

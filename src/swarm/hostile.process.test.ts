// The hostile-peer scenario with real processes (issue 7: "each feature keeps
// one scenario with real processes"): a gateway in this process and three
// node child processes on loopback (TCP, Noise, Yamux), attacked by peers with
// their own identities over real libp2p connections while a user generates.
// Raw-byte attackers are js-libp2p nodes of their own (createLibp2p, the same
// modules as libp2p.ts) writing to streams directly; protocol-speaking
// attackers use Libp2pTransport. Every user completion must be exactly the
// golden tokens, no attack may cause a reroute, and every process must stay
// alive and serving. The in-memory suite (hostile.test.ts) covers the attacks
// in depth; this file proves the real transport holds the same line.

import "./polyfill.js";
import * as fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLibp2p, Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { LengthPrefixedDecoder } from "@libp2p/utils";
import { multiaddr } from "@multiformats/multiaddr";
import type { Stream } from "@libp2p/interface";
import * as varint from "uint8-varint";
import { LayerswarmError } from "../errors.js";
import { generate } from "../model/model.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { TestSwarm, rangesOf, startSwarm } from "../testing/swarm.js";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import {
  DType, FrameType, MAX_EXT_BYTES, PROTOCOLS, StepFrame, decodeError, encodeError, encodeResult, encodeStep, frameType, maxFrameBytes,
} from "./protocol/index.js";
import { request } from "./rpc.js";
import { Channel } from "./transport.js";

const WANT = goldenIds("4"); // BOS + 128 tokens
const DIM = 64;
const MiB = 2 ** 20;

let sw: TestSwarm;
let addrs: string[][] = []; // each node's multiaddrs
const table: [string, string][] = [];
const attackers: { stop(): unknown }[] = [];
const note = (attack: string, what: string) => table.push([attack, what]);

// ------------------------------------------------------------ the user

async function complete(): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(sw.model, sw.gw, [1], { maxTokens: WANT.length - 1 })) out.push(t.id);
  return [1, ...out];
}

// A user generating over and over while an attack runs; every completion is kept.
const loops = new Set<() => void>();
function userLoop() {
  let stop = false, error: unknown;
  const runs: number[][] = [];
  const halt = () => void (stop = true);
  loops.add(halt);
  const done = (async () => {
    while (!stop) runs.push(await complete());
  })().catch((e) => void (error = e));
  return {
    runs,
    async end(): Promise<number[][]> {
      stop = true;
      loops.delete(halt);
      await done;
      if (error) throw error;
      return runs;
    },
  };
}

async function expectUserServed(u: ReturnType<typeof userLoop>, minRuns = 1): Promise<number> {
  // let at least one whole completion run under the attack's aftermath
  const before = u.runs.length;
  while (u.runs.length < before + 1 && loops.size > 0) await sleep(20);
  const runs = await u.end();
  expect(runs.length).toBeGreaterThanOrEqual(minRuns);
  for (const r of runs) expect(r).toEqual(WANT);
  return runs.length;
}

// ------------------------------------------------------------ processes

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function procMem(pid: number): { rss: number; hwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)![1]) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

// user + system CPU time of a process, in ms (clock ticks of 10 ms)
function procCpuMs(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
  return (Number(f[11]) + Number(f[12])) * 10;
}

function alive(i: number): boolean {
  const p = sw.nodes[i];
  if (p.exitCode !== null || p.signalCode !== null) return false;
  try {
    process.kill(p.pid!, 0);
    return true;
  } catch {
    return false;
  }
}

// The node's own record, asked for by an observer peer: it answers, or the test fails.
let observer: Libp2pTransport;
async function nodeStats(i: number) {
  const r = await request(observer, sw.peers[i], addrs[i], { type: "info" }, 5000);
  if (r.type !== "record") throw new Error(`node ${i} answered info with ${r.type}`);
  return r.record.stats;
}

const why = (e: unknown) => String((e as Error | undefined)?.message ?? (e as Event | undefined)?.type ?? e).slice(0, 90);
const mb = (b: number) => `${(b / MiB).toFixed(1)} MiB`;

// ------------------------------------------------------------ attackers

// A js-libp2p node of the attacker's own (a fresh identity), for raw bytes on streams.
async function rawAttacker(): Promise<Libp2p> {
  const node = await createLibp2p({
    privateKey: await generateKeyPair("Ed25519"),
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: 64 },
  });
  attackers.push(node);
  return node;
}

const withPeer = (a: string, peer: string) => multiaddr(a.includes("/p2p/") ? a : `${a}/p2p/${peer}`);
const nodeAddr = (i: number) => withPeer(addrs[i][0], sw.peers[i]);
const gwAddr = () => withPeer(sw.gw.addrs()[0], sw.gw.peerId);

const prefixed = (msg: Uint8Array): Uint8Array => {
  const b = new Uint8Array(varint.encodingLength(msg.length) + msg.length);
  varint.encodeUint8Array(msg.length, b);
  b.set(msg, b.length - msg.length);
  return b;
};

// Resolves when the stream is closed, reset or aborted (by the other side: we never close it).
function closedOf(s: Stream): Promise<string> {
  return new Promise((res) => {
    if (s.status !== "open") return res(s.status);
    s.addEventListener("close", (e) => res(`${s.status}${(e as { error?: Error }).error ? `: ${(e as { error?: Error }).error!.message}` : ""}`), { once: true });
  });
}

// An attacker speaking the protocol through the real transport, collecting the ERROR frames sent back to it.
async function protoAttacker() {
  const identity = await Identity.generate();
  const t = await Libp2pTransport.create({ identity });
  const errors: string[] = [];
  await t.handle(PROTOCOLS.steps, (ch) => void (async () => {
    try {
      for await (const m of ch.messages()) if (frameType(m) === FrameType.ERROR) errors.push(decodeError(m).code);
    } catch { /* reset */ }
  })(), { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
  attackers.push(t);
  const chans = new Map<string, Channel>();
  return {
    t, errors,
    async send(peer: string, peerAddrs: string[], msg: Uint8Array) {
      let ch = chans.get(peer);
      if (!ch || ch.closed) {
        ch = await t.dial(peer, peerAddrs, PROTOCOLS.steps[0], { maxMessageBytes: 1 << 20 });
        chans.set(peer, ch);
        const c = ch;
        void (async () => {
          try {
            for await (const m of c.messages()) if (frameType(m) === FrameType.ERROR) errors.push(decodeError(m).code);
          } catch { /* reset */ }
        })();
      }
      await ch.send(msg);
    },
  };
}

const randomSid = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
const noise64 = (T = 1) => new Float32Array(T * DIM).map(() => Math.random() * 4 - 2);
const step = (session: string, o: Partial<StepFrame> = {}): StepFrame => ({
  req: 1, session, pos: 0, T: 1, dim: DIM, dtype: DType.F32, flags: 0, hop: 0, ext: [], hidden: noise64(o.T ?? 1), ...o,
});

// What a leak would give an attacker: the live session's wire id and the steps in flight (read here, in the gateway's process).
interface PendingView { sid: string; pos: number; T: number }
const pending = () => (sw.gw.pipe as unknown as { pending: Map<number, PendingView> }).pending;
async function liveSession(): Promise<string> {
  for (;;) {
    const s = [...sw.gw.sessions.all.values()][0];
    if (s && s.route.length === 3) return s.wire.sid;
    await sleep(2);
  }
}

// ------------------------------------------------------------ the scenario

describe("hostile peers against a real swarm (gateway here, 3 node processes, TCP + Noise + Yamux)", () => {
  beforeAll(async () => {
    sw = await startSwarm(STORIES_GGUF, rangesOf([2, 2, 1]));
    addrs = sw.peers.map((p) => sw.gw.dir.get(p)!.record.addrs);
    observer = await Libp2pTransport.create({ identity: await Identity.generate() });
    attackers.push(observer);
    expect(await complete()).toEqual(WANT); // connections between the processes are up before anyone attacks
  });

  afterAll(async () => {
    console.log("\nattack                                   | what happened\n" + "-".repeat(41) + "+" + "-".repeat(80));
    for (const [a, w] of table) console.log(`${a.padEnd(41)}| ${w}`);
    for (const halt of loops) halt();
    await Promise.allSettled(attackers.map((a) => a.stop()));
    await sw?.stop();
  });

  it("(1) a frame announcing 256 MiB, then a trickle: the node resets the stream without buffering it", async () => {
    const u = userLoop();
    const pid = sw.nodes[0].pid!;
    await sleep(300);
    const m0 = procMem(pid);
    const a = await rawAttacker();
    const s = await a.dialProtocol(nodeAddr(0), PROTOCOLS.steps[0]);
    const closed = closedOf(s);
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    const t0 = performance.now();
    const header = new Uint8Array(varint.encodingLength(256 * MiB));
    varint.encodeUint8Array(256 * MiB, header);
    s.send(header);
    // the trickle: 1 KiB every 10 ms for up to 3 s, or until the node resets the stream
    let sent = 0;
    const chunk = new Uint8Array(1024).fill(0x10);
    while (!isClosed && performance.now() - t0 < 3000) {
      try {
        if (!s.send(chunk)) await s.onDrain({ signal: AbortSignal.timeout(500) }).catch(() => {});
        sent += chunk.length;
      } catch {
        break; // not writable any more: the stream was reset
      }
      await sleep(10);
    }
    const how = await Promise.race([closed, sleep(2000).then(() => "still open")]);
    const resetMs = performance.now() - t0;
    await sleep(500);
    const m1 = procMem(pid);
    // the same identity is banned: once its old connection is gone it cannot open a stream again; a fresh identity can
    while (a.getConnections().length > 0 && performance.now() - t0 < 10_000) await sleep(20);
    const again = await a.dialProtocol(nodeAddr(0), PROTOCOLS.steps[0]).then(() => "accepted", (e) => `refused (${why(e)})`);
    const fresh = await (await rawAttacker()).dialProtocol(nodeAddr(0), PROTOCOLS.steps[0]).then(() => "accepted", (e) => `refused (${why(e)})`);
    const served = await expectUserServed(u);
    console.log(`(1) node 0 VmRSS ${mb(m0.rss)} -> ${mb(m1.rss)} (${mb(m1.rss - m0.rss)}), VmHWM ${mb(m0.hwm)} -> ${mb(m1.hwm)}; stream ${how} after ${resetMs.toFixed(0)} ms, ${sent} bytes trickled`);
    note("(1) 256 MiB length prefix + trickle", `stream ${how.split(":")[0]} after ${resetMs.toFixed(0)} ms (${sent} B of trickle sent); VmRSS ${mb(m0.rss)} -> ${mb(m1.rss)}, VmHWM ${mb(m0.hwm)} -> ${mb(m1.hwm)}; re-dial ${again}, a fresh identity ${fresh}; user: ${served} runs golden`);
    expect(how).not.toBe("still open");
    expect(resetMs).toBeLessThan(4000);
    expect(m1.rss - m0.rss).toBeLessThan(64 * MiB);
    expect(m1.hwm - m0.hwm).toBeLessThan(64 * MiB);
    expect(again).toMatch(/refused/);
    expect(fresh).toBe("accepted");
    expect(alive(0)).toBe(true);
  });

  it("(2) a maximal frame in 1-3 byte writes: reassembled at linear cost, refused, and the node keeps serving", async () => {
    const u = userLoop();
    const pid = sw.nodes[1].pid!;
    // the largest frame node 1 takes: 512 rows and an unknown extension filling the rest (skipped by the decoder)
    const limit = maxFrameBytes({ dim: DIM, maxRows: 512 });
    const base = encodeStep(step(randomSid(), { req: 77, T: 512 }));
    const pad = Math.min(MAX_EXT_BYTES - 5, limit - base.length - 5);
    const frame = encodeStep(step(randomSid(), { req: 77, T: 512, ext: [{ kind: 200, data: new Uint8Array(pad).fill(7) }] }));
    expect(frame.length).toBeLessThanOrEqual(limit);
    const bytes = prefixed(frame);
    // a user-only window first, of the same length, for comparison
    const w0 = performance.now(), c0 = procCpuMs(pid);
    await sleep(2000);
    const userOnlyCpu = procCpuMs(pid) - c0, userOnlyWall = performance.now() - w0;

    const a = await rawAttacker();
    const errors: string[] = [];
    await a.handle(PROTOCOLS.steps[0], (st) => {
      const dec = new LengthPrefixedDecoder({ maxDataLength: 1 << 20 });
      st.addEventListener("message", (e) => {
        for (const m of dec.decode((e as unknown as { data: Uint8Array }).data)) errors.push(decodeError(m.subarray()).code);
      });
    });
    const before = await nodeStats(1);
    const s = await a.dialProtocol(nodeAddr(1), PROTOCOLS.steps[0]);
    // one frame in 1-3 byte writes; resolves when the node has answered it (refused: no grant)
    const tiny = async (msg: Uint8Array) => {
      errors.length = 0;
      const c = procCpuMs(pid), t = performance.now();
      let off = 0, writes = 0;
      while (off < msg.length) {
        const n = 1 + (writes % 3);
        if (!s.send(msg.subarray(off, off + n))) await s.onDrain();
        off += n;
        writes++;
        if (writes % 2000 === 0) await new Promise((r) => setImmediate(r)); // let the sockets move
      }
      const sendMs = performance.now() - t;
      while (errors.length === 0 && performance.now() - t < 30_000) await sleep(5);
      const ms = performance.now() - t, cpu = procCpuMs(pid) - c;
      const netUs = ((cpu - (userOnlyCpu * ms) / userOnlyWall) * 1000) / writes; // node CPU per write, the user's share taken out
      return { writes, sendMs, ms, cpu, netUs, answered: errors.length > 0 };
    };
    const third = await tiny(prefixed(encodeStep(step(randomSid(), { req: 76, T: 256 })))); // a third of the bytes, for the growth
    const full = await tiny(bytes);
    const { writes, sendMs, ms: answerMs, cpu: attackCpu } = full;
    // the same frame in one write, for comparison
    errors.length = 0;
    const t1 = performance.now();
    s.send(prefixed(encodeStep(step(randomSid(), { req: 78, T: 512, ext: [{ kind: 200, data: new Uint8Array(pad).fill(7) }] }))));
    while (errors.length === 0 && performance.now() - t1 < 10_000) await sleep(1);
    const oneWriteMs = performance.now() - t1;
    const after = await nodeStats(1);
    const served = await expectUserServed(u);
    const line = `${writes} writes of 1-3 B (${bytes.length} B frame) sent in ${sendMs.toFixed(0)} ms, answered after ${answerMs.toFixed(0)} ms; ` +
      `node 1 CPU ${attackCpu} ms during it vs ${userOnlyCpu} ms in a ${userOnlyWall.toFixed(0)} ms user-only window, ~${full.netUs.toFixed(1)} us/write ` +
      `(a 3x smaller frame: ${third.writes} writes, ${third.ms.toFixed(0)} ms, ~${third.netUs.toFixed(1)} us/write); one-write answer ${oneWriteMs.toFixed(1)} ms`;
    console.log(`(2) ${line}`);
    note("(2) max frame in 1-3 byte writes", `${line}; refused ${after.refused - before.refused}x (${[...new Set(errors)].join(",") || "no answer"}); user: ${served} runs golden`);
    expect(third.answered && full.answered).toBe(true);
    expect(after.refused - before.refused).toBe(3); // all three frames reassembled, decoded and refused (no grant)
    expect(after.badFrames).toBe(before.badFrames); // reassembled whole: nothing looked malformed
    expect(alive(1)).toBe(true);
  });

  it("(3) injected RESULT/ERROR frames to the gateway, grant-less STEP frames and `drop` requests to nodes: no effect", async () => {
    const a = await protoAttacker();
    const recoveries = sw.gw.stats.recoveries;
    const stray0 = sw.gw.pipe.stats.strayFrames;
    const refused0 = await Promise.all([0, 1, 2].map((i) => nodeStats(i).then((s) => s.refused)));
    const u = userLoop();
    // results and errors for the steps in flight, with the session id an attacker would need a leak for, and with random ids
    let injected = 0;
    const tEnd = performance.now() + 2000;
    while (performance.now() < tEnd) {
      await liveSession();
      for (const [req, p] of [...pending()]) {
        const hidden = noise64(p.T);
        for (const session of [p.sid, randomSid()]) {
          await a.send(sw.gw.peerId, sw.gw.addrs(), encodeResult({ req, session, pos: p.pos, T: p.T, dim: DIM, dtype: DType.F32, flags: 0, ext: [], hidden }));
          await a.send(sw.gw.peerId, sw.gw.addrs(), encodeError({ req, session, code: "UNKNOWN_SESSION", message: "injected" }));
          injected += 2;
        }
      }
      await sleep(1);
    }
    // STEP frames without a grant: the live session at position 0 (would overwrite its cache), as the first and as the middle stage, and random sessions
    const sid = await liveSession();
    let steps = 0;
    for (const [i, hop] of [[0, 0], [1, 1], [2, 2]] as const) {
      for (const session of [sid, sid, randomSid(), randomSid()]) {
        await a.send(sw.peers[i], addrs[i], encodeStep(step(session, { req: 1000 + steps, hop, pos: 0 })));
        steps++;
      }
    }
    // drop: a random id (what an attacker can do on real TCP) and the leaked live one
    const drops: string[] = [];
    for (let i = 0; i < 3; i++)
      for (const session of [randomSid(), await liveSession()])
        drops.push(await request(a.t, sw.peers[i], addrs[i], { type: "drop", session }, 5000).then((r) => r.type, (e) => (e as LayerswarmError).code));
    await sleep(300);
    const served = await expectUserServed(u);
    const refused1 = await Promise.all([0, 1, 2].map((i) => nodeStats(i).then((s) => s.refused)));
    const refusedNow = refused1.reduce((x, y) => x + y, 0) - refused0.reduce((x, y) => x + y, 0);
    const stray = sw.gw.pipe.stats.strayFrames - stray0;
    const codes = [...new Set(a.errors)].sort().join(",");
    console.log(`(3) ${injected} injected RESULT/ERROR frames, ${stray} counted stray; ${steps} STEP frames, ${refusedNow} refused (${codes}); drops: ${drops.join(",")}`);
    note("(3a) RESULT+ERROR to gateway, stranger", `${injected} frames for in-flight reqs (leaked and random sids): ${stray} stray, reroutes +${sw.gw.stats.recoveries - recoveries}`);
    note("(3b) STEP without grant to nodes", `${steps} frames (leaked sid at pos 0, random sids): ${refusedNow} refused, answered ${a.errors.length}x ${codes}`);
    note("(3c) `drop` random / leaked sid", `${drops.join(", ")}; user: ${served} runs golden`);
    expect(injected).toBeGreaterThan(20);
    expect(stray).toBeGreaterThanOrEqual(injected);
    expect(sw.gw.stats.recoveries).toBe(recoveries); // no injected error, no dropped session made the gateway reroute
    expect(refusedNow).toBe(steps);
    expect(drops).toEqual(Array(6).fill("UNKNOWN_SESSION"));
    expect(sw.gw.serving()).toHaveLength(3); // nobody was blamed
  });

  it("(4) 30 identities from 127.0.0.1, each connected to every process with idle and half-sent streams: the swarm keeps serving", async () => {
    const u = userLoop();
    const targets = [gwAddr(), nodeAddr(0), nodeAddr(1), nodeAddr(2)];
    const crowd = await Promise.all(Array.from({ length: 30 }, () => rawAttacker()));
    const newcomer = await Libp2pTransport.create({ identity: await Identity.generate() }); // honest, same address, not yet connected
    attackers.push(newcomer);
    const connected = crowd.map(() => new Set<number>());
    const tryDial = (k: number, ti: number) => crowd[k].dial(targets[ti]).then(() => void connected[k].add(ti), () => {});
    // all at once: libp2p takes 5 new connections per second per address (inboundConnectionThreshold) and resets the rest
    await Promise.all(crowd.flatMap((_, k) => targets.map((_t, ti) => tryDial(k, ti))));
    const burst = connected.reduce((n, c) => n + c.size, 0);
    const duringBurst = await request(newcomer, sw.peers[2], addrs[2], { type: "info" }, 3000).then(() => "answered", (e) => `refused (${why(e)})`);
    // then paced under that limit until every identity holds a connection to every process
    const t0 = performance.now();
    while (connected.some((c) => c.size < targets.length) && performance.now() - t0 < 20_000) {
      for (let k = 0; k < crowd.length; k++) {
        if (connected[k].size === targets.length) continue;
        await Promise.all(targets.map((_t, ti) => (connected[k].has(ti) ? undefined : tryDial(k, ti))));
        await sleep(250);
      }
    }
    const pacedMs = performance.now() - t0;
    const conns = connected.reduce((n, c) => n + c.size, 0);
    // a few streams on each connection, held open: two of each protocol, one of each with half a message
    let streams = 0, refusedStreams = 0;
    await Promise.all(crowd.map(async (a) => {
      for (const ma of targets) {
        const opened: Stream[] = [];
        for (const proto of [PROTOCOLS.steps[0], PROTOCOLS.steps[0], PROTOCOLS.control[0], PROTOCOLS.control[0]]) {
          try {
            opened.push(await a.dialProtocol(ma, proto));
            streams++;
          } catch {
            refusedStreams++;
          }
        }
        // a length that is never delivered in full
        opened[0]?.send(prefixed(new Uint8Array(4000)).subarray(0, 100));
        opened[2]?.send(prefixed(new Uint8Array(4000)).subarray(0, 100));
      }
    }));
    // the crowd stays connected while the user generates
    await sleep(1500);
    const served = await expectUserServed(u);
    await Promise.all([0, 1, 2].map((i) => nodeStats(i)));
    const after = await request(newcomer, sw.peers[2], addrs[2], { type: "info" }, 3000).then(() => "answered", (e) => `refused (${why(e)})`);
    const line = `burst: ${burst}/120 connections accepted, an honest newcomer's info ${duringBurst}; paced: ${conns}/120 in ${(pacedMs / 1000).toFixed(1)} s; ` +
      `${streams} streams held open (${refusedStreams} refused), half-sent messages`;
    console.log(`(4) ${line}; newcomer afterwards: ${after}`);
    note("(4) 30 identities from 127.0.0.1", `${line}; 3/3 nodes answer info; newcomer afterwards ${after}; user: ${served} runs golden`);
    expect(conns).toBe(120);
    expect(streams).toBe(480);
    expect(after).toBe("answered");
    expect(sw.gw.serving()).toHaveLength(3);
    await Promise.all(crowd.map((a) => a.stop()));
  });

  it("afterwards: every process alive and serving, memory bounded, the user's tokens golden", async () => {
    for (let i = 0; i < 3; i++) expect(alive(i)).toBe(true);
    expect(sw.gw.serving()).toHaveLength(3);
    expect(await complete()).toEqual(WANT);
    const mem = [0, 1, 2].map((i) => procMem(sw.nodes[i].pid!));
    const rss = mem.map((m) => mb(m.rss)).join(", ");
    const stats = await Promise.all([0, 1, 2].map((i) => nodeStats(i)));
    note("afterwards", `3/3 nodes alive and answering; VmRSS ${rss}; badFrames ${stats.map((s) => s.badFrames).join("/")}, refused ${stats.map((s) => s.refused).join("/")}; gateway reroutes ${sw.gw.stats.recoveries}`);
    for (const m of mem) expect(m.rss).toBeLessThan(1024 * MiB);
  });

  // BUG (PeerGate.allowIp, src/swarm/policy.ts): the address ban that follows
  // repeated bans ("an address whose peers are banned again and again is kept
  // out too") is checked before the loopback exemption, so 8 throwaway
  // identities banned on 127.0.0.1 make a node refuse every new loopback
  // connection for banMs (10 minutes): in a local swarm that is its own
  // gateway and the other nodes as soon as a link has to be made again. The
  // swarm goes on over the links it already has (checked below).
  it("(5) 8 identities from 127.0.0.1 banned at node 2: an honest peer on the same address is still let in", async () => {
    for (let i = 0; i < 8; i++) {
      const a = await rawAttacker();
      const s = await a.dialProtocol(nodeAddr(2), PROTOCOLS.steps[0]);
      s.send(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x01])); // a 256 MiB length: banned
      await closedOf(s);
      await a.stop();
      await sleep(300); // under libp2p's 5 new connections per second per address
    }
    await sleep(1000);
    const honest = await Libp2pTransport.create({ identity: await Identity.generate() });
    attackers.push(honest);
    const info = await request(honest, sw.peers[2], addrs[2], { type: "info" }, 3000).then(() => "answered", (e) => `refused (${why(e)})`);
    note("(5) 8 banned identities on 127.0.0.1", `an honest newcomer from 127.0.0.1 asking node 2 for info: ${info} [known bug: loopback address ban]`);
    expect(info).toBe("answered");
  });

  it("(5) ...and the swarm still serves over the links it has", async () => {
    for (let i = 0; i < 3; i++) expect(alive(i)).toBe(true);
    expect(await complete()).toEqual(WANT);
    expect(sw.gw.serving()).toHaveLength(3);
  });
});

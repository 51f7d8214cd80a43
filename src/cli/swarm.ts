// The swarm commands: node, gateway, bootstrap (a peer that only serves the
// DHT), run (a local swarm serving the API) and generate --nodes N.

import { ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { LayerswarmError } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import { Progress, isRemote, openRemoteSlice, resolveUrl, tensorsFor } from "../format/remote.js";
import { createKernels } from "../kernels/index.js";
import { LayerRange, configFromGGUF, parseRange } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { layerBytes } from "../model/weights.js";
import { ApiServer } from "../api/server.js";
import { SwarmMonitor } from "../api/monitor.js";
import { Gateway } from "../swarm/gateway/index.js";
import { Libp2pTransport } from "../swarm/libp2p.js";
import type { RelayLimits } from "../swarm/nat.js";
import { FAULT_ENV, FaultInjector } from "../swarm/node/fault.js";
import { SwarmNode } from "../swarm/node/index.js";
import { withLinkDelay } from "../swarm/delay.js";
import { allocateLayers } from "../swarm/placement.js";
import { PeerGate, PolicyKind, policyNotice, readAllowList, thisMachine } from "../swarm/policy.js";
import { loadOrCreateIdentity } from "../swarm/identity.js";
import { parseDType } from "../swarm/protocol/index.js";
import { parsePackMode } from "../swarm/wire.js";
import { parseVerifyMode } from "../swarm/gateway/verify.js";
import { logger } from "../swarm/log.js";
import { multiaddr } from "@multiformats/multiaddr";
import { TextDecoderStream } from "../tokenizer/index.js";
import { ChatTemplate } from "../tokenizer/chat.js";
import { WEB_DIR, stateDir } from "./paths.js";
import { controlPath, serveControl } from "./control.js";
import { FLAG_VARIABLES } from "./config.js";
import { checkWeightTypes, gatewayContent, modelHeader, nodeManifest, parseModelId, peerManifests, resolveModel } from "./model.js";
import type { GenerateFlags } from "./commands.js";

const log = logger("cli");

// Download progress on stderr: a live line on a terminal, a few log lines otherwise.
export function progress(label: string): Progress {
  let lastPct = -1;
  return ({ what, bytes, total, done }) => {
    const pct = total > 0 ? Math.floor((bytes * 100) / total) : 0;
    const mib = (n: number) => (n / 2 ** 20).toFixed(1);
    if (process.stderr.isTTY) {
      process.stderr.write(`\r${label}: ${what} ${mib(bytes)}/${mib(total)} MiB (${pct}%)${done ? "\n" : ""}`);
    } else if (done || pct >= lastPct + 25) {
      lastPct = pct;
      log("info", "download", { label, file: what, bytes, total, done });
    }
  };
}

export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i.exec(s.trim());
  if (!m) throw new LayerswarmError("BAD_ARGUMENT", `"${s}" is not a size (e.g. 6GB, 512MiB)`);
  const unit = (m[2] ?? "b").toLowerCase()[0];
  const mul = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[unit] ?? 1;
  return Math.floor(Number(m[1]) * mul);
}

export interface NodeFlags {
  model: string;
  modelId?: string; // --model-id: the model's id, from someone trusted
  join?: string[];
  bootstrap?: string[];
  relay?: string[];
  mdns?: boolean;
  layers?: string;
  listen?: string[];
  maxMemory?: string;
  threads: number;
  key?: string;
  swarmKey?: string;
  allow?: string;
  maxSessions?: number;
  name?: string;
  rebalance?: number; // seconds between the node's own checks whether to move (0: never)
  drainTimeout?: number; // ms a move waits for live sessions before handing them over
  control?: boolean; // false: no local control socket (the nodes of `run`, which run owns)
  wirePack?: string; // auto | always | never
}

// A gateway address for --join: a multiaddr ending in /p2p/<peer id>.
export function parseJoin(addr: string): { peer: string; addrs: string[] } {
  let peer: string | undefined;
  try {
    peer = multiaddr(addr).getComponents().find((c) => c.name === "p2p")?.value;
  } catch (e) {
    throw new LayerswarmError("BAD_ARGUMENT", `--join ${addr}: not a multiaddr (${(e as Error).message})`);
  }
  if (!peer) throw new LayerswarmError("BAD_ARGUMENT", `--join ${addr}: the address must end in /p2p/<peer id> (the gateway prints it at start)`);
  return { peer, addrs: [addr] };
}

// A peer to bootstrap from: a multiaddr, with or without /p2p/<peer id>, or host:port.
export function parseBootstrap(addr: string): string {
  const bad = (why: string) => new LayerswarmError("BAD_ARGUMENT", `--bootstrap ${addr}: ${why} (give a multiaddr such as /ip4/192.168.1.5/tcp/4001[/p2p/<peer id>], or host:port)`);
  if (addr.startsWith("/")) {
    try {
      const ma = multiaddr(addr);
      if (!ma.getComponents().some((c) => c.name === "tcp")) throw bad("no /tcp/ port");
      return ma.toString();
    } catch (e) {
      throw e instanceof LayerswarmError ? e : bad(`not a multiaddr (${(e as Error).message})`);
    }
  }
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(addr) ?? /^([^:/\s]+):(\d+)$/.exec(addr);
  if (!m) throw bad("not a multiaddr or host:port");
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) throw bad(`port ${m[2]} is not between 1 and 65535`);
  const host = m[1] === "localhost" ? "127.0.0.1" : m[1];
  const proto = net.isIPv4(host) ? "ip4" : net.isIPv6(host) ? "ip6" : "dns";
  return `/${proto}/${host}/tcp/${port}`;
}

// Where swarm processes listen unless told (--listen): node, gateway and
// bootstrap on every interface, so that other machines (a LAN found by mDNS, a
// --bootstrap address) can reach them; the local swarms of run and generate
// --nodes on loopback only. The HTTP API has its own --host (127.0.0.1).
export const LISTEN_ALL = ["/ip4/0.0.0.0/tcp/0"];
export const LISTEN_LOCAL = ["/ip4/127.0.0.1/tcp/0"];

// mDNS on the LAN unless turned off; LAYERSWARM_MDNS_SERVICE names the service
// (swarms under different names on one LAN do not see each other).
function mdnsOption(on: boolean): boolean | string {
  return on ? process.env.LAYERSWARM_MDNS_SERVICE || true : false;
}

// NAT traversal (relay for others, a relay slot when unreachable, DCUtR) for
// peers that listen beyond loopback. The relay limits per circuit can be set
// by LAYERSWARM_RELAY_MAX_BYTES (e.g. 512MiB) and LAYERSWARM_RELAY_MAX_SECONDS
// (defaults in nat.ts: 1 GiB, 1 hour).
function natOption(listen: string[], relays: string[] = []): false | Partial<RelayLimits> & { relays?: string[] } {
  if (listen.every((a) => /^\/ip4\/127\.|^\/ip6\/::1\//.test(a))) return false;
  const o: Partial<RelayLimits> & { relays?: string[] } = { relays: relays.map(parseRelay) };
  const bytes = process.env.LAYERSWARM_RELAY_MAX_BYTES, secs = process.env.LAYERSWARM_RELAY_MAX_SECONDS;
  if (bytes) o.dataBytes = parseBytes(bytes);
  if (secs) {
    if (!(Number(secs) > 0)) throw new LayerswarmError("BAD_ARGUMENT", `LAYERSWARM_RELAY_MAX_SECONDS=${secs} is not a positive number`);
    o.durationMs = Number(secs) * 1000;
  }
  return o;
}

// A relay for --relay: a multiaddr ending in /p2p/<peer id> (a reservation names the relay).
export function parseRelay(addr: string): string {
  try {
    const ma = multiaddr(addr);
    if (ma.getComponents().at(-1)?.name === "p2p" && !addr.includes("/p2p-circuit")) return ma.toString();
  } catch { /* below */ }
  throw new LayerswarmError("BAD_ARGUMENT", `--relay ${addr}: give the relay's multiaddr ending in /p2p/<peer id> (every node, gateway and bootstrap peer prints its own)`);
}

// Tell the operator when this peer turns out to be unreachable, and its relay address once it has one.
function reportReachability(what: string, lt: Libp2pTransport): void {
  lt.onReachability((r) => {
    if (r !== "unreachable") return void process.stderr.write(`layerswarm: ${what} is reachable from other peers\n`);
    process.stderr.write(`layerswarm: ${what} is not reachable from other peers (behind a NAT or firewall): reserving a slot on a relay\n`);
    let tries = 0;
    const timer = setInterval(() => {
      const relayed = lt.addrs().filter((a) => a.includes("/p2p-circuit"));
      if (relayed.length || ++tries > 60) {
        clearInterval(timer);
        process.stderr.write(relayed.length ? `layerswarm: ${what} is reached through a relay at ${relayed[0]}${relayed[0].includes("/p2p/" + lt.peerId) ? "" : `/p2p/${lt.peerId}`}\n` : `layerswarm: ${what} found no relay yet (every reachable node, gateway and bootstrap peer relays)\n`);
        process.stdout.write(JSON.stringify({ event: "reachability", reachable: false, relayed: relayed.map((a) => (a.includes(`/p2p/${lt.peerId}`) ? a : `${a}/p2p/${lt.peerId}`)) }) + "\n");
      }
    }, 500);
    timer.unref();
  });
}

// The line each process prints at start, for people to pass to --bootstrap (or --join).
// Addresses other machines can use first, loopback last.
function dialable(t: { peerId: string; addrs(): string[] }): string[] {
  const loopback = (a: string) => /^\/ip4\/127\.|^\/ip6\/::1\//.test(a);
  return t.addrs().map((a) => (a.includes("/p2p/") ? a : `${a}/p2p/${t.peerId}`)).sort((a, b) => Number(loopback(a)) - Number(loopback(b)));
}

function policyOf(o: { allow?: string; swarmKey?: string }): { gate: PeerGate; kind: PolicyKind } {
  const allow = o.allow ? readAllowList(o.allow) : undefined;
  return { gate: new PeerGate({ allow, local: thisMachine() }), kind: allow ? "allow-list" : o.swarmKey ? "swarm-key" : "open" };
}

export async function nodeCommand(o: NodeFlags): Promise<void> {
  if (!o.model) throw new LayerswarmError("BAD_ARGUMENT", "layerswarm node needs --model FILE (a GGUF file, an http(s) URL or hf:<owner>/<repo>/<file.gguf>), or model in its config file");
  const join = (o.join ?? []).map(parseJoin);
  const bootstrap = (o.bootstrap ?? []).map(parseBootstrap);
  const { gate, kind } = policyOf(o);
  const fault = FaultInjector.fromEnv();
  if (fault) process.stderr.write(`layerswarm: WARNING: this node computes wrong ON PURPOSE (${FAULT_ENV}=${fault.describe()}), for testing the swarm's defences; never let it serve real work\n`);
  const keyPath = o.key ?? path.join(stateDir(), "node.key");
  const control = o.control === false ? undefined : controlPath(keyPath); // checked before anything starts
  const identity = await loadOrCreateIdentity(keyPath, true);
  const listen = o.listen ?? LISTEN_ALL;
  const lt = await Libp2pTransport.create({ identity, listen, swarmKey: o.swarmKey, gate, dht: true, bootstrap, mdns: mdnsOption(o.mdns !== false), nat: natOption(listen, o.relay), chosen: join.map((j) => j.peer) });
  reportReachability("this node", lt);
  const t = withLinkDelay(lt);
  process.stderr.write(policyNotice("node", kind) + "\n");
  if (!join.length && !bootstrap.length && o.mdns === false)
    process.stderr.write("layerswarm: no --bootstrap, --join or mDNS: only peers that bootstrap from this node will find it\n");
  let modelPath = o.model;
  let fetchLayers: ((r: LayerRange) => Promise<void>) | undefined;
  if (isRemote(o.model)) {
    // only the header now; each range's tensors when it is loaded
    modelPath = (await openRemoteSlice(o.model, () => [], progress("header"))).path;
    fetchLayers = async (r) => void (await openRemoteSlice(o.model, (g) => tensorsFor(g, [r], false), progress(`layers ${r.start}-${r.end}`)));
  }
  const f = readGGUF(modelPath);
  // the layers it loads are checked against the manifest (a remote model's only when one is cached or a peer gave the --model-id's; its record's layer hashes are those of the bytes fetched either way)
  const manifest = await nodeManifest(o.model, modelPath, progress("manifest"), { modelId: parseModelId(o.modelId), fromPeers: peerManifests(lt.discovery(), t, modelPath) });
  const cfg = configFromGGUF(f);
  const maxMem = o.maxMemory ? parseBytes(o.maxMemory) : Math.floor(os.freemem() * 0.8);
  const perLayer = Math.max(...Array.from({ length: cfg.nLayers }, (_, i) => layerBytes(f, i)));
  const kvBudget = Math.max(64 * 2 ** 20, Math.floor(maxMem * 0.25));
  const maxLayers = Math.floor((maxMem - kvBudget) / perLayer);
  if (maxLayers < 1)
    throw new LayerswarmError("OUT_OF_MEMORY", `this node cannot hold one layer: a layer needs ${perLayer} bytes, --max-memory ${maxMem} leaves ${maxMem - kvBudget} after the KV cache`);
  const auto = !o.layers || o.layers === "auto";
  const ranges: LayerRange[] = auto ? [] : o.layers!.split(",").map(parseRange);
  for (const r of ranges)
    if (r.end - r.start > maxLayers)
      throw new LayerswarmError("OUT_OF_MEMORY", `layers [${r.start}, ${r.end}) need ${(r.end - r.start) * perLayer} bytes; --max-memory allows ${maxLayers} layers`);
  const onProgress = (p: { layer: number; layers: number; of: number; bytes: number; totalBytes: number }) => {
    if (process.stderr.isTTY) process.stderr.write(`\rnode ${o.name ?? ""}: loaded ${p.layers}/${p.of} layers, ${(p.bytes / 2 ** 20).toFixed(1)}/${(p.totalBytes / 2 ** 20).toFixed(1)} MiB${p.layers === p.of ? "\n" : ""}`);
    else if (p.layers === p.of || p.layers % Math.max(1, Math.floor(p.of / 4)) === 0) log("info", "load progress", p);
  };
  const node = new SwarmNode({
    modelPath, manifest, fetchLayers, ranges, onProgress, kernels: createKernels({ threads: o.threads }), kvBudgetBytes: kvBudget, maxSessions: o.maxSessions, name: o.name,
    maxLayers, gate, policy: kind, discovery: lt.discovery(), rebalanceMs: (o.rebalance ?? 0) * 1000, drainMs: o.drainTimeout,
    wirePack: parsePackMode(o.wirePack ?? "auto"), identity, fault,
  }, t);
  await node.start(join, auto ? { maxLayers } : undefined);
  log("info", "node ready", { peer: t.peerId, addrs: t.addrs(), ranges: node.ranges() });
  process.stderr.write(`layerswarm: node ${t.peerId} serves layers ${node.ranges().map((r) => `[${r.start}, ${r.end})`).join(" ")}; others can --bootstrap ${dialable(t)[0]}\n`);
  // its operator moves it through a socket beside its key (layerswarm node move); no peer can
  const closeControl = control ? await serveControl(control, node) : () => {};
  process.stdout.write(JSON.stringify({ event: "node-ready", peer: t.peerId, addrs: dialable(t), ranges: node.ranges(), pid: process.pid, control }) + "\n");
  const stop = () => void node.stop().finally(() => (closeControl(), process.exit(0)));
  // SIGTERM or SIGINT (a service manager stopping it, its owner's Ctrl-C):
  // drain first (no new sessions, live ones finish or are handed over, the DHT
  // record withdrawn), and exit by --drain-timeout; a second signal exits at once.
  let leaving = false;
  const leave = (signal: string) => {
    if (leaving) {
      process.stderr.write(`layerswarm: ${signal} again: stopping now\n`);
      return stop();
    }
    leaving = true;
    const drainMs = o.drainTimeout ?? 60_000;
    process.stderr.write(`layerswarm: ${signal}: draining (no new sessions; live ones finish within ${drainMs / 1000} s or are handed over), then stopping; ${signal} again stops at once\n`);
    const deadline = setTimeout(stop, drainMs + 10_000); // the drain's own deadline, plus telling gateways, may not hang on a peer
    deadline.unref();
    void node.leave({ drainMs })
      .catch((e) => log("warn", "drain failed", { error: (e as Error).message }))
      .finally(() => (closeControl(), process.stdout.write(JSON.stringify({ event: "node-stopped", peer: t.peerId }) + "\n", () => process.exit(0))));
  };
  process.on("SIGINT", () => leave("SIGINT"));
  process.on("SIGTERM", () => leave("SIGTERM"));
  if (process.send) process.once("disconnect", stop); // started by `run`: die with it
}

export interface GatewayFlags {
  model: string;
  modelId?: string; // --model-id: the model's id, from someone trusted
  listen?: string[];
  bootstrap?: string[];
  relay?: string[];
  mdns?: boolean; // default off here: the commands say
  port: number;
  host: string;
  apiKey?: string;
  key?: string;
  swarmKey?: string;
  allow?: string;
  threads: number;
  stepTimeout: number;
  wire?: string; // f32 | bf16 | f16
  dtype?: string; // the old name of wire
  wirePack?: string; // auto | always | never
  localLayers?: number;
  localTail?: number;
  corsOrigin?: string[];
  verify?: string; // off | audit | strict
  auditRate?: number;
  speculate?: "off" | "ngram"; // for API requests that do not say
}

export async function startGateway(o: GatewayFlags) {
  const bootstrap = (o.bootstrap ?? []).map(parseBootstrap);
  const { gate, kind } = policyOf(o);
  const identity = await loadOrCreateIdentity(o.key ?? path.join(stateDir(), "gateway.key"), true);
  const listen = o.listen ?? LISTEN_LOCAL;
  const lt = await Libp2pTransport.create({ identity, listen, swarmKey: o.swarmKey, gate, dht: true, bootstrap, mdns: mdnsOption(o.mdns === true), nat: natOption(listen, o.relay) });
  reportReachability("this gateway", lt);
  const t = withLinkDelay(lt);
  process.stderr.write(policyNotice("gateway", kind) + "\n");
  // a URL model: the gateway's tensors, and the layers it runs itself (--local-layers, --local-tail), by range requests
  const ownLayers = (g: GGUFFile) => {
    const L = configFromGGUF(g).nLayers, K = o.localLayers ?? 0, K2 = o.localTail ?? 0;
    return [...(K > 0 ? [{ start: 0, end: Math.min(K, L) }] : []), ...(K2 > 0 ? [{ start: Math.max(0, L - K2), end: L }] : [])];
  };
  const local = isRemote(o.model) ? (await openRemoteSlice(o.model, (g) => tensorsFor(g, ownLayers(g), true), progress("gateway tensors"))).path : o.model;
  const content = await gatewayContent(o.model, local, progress("manifest"), { modelId: parseModelId(o.modelId), fromPeers: peerManifests(lt.discovery(), t, local) });
  const model = Model.gateway(local, { threads: o.threads });
  const gw = new Gateway(model, t, identity, {
    content,
    stepTimeoutMs: o.stepTimeout, dtype: parseDType(o.wire ?? o.dtype ?? "f32"), wirePack: parsePackMode(o.wirePack ?? "auto"), gate, localLayers: o.localLayers, localTail: o.localTail, discovery: lt.discovery(),
    verify: { mode: parseVerifyMode(o.verify ?? "audit"), auditRate: o.auditRate },
    // judging a node takes its layers' weights: a URL model fetches them when first needed (checked against the manifest before use)
    layerSource: isRemote(o.model) ? async (r) => void (await openRemoteSlice(o.model, (g) => tensorsFor(g, [r], false), progress(`layers ${r.start}-${r.end - 1} to judge a node`))) : undefined,
  });
  const mon = new SwarmMonitor(gw.view); // from the start, so it sees every node join
  await gw.start();
  return { gw, model, t, mon };
}

export function modelId(spec: string): string {
  return path.basename(isRemote(spec) ? new URL(resolveUrl(spec)).pathname : spec).replace(/\.gguf$/i, "");
}

export async function serveApi(gw: Gateway, mon: SwarmMonitor, model: Model, o: GatewayFlags, id = modelId(o.model)): Promise<ApiServer> {
  const api = new ApiServer(model, gw, {
    modelId: id, apiKey: o.apiKey, staticDir: WEB_DIR, corsOrigins: o.corsOrigin,
    onRequest: mon.onRequest, onTokens: mon.onTokens, onFirstToken: mon.onFirstToken, onError: mon.onError, onActive: (n) => (mon.activeRequests = n),
    routes: mon.routes(), // /v1/swarm, /v1/swarm/events, /metrics
    speculate: o.speculate,
  });
  const port = await api.listen(o.port, o.host);
  process.stdout.write(JSON.stringify({ event: "api-ready", url: `http://${o.host}:${port}/v1`, port, peer: gw.peerId, gateway: dialable(gw) }) + "\n");
  process.stderr.write(`layerswarm: serving the OpenAI API at http://${o.host}:${port}/v1${o.apiKey ? " (API key required)" : ""}\n`);
  return api;
}

export async function gatewayCommand(o: GatewayFlags): Promise<void> {
  if (!o.model) throw new LayerswarmError("BAD_ARGUMENT", "layerswarm gateway needs --model FILE (a GGUF file, an http(s) URL or hf:<owner>/<repo>/<file.gguf>), or model in its config file");
  await checkPort(o.port, o.host);
  checkWeightTypes(await modelHeader(o.model, progress("header")), o.model);
  const { gw, model, t, mon } = await startGateway({ ...o, listen: o.listen ?? LISTEN_ALL, mdns: o.mdns !== false });
  const via = [o.bootstrap?.length ? "its --bootstrap peers" : "", o.mdns !== false ? "mDNS on the LAN" : ""].filter(Boolean).join(" and ");
  process.stderr.write(`layerswarm: gateway ${t.peerId} finds nodes in the swarm's DHT, reached through ${via || "nobody yet (no --bootstrap, no mDNS): only nodes that --join it or bootstrap from it"}\n` +
    `  others can --bootstrap ${dialable(gw)[0]}; nodes can also --join it\n`);
  const api = await serveApi(gw, mon, model, o);
  const stop = () => void Promise.all([api.close(), gw.stop()]).finally(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), "index.js");

// Start N node processes on this machine, each with a slice in proportion to
// equal speed and capped by memory, joined to the gateway.
// replicas: processes per range (strict verification needs two disjoint routes: 2)
export async function spawnLocalNodes(model: string, n: number, gw: Gateway, o: { threads: number; swarmKey?: string; extra?: string[]; announce?: boolean; replicas?: number }): Promise<ChildProcess[]> {
  const f = readGGUF(model);
  const cfg = configFromGGUF(f);
  if (n < 1 || n > cfg.nLayers) throw new LayerswarmError("BAD_ARGUMENT", `--nodes must be between 1 and the model's ${cfg.nLayers} layers`);
  const perLayer = Math.max(...Array.from({ length: cfg.nLayers }, (_, i) => layerBytes(f, i)));
  const replicas = o.replicas ?? 1;
  const maxLayers = Math.max(1, Math.floor((os.freemem() * 0.7) / n / replicas / perLayer));
  const joinAddr = gw.addrs().find((a) => a.includes("/p2p/")) ?? `${gw.addrs()[0]}/p2p/${gw.peerId}`;
  const one = allocateLayers(cfg.nLayers, Array.from({ length: n }, (_, i) => ({ id: `local-${i}`, speed: 1, maxLayers })));
  const ranges = Array.from({ length: replicas }, () => one).flat();
  const keys = path.join(stateDir(), "keys");
  const children = ranges.map((r, i) => {
    const args = [CLI, "node", "--model", model, "--join", joinAddr, "--no-mdns", "--listen", LISTEN_LOCAL[0], "--layers", `${r.start}:${r.end}`, "--threads", String(o.threads),
      "--key", path.join(keys, `local-node-${i}.key`), "--name", `local-${i}`, "--rebalance", "0", "--no-control", "--no-config", ...(o.swarmKey ? ["--swarm-key", o.swarmKey] : []), ...(o.extra ?? [])];
    // an IPC channel: a node started by `run` exits when its parent does, however the parent dies
    const c = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit", "ipc"], env: localNodeEnv() });
    c.stdout!.on("data", (d: Buffer) => {
      for (const line of d.toString().split("\n").filter(Boolean)) {
        try {
          const m = JSON.parse(line);
          if (m.event === "node-ready" && o.announce) process.stdout.write(JSON.stringify({ ...m, index: i }) + "\n");
        } catch { /* not ours */ }
      }
    });
    return c;
  });
  const cleanup = () => children.forEach((c) => c.kill("SIGTERM"));
  process.once("exit", cleanup);
  return children;
}

// run configures its nodes itself, by flags: not from a node config file
// (LAYERSWARM_CONFIG names run's) nor from LAYERSWARM_<FLAG> variables meant
// for a node of the same shell (LAYERSWARM_BOOTSTRAP would take them to a public swarm).
function localNodeEnv(): NodeJS.ProcessEnv {
  const drop = new Set(["LAYERSWARM_CONFIG", ...(FLAG_VARIABLES.get("node") ?? [])]);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.has(k)));
}

export interface RunFlags extends GatewayFlags {
  nodes: number;
}

// Bind the HTTP port and let it go, so that a port in use is reported at once,
// before a model is fetched or loaded and nodes are started.
export async function checkPort(port: number, host: string): Promise<void> {
  if (port === 0) return;
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once("error", (e: NodeJS.ErrnoException) => {
      const where = `port ${port} on ${host}`;
      if (e.code === "EADDRINUSE") reject(new LayerswarmError("BAD_ARGUMENT", `${where} is already in use (another layerswarm or server listens there): stop it, or choose another with --port N (--port 0 takes any free port)`));
      else if (e.code === "EACCES") reject(new LayerswarmError("BAD_ARGUMENT", `${where}: permission denied (ports below 1024 need privileges): choose another with --port N`));
      else if (e.code === "EADDRNOTAVAIL" || e.code === "ENOTFOUND") reject(new LayerswarmError("BAD_ARGUMENT", `--host ${host} is not an address of this machine (${e.code})`));
      else reject(new LayerswarmError("BAD_ARGUMENT", `cannot listen on ${where}: ${e.message}`));
    });
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve()));
  });
}

// Every layer held, or the first local node that exited before (its error is above, on stderr).
export async function waitForLocalNodes(gw: Pick<Gateway, "waitForCoverage">, children: ChildProcess[]): Promise<void> {
  const ac = new AbortController();
  let died: string | undefined;
  const handlers = children.map((c, i) => {
    const h = (code: number | null, signal: string | null) => {
      died ??= `local node ${i} exited (${code ?? signal}) before every layer was served; its error is above`;
      ac.abort();
    };
    c.once("exit", h);
    return h;
  });
  try {
    await gw.waitForCoverage(300_000, ac.signal);
  } catch (e) {
    if (died) throw new LayerswarmError("NO_ROUTE", died, { cause: e });
    throw e;
  } finally {
    children.forEach((c, i) => c.off("exit", handlers[i]));
  }
}

export async function runCommand(o: RunFlags): Promise<void> {
  await checkPort(o.port, o.host);
  const { spec, file } = await resolveModel(o.model, progress);
  o = { ...o, model: file, key: o.key ?? path.join(stateDir(), "keys", "local-gateway.key") };
  const { gw, model, mon } = await startGateway(o);
  // strict verification runs every step on two disjoint routes: every range twice
  const replicas = gw.verifier.mode === "strict" ? 2 : 1;
  if (replicas > 1) process.stderr.write(`layerswarm: --verify strict: ${o.nodes * replicas} node processes, each range on two of them (every step runs twice, on disjoint routes)\n`);
  const children = await spawnLocalNodes(o.model, o.nodes, gw, { threads: o.threads, swarmKey: o.swarmKey, announce: true, extra: o.wirePack ? ["--wire-pack", o.wirePack] : [], replicas });
  await waitForLocalNodes(gw, children);
  const api = await serveApi(gw, mon, model, o, modelId(spec));
  const stop = () => {
    children.forEach((c) => c.kill("SIGTERM"));
    void Promise.all([api.close(), gw.stop()]).finally(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

// generate --nodes N: one completion through a local swarm of N node processes.
export async function generateOverSwarm(prompt: string, o: GenerateFlags & { nodes: number; stepTimeout?: number }): Promise<void> {
  const { file } = await resolveModel(o.model, progress);
  const flags: GatewayFlags = { model: file, port: 0, host: "127.0.0.1", threads: o.threads, stepTimeout: o.stepTimeout ?? 30_000, wire: "f32", key: path.join(stateDir(), "keys", "local-gateway.key") };
  const { gw, model, mon } = await startGateway(flags);
  mon.close();
  const children = await spawnLocalNodes(file, o.nodes, gw, { threads: o.threads });
  try {
    await waitForLocalNodes(gw, children);
    const ids = o.chat ? ChatTemplate.fromGGUF(model.file, model.tokenizer).encode([{ role: "user", content: prompt }]) : model.tokenizer.encode(prompt, { addBos: o.bos ? undefined : false });
    const dec = new TextDecoderStream(model.tokenizer, ids.at(-1));
    for await (const t of generate(model, gw, ids, { maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP, repetitionPenalty: o.repeatPenalty, seed: o.seed, chunkSize: o.chunk, speculate: o.speculate }))
      process.stdout.write(dec.push(t.id));
    process.stdout.write(dec.flush() + "\n");
  } finally {
    children.forEach((c) => c.kill("SIGTERM"));
    await gw.stop();
  }
}

// layerswarm status --gateway URL: the swarm map as a table.
export async function statusCommand(o: { gateway: string; apiKey?: string; json?: boolean }): Promise<void> {
  const base = o.gateway.replace(/\/+$/, "").replace(/\/v1$/, "");
  let r: Response;
  try {
    r = await fetch(`${base}/v1/swarm`, { headers: o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {} });
  } catch (e) {
    throw new LayerswarmError("BAD_ARGUMENT", `cannot reach the gateway at ${base}: ${(e as Error).message}`);
  }
  if (!r.ok) throw new LayerswarmError("BAD_ARGUMENT", `${base}/v1/swarm: HTTP ${r.status} ${(await r.text()).slice(0, 200)}`);
  const s = (await r.json()) as ReturnType<SwarmMonitor["snapshot"]>;
  if (o.json) return void process.stdout.write(JSON.stringify(s, null, 2) + "\n");
  const L = s.model.layers, W = Math.min(40, L);
  const bar = (ranges: LayerRange[]) => {
    let line = "";
    for (let c = 0; c < W; c++) {
      const layer = Math.floor((c * L) / W);
      line += ranges.some((x) => x.start <= layer && layer < x.end) ? "█" : "·";
    }
    return line;
  };
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const rows = [["node", "layers", `map 0..${L}`, "state", "free", "KV used", "layers/s", "RTT", "reached", "links", "sessions"]];
  for (const n of s.nodes)
    rows.push([`${n.name} ${n.peer.slice(-8)}`, n.ranges.map((x) => `[${x.start},${x.end})`).join(" "), bar(n.ranges), n.differs?.length ? `${n.state}, other weights for layer${n.differs.length > 1 ? "s" : ""} ${n.differs.map((d) => d.layer).join(",")}` : n.state, mib(n.memory.freeBytes), mib(n.memory.kvUsedBytes),
      String(n.layersPerSec), n.rttMs === undefined ? "-" : `${n.rttMs} ms`, n.reach ?? "-", n.links.map((l) => `->${l.peer.slice(-6)} ${l.rttMs} ms`).join(" ") || "-", String(n.sessions)]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = [`${s.model.name}: ${L} layers · ${s.coverage.covered ? "all layers covered" : `MISSING ${s.coverage.missing.map((m) => `[${m.start},${m.end})`).join(" ")}`} · ${s.totals.tokPerSec} tok/s · ${s.totals.requests} requests · ${s.sessions.length} sessions`, ""];
  for (const r of rows) lines.push(r.map((c, i) => c.padEnd(widths[i])).join("  "));
  process.stdout.write(lines.join("\n") + "\n");
}

export interface BootstrapFlags {
  listen?: string[];
  bootstrap?: string[];
  key?: string;
  swarmKey?: string;
  mdns?: boolean;
}

// layerswarm bootstrap: a peer that only serves the swarm's DHT and relays for
// peers behind NATs (nat.ts), so that nodes and gateways have somewhere to start. It keeps its
// identity (bootstrap.key), so its address stays the same across restarts.
export async function bootstrapCommand(o: BootstrapFlags): Promise<void> {
  const bootstrap = (o.bootstrap ?? []).map(parseBootstrap);
  const identity = await loadOrCreateIdentity(o.key ?? path.join(stateDir(), "bootstrap.key"), true);
  const gate = new PeerGate({ local: thisMachine() });
  const listen = o.listen ?? LISTEN_ALL;
  const t = await Libp2pTransport.create({ identity, listen, swarmKey: o.swarmKey, gate, dht: true, bootstrap, mdns: mdnsOption(o.mdns !== false), nat: natOption(listen) });
  reportReachability("this bootstrap peer", t);
  const addrs = dialable(t);
  process.stderr.write(`layerswarm: bootstrap peer ${t.peerId}; nodes and gateways start with --bootstrap ${addrs[0]}\n`);
  process.stdout.write(JSON.stringify({ event: "bootstrap-ready", peer: t.peerId, addrs, pid: process.pid }) + "\n");
  let last = -1;
  const timer = setInterval(() => {
    const n = t.dhtPeers();
    if (n !== last) log("info", "DHT peers", { peers: n });
    last = n;
  }, 10_000);
  const stop = () => {
    clearInterval(timer);
    void t.stop().finally(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

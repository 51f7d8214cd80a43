// Test helpers: a whole swarm in one process over the in-memory transport, so
// attacks, failover and fairness run in milliseconds.

import { computeManifestSync, identityOf } from "../format/manifest.js";
import { createKernels } from "../kernels/index.js";
import { LayerRange } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { Gateway, GatewayOptions } from "../swarm/gateway/index.js";
import { MemoryDht, MemoryNetwork, MemoryTransport } from "../swarm/memory.js";
import { NodeInit, SwarmNode } from "../swarm/node/index.js";
import { PeerGate } from "../swarm/policy.js";
import { Transport } from "../swarm/transport.js";

export interface MemSwarm {
  net: MemoryNetwork;
  gw: Gateway;
  model: Model;
  nodes: SwarmNode[];
  transports: MemoryTransport[];
  // wrap: what the node sends through (a slow link, for instance)
  addNode(ranges: LayerRange[], init?: Partial<NodeInit>, ip?: string, wrap?: (t: MemoryTransport) => Transport): Promise<{ node: SwarmNode; t: MemoryTransport }>;
  complete(prompt: number[], maxTokens: number, onToken?: (n: number) => void): Promise<number[]>;
  stop(): Promise<void>;
}

let ipCounter = 0;

export async function memSwarm(modelPath: string, ranges: LayerRange[], opts: GatewayOptions = {}, nodeInit: Partial<NodeInit> = {}): Promise<MemSwarm> {
  const net = new MemoryNetwork();
  const gate = opts.gate ?? new PeerGate();
  const gt = await MemoryTransport.create(net, "10.0.0.1", gate);
  const model = Model.gateway(modelPath);
  const manifest = computeManifestSync(model.file); // nodes of another file pass their own (init.manifest)
  // no probe sessions unless asked (probeMs): the attack tests count every frame and session a node sees
  const gw = new Gateway(model, gt, gt.identity, { probeMs: 0, content: identityOf(model.file, manifest), ...opts, gate });
  await gw.start();
  const kernels = createKernels();
  const sw: MemSwarm = {
    net, gw, model, nodes: [], transports: [],
    async addNode(r, init = {}, ip = `10.1.0.${++ipCounter % 250}`, wrap) {
      const ngate = init.gate ?? new PeerGate();
      const t = await MemoryTransport.create(net, ip, ngate);
      const node = new SwarmNode({ modelPath, manifest, ranges: r, kernels, kvBudgetBytes: 256 * 2 ** 20, announceMs: 60_000, identity: t.identity, ...nodeInit, ...init, gate: ngate }, wrap ? wrap(t) : t);
      await node.start([{ peer: gw.peerId, addrs: gw.addrs() }]);
      sw.nodes.push(node);
      sw.transports.push(t);
      return { node, t };
    },
    async complete(prompt, maxTokens, onToken) {
      const out: number[] = [];
      for await (const t of generate(model, gw, prompt, { maxTokens })) {
        out.push(t.id);
        onToken?.(out.length);
      }
      return [...prompt, ...out];
    },
    async stop() {
      await Promise.all(sw.nodes.map((n) => n.stop()));
      await gw.stop();
    },
  };
  for (const r of ranges) await sw.addNode([r]);
  if (ranges.length) await gw.waitForCoverage(5000);
  return sw;
}

// A swarm with no coordinator, in memory: nodes announce themselves only in a
// shared DHT (MemoryDht), and any number of gateways find them there.
export interface OpenSwarm {
  net: MemoryNetwork;
  dht: MemoryDht;
  model: Model;
  gateways: Gateway[];
  nodes: SwarmNode[];
  transports: MemoryTransport[]; // the nodes'
  addGateway(opts?: GatewayOptions, ip?: string): Promise<Gateway>;
  addNode(ranges: LayerRange[], init?: Partial<NodeInit>, ip?: string): Promise<{ node: SwarmNode; t: MemoryTransport }>;
  complete(gw: Gateway, prompt: number[], maxTokens: number, onToken?: (n: number) => void): Promise<number[]>;
  stop(): Promise<void>;
}

export interface OpenSwarmOptions {
  gateways?: number; // started at once (default 1)
  gateway?: GatewayOptions; // for each (discovery rounds every 100 ms, 20 ms while layers are missing, unless set)
  node?: Partial<NodeInit>; // for each (provides every 100 ms unless set)
  dhtValidityMs?: number;
}

export async function memOpenSwarm(modelPath: string, ranges: LayerRange[], o: OpenSwarmOptions = {}): Promise<OpenSwarm> {
  const net = new MemoryNetwork();
  const dht = new MemoryDht(o.dhtValidityMs);
  const model = Model.gateway(modelPath);
  const manifest = computeManifestSync(model.file);
  const content = identityOf(model.file, manifest);
  const kernels = createKernels();
  const sw: OpenSwarm = {
    net, dht, model, gateways: [], nodes: [], transports: [],
    async addGateway(opts = {}, ip = `10.2.0.${++ipCounter % 250}`) {
      const gate = opts.gate ?? new PeerGate();
      const t = await MemoryTransport.create(net, ip, gate);
      const gw = new Gateway(model, t, t.identity, { discoverMs: 100, discoverFastMs: 20, content, ...o.gateway, ...opts, gate, discovery: dht.for(t) });
      await gw.start();
      sw.gateways.push(gw);
      return gw;
    },
    async addNode(r, init = {}, ip = `10.1.0.${++ipCounter % 250}`) {
      const gate = init.gate ?? new PeerGate();
      const t = await MemoryTransport.create(net, ip, gate);
      const node = new SwarmNode({ modelPath, manifest, ranges: r, kernels, kvBudgetBytes: 256 * 2 ** 20, provideMs: 100, identity: t.identity, ...o.node, ...init, gate, discovery: dht.for(t) }, t);
      await node.start();
      sw.nodes.push(node);
      sw.transports.push(t);
      return { node, t };
    },
    async complete(gw, prompt, maxTokens, onToken) {
      const out: number[] = [];
      for await (const t of generate(model, gw, prompt, { maxTokens })) {
        out.push(t.id);
        onToken?.(out.length);
      }
      return [...prompt, ...out];
    },
    async stop() {
      await Promise.all(sw.nodes.map((n) => n.stop()));
      await Promise.all(sw.gateways.map((g) => g.stop()));
    },
  };
  for (let i = 0; i < (o.gateways ?? 1); i++) await sw.addGateway();
  for (const r of ranges) await sw.addNode([r]);
  // every gateway has found every node
  const until = Date.now() + 5000;
  while (sw.gateways.some((g) => g.serving().length < sw.nodes.length)) {
    if (Date.now() > until) throw new Error("memOpenSwarm: the gateways did not find every node through the DHT within 5 s");
    await new Promise((res) => setTimeout(res, 5));
  }
  return sw;
}

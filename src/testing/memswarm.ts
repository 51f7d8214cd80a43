// Test helpers: a whole swarm in one process over the in-memory transport, so
// attacks, failover and fairness run in milliseconds.

import { createKernels } from "../kernels/index.js";
import { LayerRange } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { Gateway, GatewayOptions } from "../swarm/gateway/index.js";
import { MemoryNetwork, MemoryTransport } from "../swarm/memory.js";
import { NodeInit, SwarmNode } from "../swarm/node/index.js";
import { PeerGate } from "../swarm/policy.js";

export interface MemSwarm {
  net: MemoryNetwork;
  gw: Gateway;
  model: Model;
  nodes: SwarmNode[];
  transports: MemoryTransport[];
  addNode(ranges: LayerRange[], init?: Partial<NodeInit>, ip?: string): Promise<{ node: SwarmNode; t: MemoryTransport }>;
  complete(prompt: number[], maxTokens: number, onToken?: (n: number) => void): Promise<number[]>;
  stop(): Promise<void>;
}

let ipCounter = 0;

export async function memSwarm(modelPath: string, ranges: LayerRange[], opts: GatewayOptions = {}, nodeInit: Partial<NodeInit> = {}): Promise<MemSwarm> {
  const net = new MemoryNetwork();
  const gate = opts.gate ?? new PeerGate();
  const gt = await MemoryTransport.create(net, "10.0.0.1", gate);
  const model = Model.gateway(modelPath);
  const gw = new Gateway(model, gt, gt.identity, { ...opts, gate });
  await gw.start();
  const kernels = createKernels();
  const sw: MemSwarm = {
    net, gw, model, nodes: [], transports: [],
    async addNode(r, init = {}, ip = `10.1.0.${++ipCounter % 250}`) {
      const ngate = init.gate ?? new PeerGate();
      const t = await MemoryTransport.create(net, ip, ngate);
      const node = new SwarmNode({ modelPath, ranges: r, kernels, kvBudgetBytes: 256 * 2 ** 20, announceMs: 60_000, ...nodeInit, ...init, gate: ngate }, t);
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

// Test helpers: a gateway and nodes in this one process, over the real libp2p
// transport (TCP, Noise, Yamux on loopback), each link optionally slowed by a
// user-space delay (delay.ts). The data path's own tests (large frames, flow
// control, wire encodings) run here: real streams, no child processes.

import { createKernels } from "../kernels/index.js";
import { LayerRange } from "../model/config.js";
import { Model, generate } from "../model/model.js";
import { DelayedTransport } from "../swarm/delay.js";
import { Gateway, GatewayOptions } from "../swarm/gateway/index.js";
import { Identity } from "../swarm/identity.js";
import { Libp2pTransport } from "../swarm/libp2p.js";
import { NodeInit, SwarmNode } from "../swarm/node/index.js";
import { Transport } from "../swarm/transport.js";

export interface P2PSwarm {
  gw: Gateway;
  model: Model;
  nodes: SwarmNode[];
  complete(prompt: number[], maxTokens: number, chunkSize?: number): Promise<number[]>;
  stop(): Promise<void>;
}

async function transport(delayMs: number): Promise<{ identity: Identity; t: Transport }> {
  const identity = await Identity.generate();
  const t = await Libp2pTransport.create({ identity });
  return { identity, t: delayMs > 0 ? new DelayedTransport(t, delayMs) : t };
}

export async function p2pSwarm(modelPath: string, ranges: LayerRange[], o: { delayMs?: number; gateway?: GatewayOptions; node?: Partial<NodeInit> } = {}): Promise<P2PSwarm> {
  const g = await transport(o.delayMs ?? 0);
  const model = Model.gateway(modelPath);
  const gw = new Gateway(model, g.t, g.identity, o.gateway);
  await gw.start();
  const kernels = createKernels();
  const nodes: SwarmNode[] = [];
  const sw: P2PSwarm = {
    gw, model, nodes,
    async complete(prompt, maxTokens, chunkSize) {
      const out: number[] = [];
      for await (const t of generate(model, gw, prompt, { maxTokens, chunkSize, stopAtEog: false })) out.push(t.id);
      return out;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop().catch(() => {})));
      await gw.stop();
    },
  };
  try {
    for (const r of ranges) {
      const n = await transport(o.delayMs ?? 0);
      const node = new SwarmNode({ modelPath, ranges: [r], kernels, announceMs: 60_000, identity: n.identity, ...o.node }, n.t);
      nodes.push(node);
      await node.start([{ peer: gw.peerId, addrs: gw.addrs() }]);
    }
    await gw.waitForCoverage(10_000);
  } catch (e) {
    await sw.stop();
    throw e;
  }
  return sw;
}

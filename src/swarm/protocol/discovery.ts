// Discovery without a coordinator: what every peer must agree on. Nodes
// announce themselves in the swarm's Kad-DHT (our own protocol id, never the
// public IPFS DHT) as providers of one key per block of a model's layers; a
// gateway lists the providers of each block it needs and asks each one for
// its record directly (the `info` control request, over the authenticated
// connection). Provider records only say "ask me": nothing a node claims is
// read from the DHT.
//
// A block key names the model's layout and the block's layer range, so a key
// cannot be shared by two shapes of model or two block sizes. The layout
// (format/manifest.ts layoutId: architecture, compute parameters, tensor
// names, types and shapes, no weights) is shared by fine-tunes of one base on
// purpose: a gateway finds their holders too, compares each layer's content
// hash from their records with its own, and pairs only the layers that match
// (or says which differ).

import { createHash } from "node:crypto";
import { LayerRange } from "../../model/config.js";

export const DHT_PROTOCOL = "/layerswarm/kad/1.0.0";
export const MDNS_SERVICE = "_layerswarm._udp.local";
// NAT: a peer asks another to dial it back (nat.ts); the answer says whether it is reachable.
export const DIALBACK_PROTOCOL = "/layerswarm/dialback/1.0.0";

// Timing. A node provides its block keys every PROVIDE_INTERVAL_MS; DHT peers
// keep a provider record for DHT_VALIDITY_MS after it was last provided. A
// gateway looks every DISCOVER_INTERVAL_MS (every DISCOVER_FAST_MS while some
// layers have no holder) and forgets a node whose record it has not fetched
// again within RECORD_TTL_MS.
export const PROVIDE_INTERVAL_MS = 60_000;
export const DHT_VALIDITY_MS = 180_000;
export const DISCOVER_INTERVAL_MS = 15_000;
export const DISCOVER_FAST_MS = 2_000;
export const RECORD_TTL_MS = 120_000;

// The most blocks a model is cut into (so a gateway's lookups per round stay bounded).
export const MAX_BLOCKS = 16;

const KEY_DOMAIN = "layerswarm/providers/1\n";

// Layers per block: the model's layers in at most MAX_BLOCKS blocks of equal size (the last may be shorter).
export function blockSize(nLayers: number): number {
  return Math.max(1, Math.ceil(nLayers / MAX_BLOCKS));
}

// The blocks that overlap [start, end) of a model of nLayers layers, as layer ranges.
export function blocksOf(r: LayerRange, nLayers: number): LayerRange[] {
  const b = blockSize(nLayers), out: LayerRange[] = [];
  for (let s = Math.floor(r.start / b) * b; s < Math.min(r.end, nLayers); s += b) out.push({ start: s, end: Math.min(s + b, nLayers) });
  return out;
}

// The DHT key of one block: a 32-byte SHA-256 digest.
export function blockKey(modelId: string, block: LayerRange): Uint8Array {
  return createHash("sha256").update(`${KEY_DOMAIN}${modelId}\n${block.start}:${block.end}`).digest();
}

// The keys a node holding these ranges provides (each block once).
export function providerKeys(modelId: string, ranges: LayerRange[], nLayers: number): Uint8Array[] {
  const seen = new Map<string, Uint8Array>();
  for (const r of ranges) for (const b of blocksOf(r, nLayers)) seen.set(`${b.start}:${b.end}`, blockKey(modelId, b));
  return [...seen.values()];
}

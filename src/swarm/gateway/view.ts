// What the dashboard, `layerswarm status` and the metrics see of a gateway: a
// read-only view made of copies. Nothing here is on the step path, and nothing
// a reader does can change it.

import { EventEmitter } from "node:events";
import { LayerRange } from "../../model/config.js";
import type { Reach } from "../transport.js";
import type { Gateway } from "./index.js";
import { Figures, figures } from "./directory.js";

const roundFigures = (f: Figures): Figures => ({ hopMs: Math.round(f.hopMs * 1000) / 1000, layerMs: Math.round(f.layerMs * 1000) / 1000, rowMs: Math.round(f.rowMs * 1000) / 1000 });

export interface NodeView {
  peer: string;
  name: string;
  addrs: string[];
  ranges: LayerRange[];
  state: "serving" | "lost" | "loading" | "banned";
  banned?: { reason: string; at: number; proven: boolean; steps: number }; // caught computing or signing wrong (verify.ts)
  loading?: { layers: number; of: number; bytes: number; totalBytes: number };
  memory: { freeBytes: number; kvUsedBytes: number; kvBudgetBytes: number };
  layersPerSec: number;
  backend: string;
  rttMs?: number; // the gateway's last control round trip to it
  reach?: Reach; // how the gateway reaches it now (undefined: not connected at the moment)
  links: { peer: string; rttMs: number }[];
  batchMs?: number;
  sessions: number;
  since: number;
  via: "announce" | "dht"; // how the gateway knows it: it announced itself (--join), or discovery found it
  recordAgeMs: number; // since its record last arrived (it stops serving here past RECORD_TTL_MS)
  model: string; // its model's identity ("" when it holds only part of the file and has no manifest)
  differs: { layer: number; theirs: string; ours: string }[]; // layers it serves with other weights than ours: not routed through for them
  draining?: LayerRange[]; // layers it is moving away from: its live sessions finish there, no new ones open
  cost?: { hopMs: number; layerMs: number; rowMs: number; at: number }; // what this gateway measured of it (routes are priced by this alone)
  mismatch?: { start: number; end: number; with: string[]; at: number }; // its probe output for these layers differed from these holders' on the same input
  wire?: { bytesPerToken: number; rawBytesPerToken: number; packedFrames: number }; // what it sends on to its next receivers, per row (its record's word)
}

export interface SessionView {
  id: string; // shortened
  epoch: number;
  positions: number;
  route: { peer: string; start: number; end: number }[];
  inflight: { pos: number; T: number; stage: number; ms: number }[];
  decoded: number;
  tokPerSec: number;
  ageMs: number;
}

export interface GatewayView {
  model: { name: string; layers: number; dim: number; vocab: number; context: number; id: string }; // id: the manifest's hash
  local: { head: number; tail: number }; // layers the gateway runs itself at each end
  events: Pick<EventEmitter, "on" | "off">; // "event" (SwarmEvent & {t}) and "batch" ({peer, ms})
  nodes(): NodeView[];
  coverage(): { covered: boolean; missing: LayerRange[]; perLayer: number[] };
  sessions(): SessionView[];
  totals(): Gateway["stats"] & { sessions: number };
  poll(ms: number): () => void;
}

export function makeView(gw: Gateway): GatewayView {
  const cfg = gw.model.cfg;
  return {
    model: { name: cfg.name, layers: cfg.nLayers, dim: cfg.dim, vocab: cfg.vocabSize, context: cfg.contextLength, id: gw.content.id },
    local: { head: gw.local.head ? gw.local.head.range.end : 0, tail: gw.local.tail ? cfg.nLayers - gw.local.tail.range.start : 0 },
    events: gw.dir.events,
    nodes: () => [...gw.dir.nodes.values()].map((n): NodeView => {
      const r = n.record;
      return {
        peer: r.peer, name: r.name, addrs: [...r.addrs], ranges: r.ranges.map((x) => ({ ...x })),
        state: n.banned ? "banned" : n.state === "lost" ? "lost" : r.loading ? "loading" : "serving",
        banned: n.banned ? { ...n.banned, proven: gw.verifier.bans.get(r.peer)?.proven ?? false, steps: gw.verifier.bans.get(r.peer)?.steps ?? 0 } : undefined,
        loading: r.loading ? { layers: r.loading.layers, of: r.loading.end - r.loading.start, bytes: r.loading.bytes, totalBytes: r.loading.totalBytes } : undefined,
        memory: { freeBytes: r.capacity.freeBytes, kvUsedBytes: r.capacity.kvUsedBytes, kvBudgetBytes: r.capacity.kvBudgetBytes },
        layersPerSec: r.capacity.layersPerSec, backend: r.capabilities.backend, rttMs: n.rttMs, reach: gw.pipe.reachOf(r.peer), links: r.links.map((l) => ({ ...l })),
        batchMs: n.batchMs.length ? Math.round((n.batchMs.reduce((a, b) => a + b, 0) / n.batchMs.length) * 100) / 100 : undefined,
        sessions: n.sessions, since: n.since, via: n.via, recordAgeMs: Date.now() - n.refreshedAt,
        model: r.model.id, differs: n.differs.map((d) => ({ ...d })),
        draining: r.draining?.map((x) => ({ ...x })),
        cost: n.probe ? { ...roundFigures(figures(n)), at: n.probe.at } : undefined,
        mismatch: n.mismatch ? { ...n.mismatch, with: [...n.mismatch.with] } : undefined,
        wire: r.stats.wireRows ? {
          bytesPerToken: Math.round((r.stats.wireBytes ?? 0) / r.stats.wireRows), rawBytesPerToken: Math.round((r.stats.wireRawBytes ?? 0) / r.stats.wireRows), packedFrames: r.stats.packedFrames ?? 0,
        } : undefined,
      };
    }).sort((a, b) => (a.ranges[0]?.start ?? 1e9) - (b.ranges[0]?.start ?? 1e9)),
    coverage: () => {
      const perLayer = new Array<number>(cfg.nLayers).fill(0);
      for (const n of gw.dir.serving()) for (const r of n.record.ranges) for (let i = r.start; i < Math.min(r.end, cfg.nLayers); i++) perLayer[i]++;
      return { ...gw.coverage(), perLayer };
    },
    sessions: () => {
      const inflight = new Map<string, SessionView["inflight"]>();
      for (const p of gw.pipe.inflight()) (inflight.get(p.owner) ?? inflight.set(p.owner, []).get(p.owner)!).push({ pos: p.pos, T: p.T, stage: p.stage, ms: p.ms });
      const now = Date.now();
      return [...gw.sessions.all.values()].map((s) => ({
        id: s.id.length > 10 ? `${s.id.slice(0, 4)}…${s.id.slice(-4)}` : s.id,
        epoch: s.epoch, positions: s.positions,
        route: s.route.map((r) => ({ peer: r.id, start: r.start, end: r.end })),
        inflight: inflight.get(s.id) ?? [],
        decoded: s.decoded,
        tokPerSec: s.firstDecodeAt && now > s.firstDecodeAt ? Math.round((s.decoded * 10000) / (now - s.firstDecodeAt)) / 10 : 0,
        ageMs: now - s.createdAt,
      }));
    },
    totals: () => ({ ...gw.stats, sessions: gw.sessions.all.size }),
    poll: (ms) => gw.poll(ms),
  };
}

// Placement and routing: pure functions over what nodes hold and can do,
// separate from networking so they can be tested as tables. Ranges are
// half-open [start, end).

import { LayerswarmError } from "../errors.js";
import { LayerRange } from "../model/config.js";

export interface NodeCapacity {
  id: string;
  speed: number; // relative throughput (layers per second, or any consistent unit)
  maxLayers: number; // how many layers its memory can hold
}

// Contiguous ranges covering [0, nLayers) in proportion to speed, capped by
// memory, in the given node order. Nodes that get no layer get an empty range.
export function allocateLayers(nLayers: number, nodes: NodeCapacity[]): LayerRange[] {
  if (nodes.length === 0) throw new LayerswarmError("BAD_ARGUMENT", "no nodes to place layers on");
  for (const n of nodes)
    if (n.maxLayers < 1) throw new LayerswarmError("OUT_OF_MEMORY", `node ${n.id} cannot hold a single layer`);
  const total = nodes.reduce((a, n) => a + Math.min(n.maxLayers, nLayers), 0);
  if (total < nLayers) throw new LayerswarmError("OUT_OF_MEMORY", `the nodes can hold ${total} layers together, the model has ${nLayers}`);
  // water-filling: proportional shares, capped nodes fixed, the rest re-shared
  const share = new Array<number>(nodes.length).fill(0);
  let free = nodes.map((_, i) => i), left = nLayers;
  while (free.length > 0) {
    const sp = free.reduce((a, i) => a + Math.max(nodes[i].speed, 1e-9), 0);
    const capped = free.filter((i) => (left * Math.max(nodes[i].speed, 1e-9)) / sp >= nodes[i].maxLayers);
    if (capped.length === 0) {
      for (const i of free) share[i] = (left * Math.max(nodes[i].speed, 1e-9)) / sp;
      break;
    }
    for (const i of capped) (share[i] = nodes[i].maxLayers), (left -= nodes[i].maxLayers);
    free = free.filter((i) => !capped.includes(i));
  }
  // integers by largest remainder, never above a cap
  const count = share.map(Math.floor);
  let rest = nLayers - count.reduce((a, b) => a + b, 0);
  const order = share.map((s, i) => [s - Math.floor(s), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, i] of order) if (rest > 0 && count[i] < nodes[i].maxLayers) (count[i]++, rest--);
  for (let i = 0; rest > 0 && i < nodes.length; i++) while (rest > 0 && count[i] < nodes[i].maxLayers) (count[i]++, rest--);
  let start = 0;
  return count.map((c) => {
    const r = { start, end: start + c };
    start += c;
    return r;
  });
}

export interface Holder {
  id: string;
  ranges: LayerRange[];
  load?: number; // lower is preferred when several nodes could serve a stage
}

export interface Stage {
  id: string;
  start: number;
  end: number;
}

// A chain of stages covering [from, nLayers): from layer `from`, the node whose range
// reaches furthest (then the least loaded) serves as many layers as it holds.
// Returns undefined when some layer is held by nobody.
export function planRoute(nLayers: number, holders: Holder[], from = 0): Stage[] | undefined {
  const stages: Stage[] = [];
  let cur = from;
  while (cur < nLayers) {
    let best: { id: string; end: number; load: number } | undefined;
    for (const h of holders)
      for (const r of h.ranges)
        if (r.start <= cur && cur < r.end) {
          const load = h.load ?? 0;
          if (!best || r.end > best.end || (r.end === best.end && load < best.load)) best = { id: h.id, end: r.end, load };
        }
    if (!best) return undefined;
    const end = Math.min(best.end, nLayers); // a holder may reach past the span the route covers
    stages.push({ id: best.id, start: cur, end });
    cur = end;
  }
  return stages;
}

// Layers in [from, nLayers) that no holder covers, as ranges.
export function missingLayers(nLayers: number, holders: Holder[], from = 0): LayerRange[] {
  const covered = new Array<boolean>(nLayers).fill(false);
  for (const h of holders) for (const r of h.ranges) for (let i = Math.max(0, r.start); i < Math.min(nLayers, r.end); i++) covered[i] = true;
  const out: LayerRange[] = [];
  for (let i = from; i < nLayers; i++)
    if (!covered[i]) {
      if (out.length && out[out.length - 1].end === i) out[out.length - 1].end++;
      else out.push({ start: i, end: i + 1 });
    }
  return out;
}

// ------------------------------------------------------------ route choice by cost

// What a gateway measured of a node itself (never what the node says about
// itself: the fastest liar would win), for the cost of a stage through it.
export interface Measured {
  id: string;
  ranges: LayerRange[]; // the layers it may serve new sessions (draining ones left out)
  hopMs: number; // fixed cost of a stage there: the round trip to it and per-step overhead
  layerMs: number; // compute per layer for one row
  rowMs: number; // each further row of a step: the link's throughput and batched compute together
  load: number; // sessions routed through it now; each makes its stage slower
  failures?: number; // recent steps it failed while still answering (a heavy penalty)
}

// How much one session already on a node slows a stage there (batched decode shares a pass).
export const LOAD_WEIGHT = 0.25;

export function stageCost(m: Measured, layers: number, rows = 1): number {
  const base = m.hopMs + m.layerMs * layers + m.rowMs * Math.max(0, rows - 1);
  return base * (1 + LOAD_WEIGHT * m.load) * (1 + 1000 * (m.failures ?? 0));
}

export interface CostedRoute {
  stages: Stage[];
  ms: number; // the estimated time of one step of `rows` rows through it
}

// The cheapest chain of stages covering [from, nLayers) for a step of `rows`
// rows (dynamic programming over layer boundaries, as Parallax does: stages go
// only forward, so the graph has no cycles and one pass in layer order is
// exact). A stage may switch nodes only where some range starts or ends (with
// costs linear in layers, switching anywhere else never helps). Ties go to
// fewer stages, then to the lexicographically smaller peer id, so the answer
// is deterministic. Returns undefined when some layer is held by nobody.
// fixedCuts: the stage boundaries the route must have, exactly (strict
// verification over a rounded wire: a twin route rounds where the first does).
export function cheapestRoute(nLayers: number, nodes: Measured[], from = 0, rows = 1, fixedCuts?: readonly number[]): CostedRoute | undefined {
  const cuts = new Set<number>([from, nLayers]);
  if (fixedCuts) for (const x of fixedCuts) cuts.add(x);
  else for (const n of nodes) for (const r of n.ranges) for (const x of [r.start, r.end]) if (x > from && x < nLayers) cuts.add(x);
  const pts = [...cuts].sort((a, b) => a - b);
  const idx = new Map(pts.map((p, i) => [p, i]));
  type Best = { ms: number; hops: number; prev: number; stage?: Stage };
  const best: (Best | undefined)[] = pts.map((_, i) => (i === 0 ? { ms: 0, hops: 0, prev: -1 } : undefined));
  const better = (a: Best, b: Best | undefined) =>
    !b || a.ms < b.ms - 1e-9 || (Math.abs(a.ms - b.ms) <= 1e-9 && (a.hops < b.hops || (a.hops === b.hops && a.stage!.id < b.stage!.id)));
  for (let i = 0; i < pts.length - 1; i++) {
    const here = best[i];
    if (!here) continue;
    const at = pts[i];
    for (const n of nodes)
      for (const r of n.ranges) {
        if (!(r.start <= at && at < r.end)) continue;
        const top = Math.min(r.end, nLayers);
        for (let j = i + 1; j < pts.length && pts[j] <= top && (!fixedCuts || j === i + 1); j++) {
          const cand: Best = { ms: here.ms + stageCost(n, pts[j] - at, rows), hops: here.hops + 1, prev: i, stage: { id: n.id, start: at, end: pts[j] } };
          if (better(cand, best[j])) best[j] = cand;
        }
      }
  }
  const last = best[idx.get(nLayers)!];
  if (!last) return undefined;
  const stages: Stage[] = [];
  for (let k = idx.get(nLayers)!; k > 0; k = best[k]!.prev) stages.unshift(best[k]!.stage!);
  return { stages, ms: last.ms };
}

// ------------------------------------------------------------ placement by demand

// What the swarm says of a holder, for placement: its ranges, the tokens per
// second it can push through its whole range, and the rows per second it
// served lately (the demand it saw). Announced by the nodes (a node deciding
// where to go has nothing else); a liar can only misplace newcomers, never win routes.
export interface Supply {
  id: string;
  ranges: LayerRange[];
  tokPerSec?: number; // default 1: every holder alike
  rowsPerSec?: number; // default 0
  addrs?: string[]; // where to reach it (to check it holds what it says: node/verify.ts)
}

// Demand floor: an idle swarm still places by throughput alone (as if every layer saw this many rows per second).
export const IDLE_DEMAND = 1;

// Rows per second through each layer of [0, nLayers): every row passes every
// layer of a holder's range, so a layer's demand is what its holders served.
export function layerDemand(nLayers: number, holders: Supply[]): number[] {
  const d = new Array<number>(nLayers).fill(0);
  for (const h of holders) for (const r of h.ranges) for (let i = Math.max(0, r.start); i < Math.min(r.end, nLayers); i++) d[i] += h.rowsPerSec ?? 0;
  return d;
}

// Per layer: demand over throughput (Infinity where nobody holds the layer).
export function layerPressure(nLayers: number, holders: Supply[], demand = layerDemand(nLayers, holders)): number[] {
  const supply = new Array<number>(nLayers).fill(0);
  for (const h of holders) for (const r of h.ranges) for (let i = Math.max(0, r.start); i < Math.min(r.end, nLayers); i++) supply[i] += h.tokPerSec ?? 1;
  return supply.map((s, i) => (s > 0 ? (demand[i] + IDLE_DEMAND) / s : Infinity));
}

// Lexicographic comparison of two windows' pressures, highest first: the window whose worst layer is worst wins.
function hotter(a: number[], b: number[]): boolean {
  const x = [...a].sort((p, q) => q - p), y = [...b].sort((p, q) => q - p);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return false;
}

// For a node joining with --layers auto: the window of up to maxLayers layers
// where the swarm's throughput is lowest relative to demand (layers nobody
// holds first; ties to the leftmost), as Petals chooses blocks, with demand.
export function chooseRange(nLayers: number, holders: Supply[], maxLayers: number, demand?: number[]): LayerRange {
  const n = Math.max(1, Math.min(maxLayers, nLayers));
  const p = layerPressure(nLayers, holders, demand);
  let best = 0;
  for (let s = 1; s + n <= nLayers; s++) if (hotter(p.slice(s, s + n), p.slice(best, best + n))) best = s;
  return { start: best, end: best + n };
}

// The swarm's bottleneck: the highest pressure of any layer (its throughput limit relative to demand).
export function bottleneck(nLayers: number, holders: Supply[], demand?: number[]): number {
  return Math.max(...layerPressure(nLayers, holders, demand));
}

// How far one record's claims may stand from the swarm's median: a record's
// throughput and demand are what its node says of itself, so a liar (or a
// Sybil) claiming a thousand times the median is taken at CLAIM_SPREAD times it.
export const CLAIM_SPREAD = 4;

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[s.length >> 1] : 0;
}

// Each holder's claimed throughput clamped to [median / k, median * k] and its
// claimed demand to at most k times the median (IDLE_DEMAND at least).
// The median holds while fewer than half the records lie.
export function clampClaims(holders: Supply[], k = CLAIM_SPREAD): Supply[] {
  const tp = median(holders.map((h) => h.tokPerSec ?? 1)), dm = Math.max(IDLE_DEMAND, median(holders.map((h) => h.rowsPerSec ?? 0)));
  return holders.map((h) => ({
    ...h,
    tokPerSec: tp > 0 ? Math.min(tp * k, Math.max(tp / k, h.tokPerSec ?? 1)) : h.tokPerSec ?? 1,
    rowsPerSec: Math.min(dm * k, Math.max(0, h.rowsPerSec ?? 0)),
  }));
}

export interface MoveOptions {
  quality?: number; // the bottleneck must improve by more than 1/quality (default 0.75)
  // holders whose ranges count as cover for the layers it gives up: those it
  // checked itself (a record alone proves nothing; layer hashes can be copied).
  // Default: every holder.
  covers?: (id: string) => boolean;
}

// Rebalancing, decided by a node for itself: where it should move, or
// undefined to stay. It moves only if its old layers stay held by others it
// trusts to hold them (o.covers) and the swarm's bottleneck, from claims
// clamped to k times the median (clampClaims), improves by more than
// 1/quality (Petals' rule, quality 0.75), so nodes do not chase each other around.
export function planMove(nLayers: number, holdersIn: Supply[], self: string, maxLayers: number, o: MoveOptions = {}): LayerRange | undefined {
  const quality = o.quality ?? 0.75;
  const holders = clampClaims(holdersIn);
  const me = holders.find((h) => h.id === self);
  if (!me || me.ranges.length === 0) return undefined;
  const others = holders.filter((h) => h.id !== self);
  // demand stays with the layers: it is the swarm's traffic, whoever holds them
  const demand = layerDemand(nLayers, holders);
  const cover = o.covers ? others.filter((h) => o.covers!(h.id)) : others;
  if (me.ranges.some((r) => missingLayers(r.end, cover, r.start).length > 0)) return undefined; // it would leave a hole
  const held = me.ranges.reduce((a, r) => a + r.end - r.start, 0);
  const layersPerSec = (me.tokPerSec ?? 1) * held; // its speed, spread over its new range
  const target = chooseRange(nLayers, others, maxLayers, demand);
  if (me.ranges.length === 1 && me.ranges[0].start === target.start && me.ranges[0].end === target.end) return undefined;
  const moved = [...others, { id: self, ranges: [target], tokPerSec: layersPerSec / (target.end - target.start) }];
  return bottleneck(nLayers, moved, demand) < bottleneck(nLayers, holders, demand) * quality ? target : undefined;
}

// The rebalance timer's next wait: period times a random factor in [0.5, 1.5),
// so nodes started together do not all look (and move) at once.
export function jittered(periodMs: number, rand = Math.random): number {
  return Math.round(periodMs * (0.5 + rand()));
}

// Layers of `ranges` not in `minus`, as ranges.
export function subtractRanges(ranges: LayerRange[], minus: LayerRange[]): LayerRange[] {
  const out: LayerRange[] = [];
  for (const r of ranges) {
    let cur = [{ ...r }];
    for (const m of minus) cur = cur.flatMap((c) => (m.end <= c.start || c.end <= m.start ? [c] : [
      ...(c.start < m.start ? [{ start: c.start, end: m.start }] : []), ...(m.end < c.end ? [{ start: m.end, end: c.end }] : []),
    ]));
    out.push(...cur);
  }
  return out;
}

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

// For a node joining with --layers auto: the window of up to maxLayers layers
// that the swarm covers least (uncovered layers first, then the leftmost).
export function chooseRange(nLayers: number, holders: Holder[], maxLayers: number): LayerRange {
  const n = Math.max(1, Math.min(maxLayers, nLayers));
  const cover = new Array<number>(nLayers).fill(0);
  for (const h of holders) for (const r of h.ranges) for (let i = r.start; i < r.end && i < nLayers; i++) cover[i]++;
  let best = 0, bestScore = Infinity;
  for (let s = 0; s + n <= nLayers; s++) {
    // score: covered-layer count dominates, then total coverage
    let zeros = 0, sum = 0;
    for (let i = s; i < s + n; i++) (cover[i] === 0 && zeros++), (sum += cover[i]);
    const score = -zeros * 1e6 + sum;
    if (score < bestScore) (bestScore = score), (best = s);
  }
  return { start: best, end: best + n };
}

// Routes: a chain of serving nodes covering the remote layers, the cheapest
// by this gateway's own measurements (directory.measured: probe timings,
// round trips, its own sessions on each node), planned afresh for every new
// session and after every failure (placement.cheapestRoute). Nodes that
// failed steps recently (while still answering), and the nodes a session
// avoids, are left out whenever a route exists without them. When some
// layers are held by nobody usable, nodes are asked to load them (each node
// decides by its own policy). The loop goes on after every loss it finds,
// including nodes lost while loading, until there is a route or no node left
// can load what is missing. One coverage repair runs at a time for the whole
// gateway, so concurrent sessions do not ask for the same layers twice.

import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { LayerRange } from "../../model/config.js";
import { Logger } from "../log.js";
import { Holder, Stage, cheapestRoute, missingLayers } from "../placement.js";
import { request } from "../rpc.js";
import { Transport } from "../transport.js";
import { NodeDirectory } from "./directory.js";

export class Router {
  private repairing?: Promise<void>;
  constructor(
    private t: Transport,
    private dir: NodeDirectory,
    readonly span: LayerRange, // the layers served by nodes: [localLayers, nLayers - localTail)
    private log: Logger,
    private loadTimeoutMs: number,
  ) {}

  private usable(avoid?: ReadonlySet<string>): Holder[] {
    return this.dir.holders().filter((h) => !avoid?.has(h.id) && this.dir.failures(this.dir.get(h.id)!) === 0);
  }

  // The cheapest route for a step of `rows` rows, through nodes in good standing
  // (clean), or through any serving node (failures priced in heavily).
  // cuts: the stage boundaries a route must have (strict mode over a rounded wire).
  private cheapest(rows: number, clean: boolean, avoid?: ReadonlySet<string>, cuts?: readonly number[]): Stage[] | undefined {
    const nodes = this.dir.serving().filter((n) => !clean || (!avoid?.has(n.record.peer) && this.dir.failures(n) === 0));
    return cheapestRoute(this.span.end, this.dir.measured(nodes), this.span.start, rows, cuts)?.stages;
  }

  // The best route: without suspects if possible, else with them.
  plan(avoid?: ReadonlySet<string>, rows = 1): Stage[] | undefined {
    return this.cheapest(rows, true, avoid) ?? this.cheapest(rows, false);
  }

  // Layers no serving node holds.
  missing(): LayerRange[] {
    return missingLayers(this.span.end, this.dir.holders(), this.span.start);
  }

  // rows: the first step's rows (a long prompt weighs link throughput, one row latency).
  async route(signal?: AbortSignal, avoid?: ReadonlySet<string>, rows = 1, cuts?: readonly number[]): Promise<Stage[]> {
    for (let repaired = false; ; repaired = true) {
      throwIfAborted(signal);
      const clean = this.cheapest(rows, true, avoid, cuts);
      if (clean) return clean;
      if (this.repairing) {
        await this.repairing.catch(() => {});
        continue;
      }
      if (!repaired) {
        // have nodes in good standing load what only suspects (or nobody) hold
        this.repairing = this.repair(signal, avoid);
        try {
          await this.repairing;
        } finally {
          this.repairing = undefined;
        }
        continue;
      }
      const any = this.cheapest(rows, false, undefined, cuts);
      if (any) return any; // only through nodes that failed before: better than nothing
      if (cuts) throw new LayerswarmError("NO_ROUTE", `no route through the swarm with stage boundaries at layers ${cuts.join(", ")}`);
      const gaps = this.missing().map((g) => `[${g.start}, ${g.end})`).join(" ");
      throw new LayerswarmError("NO_ROUTE", `no route through the swarm: layers ${gaps} are held by no serving node and none could load them`);
    }
  }

  // Ask nodes to load each range the usable nodes lack; recompute the gaps
  // after every attempt (a node may die while loading) until none is left,
  // nobody can, or 8 nodes were asked (each may take loadTimeoutMs).
  private async repair(signal?: AbortSignal, avoid?: ReadonlySet<string>): Promise<void> {
    const refused = new Set<string>(); // "peer gap" pairs that failed: not asked again in this repair
    for (let asked = 0; asked < 8; asked++) {
      throwIfAborted(signal);
      const gap = missingLayers(this.span.end, this.usable(avoid), this.span.start)[0];
      if (!gap) return;
      const key = (p: string) => `${p} ${gap.start}:${gap.end}`;
      const candidates = this.dir.serving().filter((n) => !refused.has(key(n.record.peer)) && !avoid?.has(n.record.peer) && this.dir.failures(n) === 0)
        .sort((a, b) => b.record.capacity.freeBytes - a.record.capacity.freeBytes);
      const c = candidates[0];
      if (!c) return;
      try {
        const m = await request(this.t, c.record.peer, c.record.addrs, { type: "load", start: gap.start, end: gap.end }, this.loadTimeoutMs, signal);
        if (m.type !== "record") throw new LayerswarmError("BAD_MESSAGE", `answered "load" with "${m.type}"`);
        this.dir.update(c.record.peer, m.record);
        if (!m.record.ranges.some((r) => r.start <= gap.start && gap.end <= r.end)) throw new LayerswarmError("BAD_MESSAGE", "said it loaded the layers but does not list them");
        this.dir.emit({ type: "node-loaded", peer: c.record.peer, ranges: m.record.ranges });
      } catch (e) {
        refused.add(key(c.record.peer));
        const code = (e as LayerswarmError).code;
        if (code === "UNREACHABLE") this.dir.lose(c.record.peer, `unreachable while loading: ${(e as Error).message}`);
        else if (code === "BAD_MESSAGE") this.dir.ban(c.record.peer, (e as Error).message);
        this.log("warn", "load failed", { peer: c.record.peer, start: gap.start, end: gap.end, error: (e as Error).message });
      }
    }
  }
}

// Routes: a chain of serving nodes covering the remote layers. When some
// layers are held by nobody, nodes with free memory are asked to load them
// (each node decides by its own policy). The loop goes on after every loss it
// finds, including nodes lost while loading, until there is a route or no
// node left can load what is missing. One coverage repair runs at a time for
// the whole gateway, so concurrent sessions do not ask for the same layers twice.

import { LayerswarmError, throwIfAborted } from "../../errors.js";
import { LayerRange } from "../../model/config.js";
import { Logger } from "../log.js";
import { Stage, missingLayers, planRoute } from "../placement.js";
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

  plan(): Stage[] | undefined {
    return planRoute(this.span.end, this.dir.holders(), this.span.start);
  }

  missing(): LayerRange[] {
    return missingLayers(this.span.end, this.dir.holders(), this.span.start);
  }

  async route(signal?: AbortSignal): Promise<Stage[]> {
    for (;;) {
      throwIfAborted(signal);
      const r = this.plan();
      if (r) return r;
      if (this.repairing) {
        await this.repairing.catch(() => {});
        continue;
      }
      this.repairing = this.repair(signal);
      try {
        await this.repairing;
      } finally {
        this.repairing = undefined;
      }
      const again = this.plan();
      if (again) return again;
      const gaps = this.missing().map((g) => `[${g.start}, ${g.end})`).join(" ");
      throw new LayerswarmError("NO_ROUTE", `no route through the swarm: layers ${gaps} are held by no serving node and none could load them`);
    }
  }

  // Ask nodes to load each missing range; recompute the gaps after every
  // attempt (a node may die while loading) until none is left or nobody can.
  private async repair(signal?: AbortSignal): Promise<void> {
    const refused = new Set<string>(); // "peer gap" pairs that failed: not asked again in this repair
    for (;;) {
      throwIfAborted(signal);
      const gap = this.missing()[0];
      if (!gap) return;
      const key = (p: string) => `${p} ${gap.start}:${gap.end}`;
      const candidates = this.dir.serving().filter((n) => !refused.has(key(n.record.peer))).sort((a, b) => b.record.capacity.freeBytes - a.record.capacity.freeBytes);
      if (candidates.length === 0) return;
      const c = candidates[0];
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

// What the dashboard, `layerswarm status` and Prometheus see: a snapshot of
// the swarm (GET /v1/swarm), a live event stream (GET /v1/swarm/events, server-
// sent events), and counters and histograms (GET /metrics).
//
// GET /v1/swarm returns
//   { model: {name, layers, dim, vocab, context},
//     nodes: [{peer, name, addrs, ranges: [{start, end}], state: "loading"|"serving"|"lost",
//              loading?: {layers, of, bytes, totalBytes}, memory: {freeBytes, kvUsedBytes, kvBudgetBytes},
//              layersPerSec, rttMs (gateway round trip), reach ("direct" | "relayed" | "hole-punched": how the gateway reaches it now), links: [{peer, rttMs}] (round trips to the
//              nodes it sends to), batchMs, sessions, since}],
//     coverage: {covered, missing: [{start, end}], perLayer: [count of serving nodes holding layer i]},
//     sessions: [{id, epoch, positions, route: [{peer, start, end}], inflight: [{pos, T, stage, ms}], decoded, tokPerSec, ageMs}],
//     totals: {tokens, requests, errors, activeRequests, tokPerSec, verify: {mode, audits, clean, bans, strictSteps, disagreements, ...}, speculation: {drafted, accepted}},
//     series: [{t, tokPerSec, ttftMs}] (5-second buckets, last 10 minutes),
//     events: [{t, type, ...}] (the last 100) }
// GET /v1/swarm/events sends "snapshot" events (the object above, every second)
// and "swarm" events (node-joined, node-lost, node-loaded, reroute, replay) as they happen.
// GET /metrics is Prometheus text from prom-client: the metrics below, and the
// process's own (process_*, nodejs_*).

import type { Context } from "hono";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { GatewayView, SwarmEvent } from "../swarm/gateway/index.js";
import { EventStream, eventStream, json } from "./http.js";
import { speculationStats } from "../model/model.js";

const BUCKET_MS = 5000;
const KEEP_BUCKETS = 120;
const STEP_BUCKETS_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];
const MAX_PEERS = 1024; // step histograms kept (a peer is a label value: bounded)
const MAX_BACKLOG_BYTES = 4 * 2 ** 20; // an event listener this far behind is cut off

// process_* and nodejs_* metrics: one set per process, however many monitors.
let processMetrics: Registry | undefined;
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}

const finite = (v: number) => (Number.isFinite(v) ? v : 0); // numbers a peer reports may be anything

export class SwarmMonitor {
  tokens = 0;
  requests = new Map<string, number>();
  errors = new Map<number, number>();
  activeRequests = 0;
  private buckets: { t: number; tokens: number; ttftSum: number; ttftN: number }[] = [];
  private events: (SwarmEvent & { t: number })[] = [];
  private clients = new Set<EventStream>();
  private timer: NodeJS.Timeout;
  private stopPoll: () => void;
  private registry = new Registry();
  private m: ReturnType<SwarmMonitor["defineMetrics"]>;

  constructor(private gw: GatewayView) {
    this.m = this.defineMetrics();
    // listeners and timers are guarded: nothing a peer reports may throw out of them
    gw.events.on("event", (e: SwarmEvent & { t: number }) => {
      this.events.push(e);
      if (this.events.length > 100) this.events.shift();
      this.guard(() => this.broadcast("swarm", e));
    });
    gw.events.on("batch", (b: { peer: string; ms: number }) => this.guard(() => {
      const peers = this.m.stepPeers;
      if (!peers.has(b.peer) && peers.size >= MAX_PEERS) return;
      peers.add(b.peer);
      this.m.step.observe({ peer: String(b.peer) }, finite(b.ms) / 1000);
    }));
    this.stopPoll = gw.poll(2000);
    this.timer = setInterval(() => this.guard(() => this.broadcast("snapshot", this.snapshot())), 1000);
    this.timer.unref();
  }

  private defineMetrics() {
    const registers = [this.registry];
    const gw = this.gw, mon = this;
    const perNode = (name: string, help: string, value: (n: ReturnType<GatewayView["nodes"]>[number]) => number) =>
      new Gauge({
        name, help, labelNames: ["peer"], registers,
        collect() {
          this.reset();
          for (const n of gw.nodes()) this.set({ peer: String(n.peer) }, finite(value(n)));
        },
      });
    return {
      tokens: new Counter({ name: "layerswarm_tokens_generated_total", help: "Tokens generated for API requests.", registers }),
      requests: new Counter({ name: "layerswarm_requests_total", help: "API completion requests by endpoint.", labelNames: ["endpoint"], registers }),
      errors: new Counter({ name: "layerswarm_errors_total", help: "API errors by HTTP status.", labelNames: ["status"], registers }),
      active: new Gauge({ name: "layerswarm_active_requests", help: "Completion requests in progress.", registers, collect() { this.set(mon.activeRequests); } }),
      nodeUp: perNode("layerswarm_node_up", "1 when the node is serving.", (n) => (n.state === "lost" ? 0 : 1)),
      kv: perNode("layerswarm_node_kv_bytes", "KV cache memory in use on the node.", (n) => n.memory.kvUsedBytes),
      kvBudget: perNode("layerswarm_node_kv_budget_bytes", "KV cache memory the node may use.", (n) => n.memory.kvBudgetBytes),
      step: new Histogram({ name: "layerswarm_node_step_seconds", help: "Time a node spends on one batched step of its layers.", labelNames: ["peer"], buckets: STEP_BUCKETS_S, registers }),
      stepPeers: new Set<string>(),
      sessions: new Gauge({ name: "layerswarm_sessions", help: "Sessions with KV caches in the swarm.", registers, collect() { this.set(finite(gw.totals().sessions)); } }),
      bans: new Counter({
        name: "layerswarm_node_bans_total", help: "Nodes banned for computing or signing wrong (audits, strict mode, fraud proofs).", registers,
        collect() {
          this.reset();
          this.inc(Math.max(0, finite(gw.totals().verify?.bans ?? 0)));
        },
      }),
      audits: new Counter({
        name: "layerswarm_audits_total", help: "Sessions (routes) audited by exact recomputation, by verdict.", labelNames: ["verdict"], registers,
        collect() {
          this.reset();
          const v = gw.totals().verify;
          if (!v) return;
          this.inc({ verdict: "clean" }, finite(v.clean));
          this.inc({ verdict: "unverified" }, finite(v.unverified));
          this.inc({ verdict: "banned" }, Math.max(0, finite(v.audits - v.clean - v.unverified)));
        },
      }),
      // speculation: what every generate() of this process drafted and how much of it the model confirmed
      specDrafted: new Counter({
        name: "layerswarm_spec_drafted_tokens_total", help: "Tokens drafted for speculative decoding (prompt lookup) and sent for verification.", registers,
        collect() {
          this.reset();
          this.inc(speculationStats.drafted);
        },
      }),
      specAccepted: new Counter({
        name: "layerswarm_spec_accepted_tokens_total", help: "Drafted tokens the model confirmed (each saved one trip through the route).", registers,
        collect() {
          this.reset();
          this.inc(speculationStats.accepted);
        },
      }),
      reroutes: new Counter({
        name: "layerswarm_reroutes_total", help: "Sessions moved to a new route after a failure.", registers,
        collect() {
          this.reset();
          this.inc(Math.max(0, finite(gw.totals().recoveries)));
        },
      }),
    };
  }

  private guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      process.stderr.write(JSON.stringify({ level: "error", scope: "monitor", event: "snapshot failed", error: (e as Error).message }) + "\n");
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.stopPoll();
    for (const c of this.clients) c.cut();
  }

  private bucket() {
    const t = Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS;
    let b = this.buckets[this.buckets.length - 1];
    if (!b || b.t !== t) {
      b = { t, tokens: 0, ttftSum: 0, ttftN: 0 };
      this.buckets.push(b);
      if (this.buckets.length > KEEP_BUCKETS) this.buckets.shift();
    }
    return b;
  }

  // hooks for the API server
  onRequest = (kind: string) => {
    this.requests.set(kind, (this.requests.get(kind) ?? 0) + 1);
    this.m.requests.inc({ endpoint: kind });
  };
  onTokens = (n: number) => {
    this.tokens += n;
    this.bucket().tokens += n;
    this.m.tokens.inc(n);
  };
  onFirstToken = (ms: number) => {
    const b = this.bucket();
    b.ttftSum += ms;
    b.ttftN++;
  };
  onError = (status: number) => {
    this.errors.set(status, (this.errors.get(status) ?? 0) + 1);
    this.m.errors.inc({ status: String(status) });
  };

  snapshot() {
    const now = Date.now();
    const recent = this.buckets.filter((b) => now - b.t < 10_000);
    const tokPerSec = recent.length ? recent.reduce((a, b) => a + b.tokens, 0) / ((now - recent[0].t) / 1000 || 1) : 0;
    return {
      model: this.gw.model,
      local: this.gw.local,
      nodes: this.gw.nodes(),
      coverage: this.gw.coverage(),
      sessions: this.gw.sessions(),
      totals: {
        tokens: this.tokens,
        requests: [...this.requests.values()].reduce((a, b) => a + b, 0),
        errors: [...this.errors.values()].reduce((a, b) => a + b, 0),
        activeRequests: this.activeRequests,
        tokPerSec: Math.round(tokPerSec * 10) / 10,
        verify: this.gw.totals().verify, // mode, audits, bans, strict steps and disagreements (gateway/verify.ts)
        speculation: this.gw.totals().speculation, // tokens drafted and accepted (model.ts generate)
      },
      series: this.buckets.map((b) => ({ t: b.t, tokPerSec: Math.round((b.tokens / (BUCKET_MS / 1000)) * 10) / 10, ttftMs: b.ttftN ? Math.round(b.ttftSum / b.ttftN) : null })),
      events: this.events,
    };
  }

  // Every listener gets the event without waiting on any of them; a listener
  // that stopped reading is cut off rather than buffered without end.
  private broadcast(event: string, data: unknown): void {
    for (const c of this.clients) {
      if (c.backlogBytes > MAX_BACKLOG_BYTES) {
        this.clients.delete(c);
        c.cut();
      } else void c.send(data, event);
    }
  }

  get clientCount(): number {
    return this.clients.size;
  }

  // Prometheus text format 0.0.4
  async metrics(): Promise<string> {
    return (await processRegistry().metrics()) + (await this.registry.metrics());
  }

  // The routes this monitor serves (the API server asks for the key on them).
  routes(): Record<string, (c: Context) => Response | Promise<Response>> {
    return {
      "/v1/swarm": () => json(200, this.snapshot()),
      "/v1/swarm/events": (c) => eventStream(c, async (out) => {
        this.clients.add(out);
        try {
          await out.send(this.snapshot(), "snapshot");
          if (!out.signal.aborted) await new Promise((r) => out.signal.addEventListener("abort", r, { once: true }));
        } finally {
          this.clients.delete(out);
        }
      }),
      "/metrics": async () => new Response(await this.metrics(), { status: 200, headers: { "content-type": this.registry.contentType } }),
    };
  }
}

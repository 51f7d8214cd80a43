// What the dashboard, `layerswarm status` and Prometheus see: a snapshot of
// the swarm (GET /v1/swarm), a live event stream (GET /v1/swarm/events, server-
// sent events), and counters and histograms (GET /metrics).
//
// GET /v1/swarm returns
//   { model: {name, layers, dim, vocab, context},
//     nodes: [{peer, name, addrs, ranges: [{start, end}], state: "loading"|"serving"|"lost",
//              loading?: {layers, of, bytes, totalBytes}, memory: {freeBytes, kvUsedBytes, kvBudgetBytes},
//              layersPerSec, rttMs (gateway round trip), links: [{peer, rttMs}] (round trips to the
//              nodes it sends to), batchMs, sessions, since}],
//     coverage: {covered, missing: [{start, end}], perLayer: [count of serving nodes holding layer i]},
//     sessions: [{id, epoch, positions, route: [{peer, start, end}], inflight: [{pos, T, stage, ms}], decoded, tokPerSec, ageMs}],
//     totals: {tokens, requests, errors, activeRequests, tokPerSec},
//     series: [{t, tokPerSec, ttftMs}] (5-second buckets, last 10 minutes),
//     events: [{t, type, ...}] (the last 100) }
// GET /v1/swarm/events sends "snapshot" events (the object above, every second)
// and "swarm" events (node-joined, node-lost, node-loaded, reroute, replay) as they happen.

import * as http from "node:http";
import type { GatewayView, SwarmEvent } from "../swarm/gateway/index.js";

const BUCKET_MS = 5000;
const KEEP_BUCKETS = 120;
const LATENCY_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

class Histogram {
  counts = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  sum = 0;
  n = 0;
  observe(v: number) {
    let i = LATENCY_BUCKETS.findIndex((b) => v <= b);
    if (i < 0) i = LATENCY_BUCKETS.length;
    this.counts[i]++;
    this.sum += v;
    this.n++;
  }
}

export class SwarmMonitor {
  tokens = 0;
  requests = new Map<string, number>();
  errors = new Map<number, number>();
  activeRequests = 0;
  private buckets: { t: number; tokens: number; ttftSum: number; ttftN: number }[] = [];
  private events: (SwarmEvent & { t: number })[] = [];
  private stepLatency = new Map<string, Histogram>();
  private clients = new Set<http.ServerResponse>();
  private timer: NodeJS.Timeout;
  private stopPoll: () => void;

  constructor(private gw: GatewayView) {
    // listeners and timers are guarded: nothing a peer reports may throw out of them
    gw.events.on("event", (e: SwarmEvent & { t: number }) => {
      this.events.push(e);
      if (this.events.length > 100) this.events.shift();
      this.guard(() => this.broadcast("swarm", e));
    });
    gw.events.on("batch", (b: { peer: string; ms: number }) => {
      if (!this.stepLatency.has(b.peer) && this.stepLatency.size >= 1024) return;
      (this.stepLatency.get(b.peer) ?? this.stepLatency.set(b.peer, new Histogram()).get(b.peer)!).observe(b.ms);
    });
    this.stopPoll = gw.poll(2000);
    this.timer = setInterval(() => this.guard(() => this.broadcast("snapshot", this.snapshot())), 1000);
    this.timer.unref();
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
    for (const c of this.clients) c.end();
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
  };
  onTokens = (n: number) => {
    this.tokens += n;
    this.bucket().tokens += n;
  };
  onFirstToken = (ms: number) => {
    const b = this.bucket();
    b.ttftSum += ms;
    b.ttftN++;
  };
  onError = (status: number) => {
    this.errors.set(status, (this.errors.get(status) ?? 0) + 1);
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
      },
      series: this.buckets.map((b) => ({ t: b.t, tokPerSec: Math.round((b.tokens / (BUCKET_MS / 1000)) * 10) / 10, ttftMs: b.ttftN ? Math.round(b.ttftSum / b.ttftN) : null })),
      events: this.events,
    };
  }

  private broadcast(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    const msg = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const c of this.clients) {
      // a listener that stopped reading is cut off rather than buffered without end
      if (c.writableLength > 4 * 2 ** 20) {
        this.clients.delete(c);
        c.destroy();
      } else c.write(msg);
    }
  }

  // GET /v1/swarm/events
  events$ = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    res.write(`event: snapshot\ndata: ${JSON.stringify(this.snapshot())}\n\n`);
    this.clients.add(res);
    const drop = () => this.clients.delete(res);
    req.on("close", drop);
    res.on("close", drop);
    res.on("error", drop);
  };

  get clientCount(): number {
    return this.clients.size;
  }

  // GET /metrics (Prometheus text format 0.0.4)
  metrics(): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${Number.isFinite(v) ? v : 0}`);
    };
    const esc = (s: string) => s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
    metric("layerswarm_tokens_generated_total", "counter", "Tokens generated for API requests.", [["", this.tokens]]);
    metric("layerswarm_requests_total", "counter", "API completion requests by endpoint.", [...this.requests].map(([k, v]) => [`{endpoint="${esc(k)}"}`, v]));
    metric("layerswarm_errors_total", "counter", "API errors by HTTP status.", [...this.errors].map(([k, v]) => [`{status="${k}"}`, v]));
    metric("layerswarm_active_requests", "gauge", "Completion requests in progress.", [["", this.activeRequests]]);
    const nodes = this.gw.nodes();
    metric("layerswarm_node_up", "gauge", "1 when the node is serving.", nodes.map((n) => [`{peer="${esc(n.peer)}"}`, n.state === "lost" ? 0 : 1]));
    metric("layerswarm_node_kv_bytes", "gauge", "KV cache memory in use on the node.", nodes.map((n) => [`{peer="${esc(n.peer)}"}`, n.memory.kvUsedBytes]));
    metric("layerswarm_node_kv_budget_bytes", "gauge", "KV cache memory the node may use.", nodes.map((n) => [`{peer="${esc(n.peer)}"}`, n.memory.kvBudgetBytes]));
    out.push("# HELP layerswarm_node_step_seconds Time a node spends on one batched step of its layers.", "# TYPE layerswarm_node_step_seconds histogram");
    for (const [peer, h] of this.stepLatency) {
      let cum = 0;
      LATENCY_BUCKETS.forEach((b, i) => {
        cum += h.counts[i];
        out.push(`layerswarm_node_step_seconds_bucket{peer="${peer}",le="${b / 1000}"} ${cum}`);
      });
      out.push(`layerswarm_node_step_seconds_bucket{peer="${peer}",le="+Inf"} ${h.n}`);
      out.push(`layerswarm_node_step_seconds_sum{peer="${peer}"} ${h.sum / 1000}`);
      out.push(`layerswarm_node_step_seconds_count{peer="${peer}"} ${h.n}`);
    }
    const totals = this.gw.totals();
    metric("layerswarm_sessions", "gauge", "Sessions with KV caches in the swarm.", [["", totals.sessions]]);
    metric("layerswarm_reroutes_total", "counter", "Sessions moved to a new route after a failure.", [["", totals.recoveries]]);
    return out.join("\n") + "\n";
  }
}

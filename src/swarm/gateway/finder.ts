// Finding nodes without a coordinator: rounds of discovery. Each round lists
// the providers of the block keys of the layers this gateway needs and fetches
// every provider's record from it (survey.ts); a good record goes into the
// directory (and starts the node's TTL again), a record that names another
// peer or another model is ignored, and its sender is not asked again for a
// TTL. Rounds run every intervalMs, every fastMs while some layer has no holder.

import { LayerswarmError } from "../../errors.js";
import { Discovery } from "../discovery.js";
import { Logger } from "../log.js";
import { survey } from "../survey.js";
import { Transport } from "../transport.js";
import { NodeDirectory } from "./directory.js";

export interface FinderOptions {
  intervalMs: number;
  fastMs: number;
  ttlMs: number; // how long a refused peer is not asked again
  roundTimeoutMs?: number; // default 30 s
}

export class NodeFinder {
  private stopped = false;
  private ac = new AbortController();
  private wake?: () => void;
  private ignored = new Map<string, number>(); // peer -> until when it is not asked
  stats = { rounds: 0, found: 0, ignored: 0 };

  constructor(
    private t: Transport,
    private d: Discovery,
    private dir: NodeDirectory,
    private model: { layers: number; dim: number; fingerprint: string },
    private keys: Uint8Array[],
    private log: Logger,
    private o: FinderOptions,
    private covered: () => boolean,
  ) {}

  start(): void {
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await this.round().catch((e) => this.log("warn", "discovery round failed", { error: (e as Error).message }));
      if (this.stopped) return;
      await new Promise<void>((r) => {
        let covered = false;
        try {
          covered = this.covered();
        } catch { /* ask again soon */ }
        const timer = setTimeout(r, covered ? this.o.intervalMs : this.o.fastMs);
        timer.unref();
        this.wake = () => (clearTimeout(timer), r());
      });
      this.wake = undefined;
    }
  }

  // One round: every provider asked once; resolves when all have answered or the round times out.
  async round(): Promise<void> {
    const signal = AbortSignal.any([this.ac.signal, AbortSignal.timeout(this.o.roundTimeoutMs ?? 30_000)]);
    const now = Date.now();
    for (const [p, until] of this.ignored) if (until < now) this.ignored.delete(p);
    this.stats.rounds++;
    const { providers } = await survey(this.d, this.t, this.model, this.keys, {
      found: (f) => {
        try {
          this.dir.accept(f.record, f.record.peer, f.ip, "dht");
          this.dir.get(f.record.peer)!.rttMs = f.rttMs;
          this.stats.found++;
        } catch (e) {
          this.log("debug", "found node not taken", { peer: f.record.peer, error: (e as Error).message }); // not allowed here, or directory full
        }
      },
      refused: (peer, e) => this.refused(peer, e),
    }, { skip: (p) => this.ignored.has(p) || !this.dir.gate.allowed(p) }, signal); // never dial strangers an --allow list excludes
    this.log("debug", "discovery round", { providers, serving: this.dir.serving().length });
  }

  private refused(peer: string, e: LayerswarmError): void {
    if (e.code !== "BAD_MESSAGE") {
      // unreachable or slow: not refreshed (it expires unless it comes back), and not asked again for a minute
      this.ignored.set(peer, Date.now() + 60_000);
      if (this.ignored.size > 4096) this.ignored.delete(this.ignored.keys().next().value!);
      return;
    }
    this.stats.ignored++;
    this.ignored.set(peer, Date.now() + this.o.ttlMs);
    if (this.ignored.size > 4096) this.ignored.delete(this.ignored.keys().next().value!);
    this.log("warn", "ignored a record found through discovery", { peer, error: e.message.slice(0, 200) });
  }

  stop(): void {
    this.stopped = true;
    this.ac.abort();
    this.wake?.();
  }
}

// One outbound forward stream per peer, dialled on first use and redialled
// after a failure. A single stream per (sender, receiver) keeps each session's
// frames in order.

import { Logger } from "./log.js";
import { Channel, PROTOCOL_FORWARD, Transport } from "./transport.js";

export class Outbox {
  private out = new Map<string, Promise<Channel>>();
  readonly lastUsed = new Map<string, { addrs: string[]; at: number }>(); // peers sent to, and when
  constructor(private t: Transport, private log: Logger, private dialTimeoutMs = 10_000) {}

  // Resolves once the message is handed to the stream; rejects if the peer cannot be reached.
  send(peer: string, addrs: string[], msg: Uint8Array): Promise<void> {
    this.lastUsed.set(peer, { addrs, at: Date.now() });
    let ch = this.out.get(peer);
    if (!ch) {
      ch = this.dialAny(peer, addrs);
      this.out.set(peer, ch);
      ch.catch(() => this.out.delete(peer));
    }
    return ch.then((c) => c.send(msg)).catch((e) => {
      this.out.delete(peer);
      this.log("warn", "send failed", { peer, error: (e as Error).message });
      throw e;
    });
  }

  forget(peer: string): void {
    const ch = this.out.get(peer);
    this.out.delete(peer);
    ch?.then((c) => c.abort(new Error("peer forgotten"))).catch(() => {});
  }

  private async dialAny(peer: string, addrs: string[]): Promise<Channel> {
    let last: unknown;
    for (const a of addrs) {
      try {
        const full = a.includes("/p2p/") ? a : `${a}/p2p/${peer}`;
        const c = await this.t.dial(full, PROTOCOL_FORWARD, AbortSignal.timeout(this.dialTimeoutMs));
        void (async () => {
          // nothing comes back on this stream; draining it notices when it closes
          try { for await (const _ of c.messages()) void _; } catch { /* closed */ }
          this.out.delete(peer);
        })();
        return c;
      } catch (e) {
        last = e;
      }
    }
    throw new Error(`cannot reach ${peer}: ${(last as Error)?.message ?? "no address"}`);
  }
}

// One outbound steps stream per peer, dialled on first use and redialled
// after a failure. A single stream per (sender, receiver) keeps each session's
// frames in order.

import { LayerswarmError } from "../errors.js";
import { Logger } from "./log.js";
import { PROTOCOLS } from "./protocol/index.js";
import { Channel, Transport } from "./transport.js";

export class Outbox {
  private out = new Map<string, Promise<Channel>>();
  readonly lastUsed = new Map<string, { addrs: string[]; at: number }>(); // peers sent to, and when
  private unsent = new Map<string, number>(); // bytes handed to a peer's stream that it has not taken yet
  constructor(private t: Transport, private log: Logger, private dialTimeoutMs = 10_000, private maxUnsentBytes = 16 * 2 ** 20) {}

  unsentBytes(peer: string): number {
    return this.unsent.get(peer) ?? 0;
  }

  // Too much is waiting for this peer: produce nothing more for it until it reads.
  congested(peer: string): boolean {
    return (this.unsent.get(peer) ?? 0) >= this.maxUnsentBytes;
  }

  // Resolves once the message is handed to the stream; rejects if the peer cannot be reached.
  send(peer: string, addrs: string[], msg: Uint8Array): Promise<void> {
    this.lastUsed.set(peer, { addrs, at: Date.now() });
    if (this.lastUsed.size > 4096) this.lastUsed.delete(this.lastUsed.keys().next().value!);
    let ch = this.out.get(peer);
    if (!ch) {
      const p = this.dial(peer, addrs);
      ch = p.then((c) => {
        // nothing is expected back on this stream; reading it notices when it closes
        void (async () => {
          try {
            for await (const _ of c.messages()) void _;
          } catch { /* closed */ }
          if (this.out.get(peer) === ch) this.out.delete(peer);
        })();
        return c;
      });
      this.out.set(peer, ch);
      ch.catch(() => {
        if (this.out.get(peer) === ch) this.out.delete(peer);
      });
    }
    const used = ch;
    this.unsent.set(peer, (this.unsent.get(peer) ?? 0) + msg.length);
    const sent = () => {
      const n = (this.unsent.get(peer) ?? msg.length) - msg.length;
      if (n > 0) this.unsent.set(peer, n);
      else this.unsent.delete(peer);
    };
    return used.then((c) => c.send(msg)).then(sent, (e) => {
      sent();
      throw e;
    }).catch((e) => {
      if (this.out.get(peer) === used) this.out.delete(peer);
      this.log("debug", "send failed", { peer, error: (e as Error).message });
      throw e instanceof LayerswarmError ? e : new LayerswarmError("UNREACHABLE", `cannot send to ${peer.slice(-8)}: ${(e as Error).message}`);
    });
  }

  forget(peer: string): void {
    const ch = this.out.get(peer);
    this.out.delete(peer);
    ch?.then((c) => c.abort(new Error("peer forgotten"))).catch(() => {});
  }

  private dial(peer: string, addrs: string[]): Promise<Channel> {
    return this.t.dial(peer, addrs, PROTOCOLS.steps[PROTOCOLS.steps.length - 1], { maxMessageBytes: 64 * 1024, signal: AbortSignal.timeout(this.dialTimeoutMs) });
  }
}

// One outbound steps stream per peer, dialled on first use and redialled
// after a failure. A single stream per (sender, receiver) keeps each session's
// frames in order.

import { LayerswarmError } from "../errors.js";
import { Logger } from "./log.js";
import { PROTOCOLS } from "./protocol/index.js";
import { Channel, Transport } from "./transport.js";

// A peer's stream: dialled (or being dialled), and once open and no earlier
// message is still waiting for the dial, taken at once.
interface Link {
  ch: Promise<Channel>;
  open?: Channel; // set once every message sent before it was known to be open is handed over
  waiting: number; // messages handed over only once the dial resolves
}

export class Outbox {
  private out = new Map<string, Link>();
  readonly lastUsed = new Map<string, { addrs: string[]; at: number }>(); // peers sent to, and when
  private unsent = new Map<string, number>(); // bytes handed to a peer's stream that it has not taken yet
  private rates = new Map<string, number>(); // bytes per ms the stream to a peer took large messages at (smoothed)
  constructor(private t: Transport, private log: Logger, private dialTimeoutMs = 10_000, private maxUnsentBytes = 16 * 2 ** 20) {}

  unsentBytes(peer: string): number {
    return this.unsent.get(peer) ?? 0;
  }

  // Too much is waiting for this peer: produce nothing more for it until it reads.
  congested(peer: string): boolean {
    return (this.unsent.get(peer) ?? 0) >= this.maxUnsentBytes;
  }

  // How fast the stream to this peer takes large messages, in bytes per ms
  // (undefined until a message of 1 MiB or more went there). A stream holds
  // up to 1 MiB unsent before it pushes back, so a message's first MiB is not
  // counted; what a kernel socket buffer absorbs makes this an overestimate.
  bytesPerMs(peer: string): number | undefined {
    return this.rates.get(peer);
  }

  private measured(peer: string, bytes: number, ms: number): void {
    const r = bytes / Math.max(ms, 0.5);
    const old = this.rates.get(peer);
    this.rates.set(peer, old === undefined ? r : 0.7 * old + 0.3 * r);
    if (this.rates.size > 4096) this.rates.delete(this.rates.keys().next().value!);
  }

  // Resolves once the message is handed to the stream; rejects if the peer cannot be reached.
  // On an open stream the message is handed over in this turn, not a few
  // promise hops later: a step's bytes leave with the turn that made them.
  send(peer: string, addrs: string[], msg: Uint8Array): Promise<void> {
    this.lastUsed.set(peer, { addrs, at: Date.now() });
    if (this.lastUsed.size > 4096) this.lastUsed.delete(this.lastUsed.keys().next().value!);
    let link = this.out.get(peer);
    if (!link) {
      const l: Link = { ch: this.dial(peer, addrs).then((c) => {
        // nothing is expected back on this stream; reading it notices when it closes
        void (async () => {
          try {
            for await (const _ of c.messages()) void _;
          } catch { /* closed */ }
          if (this.out.get(peer) === l) this.out.delete(peer);
        })();
        return c;
      }), waiting: 0 };
      l.ch.catch(() => {
        if (this.out.get(peer) === l) this.out.delete(peer);
      });
      this.out.set(peer, (link = l));
    }
    const used = link;
    this.unsent.set(peer, (this.unsent.get(peer) ?? 0) + msg.length);
    const sent = () => {
      const n = (this.unsent.get(peer) ?? msg.length) - msg.length;
      if (n > 0) this.unsent.set(peer, n);
      else this.unsent.delete(peer);
    };
    const give = (c: Channel): Promise<void> => {
      if (msg.length < 2 * 2 ** 20) return c.send(msg);
      const t0 = performance.now();
      return c.send(msg).then(() => this.measured(peer, msg.length - 2 ** 20, performance.now() - t0));
    };
    let handed: Promise<void>;
    if (used.open && !used.open.closed) handed = give(used.open);
    else {
      // after the dial, in order: callbacks on one promise run in the order they were added
      used.waiting++;
      handed = used.ch.then((c) => {
        if (--used.waiting === 0) used.open = c;
        return give(c);
      }, (e) => {
        used.waiting--;
        throw e;
      });
    }
    return handed.then(sent, (e) => {
      sent();
      throw e;
    }).catch((e) => {
      if (this.out.get(peer) === used) this.out.delete(peer);
      this.log("debug", "send failed", { peer, error: (e as Error).message });
      throw e instanceof LayerswarmError ? e : new LayerswarmError("UNREACHABLE", `cannot send to ${peer.slice(-8)}: ${(e as Error).message}`);
    });
  }

  forget(peer: string): void {
    const l = this.out.get(peer);
    this.out.delete(peer);
    l?.ch.then((c) => c.abort(new Error("peer forgotten"))).catch(() => {});
  }

  private dial(peer: string, addrs: string[]): Promise<Channel> {
    return this.t.dial(peer, addrs, PROTOCOLS.steps[PROTOCOLS.steps.length - 1], { maxMessageBytes: 64 * 1024, signal: AbortSignal.timeout(this.dialTimeoutMs) });
  }
}

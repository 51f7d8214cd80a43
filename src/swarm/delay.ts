// For benchmarks and tests only: a transport whose outgoing messages arrive
// `ms` later, in order. This machine's kernel has no netem, so link latency
// between processes is added here, in user space.

import { Channel, Transport } from "./transport.js";

class DelayedChannel implements Channel {
  constructor(private inner: Channel, private ms: number) {}
  get remotePeer() { return this.inner.remotePeer; }
  get closed() { return this.inner.closed; }
  send(msg: Uint8Array): Promise<void> {
    // equal delays fire in the order they were set: messages keep their order
    setTimeout(() => void this.inner.send(msg).catch(() => {}), this.ms);
    return Promise.resolve();
  }
  messages() { return this.inner.messages(); }
  close() { return this.inner.close(); }
  abort(e: Error) { this.inner.abort(e); }
}

export class DelayedTransport implements Transport {
  constructor(private inner: Transport, private ms: number) {}
  get peerId() { return this.inner.peerId; }
  addrs() { return this.inner.addrs(); }
  handle(p: string, h: (ch: Channel) => void) { return this.inner.handle(p, h); }
  async dial(addr: string, protocol: string, signal?: AbortSignal): Promise<Channel> {
    return new DelayedChannel(await this.inner.dial(addr, protocol, signal), this.ms);
  }
  onDisconnect(cb: (peer: string) => void) { this.inner.onDisconnect(cb); }
  async ping(addr: string, signal?: AbortSignal) { return (await this.inner.ping(addr, signal)) + 2 * this.ms; }
  stop() { return this.inner.stop(); }
}

export function withLinkDelay(t: Transport): Transport {
  const ms = Number(process.env.LAYERSWARM_LINK_DELAY_MS ?? 0);
  return ms > 0 ? new DelayedTransport(t, ms) : t;
}

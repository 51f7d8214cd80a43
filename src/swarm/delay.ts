// For benchmarks and tests only: a transport whose outgoing messages arrive
// `ms` later, in order. This machine's kernel has no netem, so link latency
// between processes is added here, in user space.

import { Channel, DialOptions, HandleOptions, Transport } from "./transport.js";

class DelayedChannel implements Channel {
  constructor(private inner: Channel, private ms: number) {}
  get remotePeer() { return this.inner.remotePeer; }
  get remoteIp() { return this.inner.remoteIp; }
  get closed() { return this.inner.closed; }
  get reach() { return this.inner.reach; }
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
  handle(p: readonly string[], h: (ch: Channel) => void, o: HandleOptions) { return this.inner.handle(p, h, o); }
  async dial(peer: string, addrs: string[], protocol: string, o: DialOptions): Promise<Channel> {
    return new DelayedChannel(await this.inner.dial(peer, addrs, protocol, o), this.ms);
  }
  onDisconnect(cb: (peer: string) => void) { this.inner.onDisconnect(cb); }
  onInterrupt(cb: (peer: string) => void) { this.inner.onInterrupt?.(cb); }
  reach(peer: string) { return this.inner.reach?.(peer); }
  hangUp(peer: string) { return this.inner.hangUp(peer); }
  async ping(peer: string, addrs: string[], signal?: AbortSignal) { return (await this.inner.ping(peer, addrs, signal)) + 2 * this.ms; }
  stop() { return this.inner.stop(); }
}

export function withLinkDelay(t: Transport): Transport {
  const ms = Number(process.env.LAYERSWARM_LINK_DELAY_MS ?? 0);
  return ms > 0 ? new DelayedTransport(t, ms) : t;
}

// The transport seen by the swarm: authenticated peers exchanging whole
// messages over named protocols. libp2p.ts implements it over js-libp2p (TCP,
// Noise, Yamux); anything else that passes transport.test.ts's suite may too.

export interface Channel {
  readonly remotePeer: string;
  // Queue one message; resolves when the stream can take more (backpressure).
  send(msg: Uint8Array, signal?: AbortSignal): Promise<void>;
  // Messages as they arrive; ends when the stream closes. Iterate once.
  messages(): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
  abort(err: Error): void;
  readonly closed: boolean;
}

export interface Transport {
  readonly peerId: string;
  addrs(): string[];
  handle(protocol: string, handler: (ch: Channel) => void): Promise<void>;
  dial(addr: string, protocol: string, signal?: AbortSignal): Promise<Channel>;
  // peer: a peer id; called when the last connection to it closes
  onDisconnect(cb: (peer: string) => void): void;
  // Round-trip time to a peer in milliseconds (addr: a multiaddr with /p2p/).
  ping(addr: string, signal?: AbortSignal): Promise<number>;
  stop(): Promise<void>;
}

export const PROTOCOL_CONTROL = "/layerswarm/control/1";
export const PROTOCOL_FORWARD = "/layerswarm/forward/1";

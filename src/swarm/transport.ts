// The transport seen by the swarm: authenticated peers exchanging whole
// messages over named protocols. libp2p.ts implements it over js-libp2p (TCP,
// Noise, Yamux) and memory.ts in memory for fast tests; both pass the suite in
// transport.test.ts.

// How a peer is reached: a direct connection; a circuit through a relay
// (circuit relay v2, the peer is behind a NAT); or a direct connection that
// DCUtR made from a relayed one (hole punching, or the NATed side dialling out).
export type Reach = "direct" | "relayed" | "hole-punched";

export interface Channel {
  readonly remotePeer: string; // authenticated: the key behind it proved itself
  readonly remoteIp: string; // where the peer connects from, for limits per address
  readonly reach: Reach; // over what this stream runs (fixed when it opened)
  // Queue one message; resolves when the stream can take more (backpressure).
  send(msg: Uint8Array, signal?: AbortSignal): Promise<void>;
  // Messages as they arrive; ends when the stream closes. Iterate once. A
  // message not yet taken holds the sender back (nothing is buffered without
  // bound); one over the stream's size limit aborts the stream.
  messages(): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
  abort(err: Error): void;
  readonly closed: boolean;
}

export interface HandleOptions {
  maxMessageBytes: number;
  maxStreamsPerConnection: number; // inbound streams of this protocol open at once, per connection
}

export interface DialOptions {
  maxMessageBytes: number; // for messages coming back on this stream
  signal?: AbortSignal;
}

// Who may connect at all; consulted for every inbound and outbound connection.
export interface ConnectionGate {
  allowPeer(peer: string): boolean;
  allowIp(ip: string): boolean; // e.g. connections per address
}

export interface Transport {
  readonly peerId: string;
  addrs(): string[];
  handle(protocols: readonly string[], handler: (ch: Channel) => void, o: HandleOptions): Promise<void>;
  // addrs: where the peer may be reached (multiaddrs, with or without /p2p/)
  dial(peer: string, addrs: string[], protocol: string, o: DialOptions): Promise<Channel>;
  onDisconnect(cb: (peer: string) => void): void;
  // The connection to a peer broke but the peer was reached again at once (a
  // relay cut a circuit at its limit): streams on the old one are gone, the peer is not.
  onInterrupt?(cb: (peer: string) => void): void;
  // How a peer is reached now (its best open connection), if connected. For
  // views and tests: not on the step path.
  reach?(peer: string): Reach | undefined;
  // Hang up on a peer (a misbehaving one; the gate keeps it out afterwards).
  hangUp(peer: string): Promise<void>;
  // Round-trip time to a peer in milliseconds.
  ping(peer: string, addrs: string[], signal?: AbortSignal): Promise<number>;
  stop(): Promise<void>;
}

// Discovery as the swarm sees it: a peer announces itself as a provider of
// keys, and anyone can list the providers of a key. libp2p.ts implements it
// over the swarm's Kad-DHT and memory.ts in memory for fast tests; both pass
// the suite in discovery.test.ts. A provider is only a pointer ("ask me"):
// what it serves is fetched from it directly and checked (survey.ts).

export interface Provider {
  peer: string;
  addrs: string[]; // where it said it listens (may be empty: then it is looked up by peer id)
}

export interface Discovery {
  // List this peer as a provider of these keys, now (a record lasts
  // DHT_VALIDITY_MS: call again to refresh). Rejects when no peer of the swarm
  // could be told.
  provide(keys: Uint8Array[], signal?: AbortSignal): Promise<void>;
  // The providers of a key, each at most once, as they are found.
  find(key: Uint8Array, signal?: AbortSignal): AsyncIterable<Provider>;
  // Stop listing this peer as a provider of these keys, as far as it can: its
  // own records at once; copies held by other peers lapse with DHT_VALIDITY_MS
  // (a finder that asks the peer meanwhile hears that it drains, or nothing).
  withdraw?(keys: Uint8Array[], signal?: AbortSignal): Promise<void>;
}

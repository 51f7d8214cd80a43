// A model's manifest from the peers that serve it, for a process that holds
// only part of the file (a URL model) and knows which model it wants: the
// model id is a hash over the manifest (format/manifest.ts), so a manifest
// from anyone is checked completely against an id from someone trusted (the
// model's publisher, a friend, an earlier run). Without such an id nothing a
// peer sends could be checked beyond the few tensors held here, so nothing is
// asked: the file is streamed once instead (cli/model.ts).

import { throwIfAborted } from "../errors.js";
import { Manifest, manifestId } from "../format/manifest.js";
import { Discovery } from "./discovery.js";
import { Logger } from "./log.js";
import { exchange } from "./rpc.js";
import { Transport } from "./transport.js";

export interface FromPeersOptions {
  timeoutMs?: number; // give up after this long (default 30 s): the DHT may be empty, or nobody has it
  askTimeoutMs?: number; // one peer's answer (default 5 s)
  signal?: AbortSignal;
  log?: Logger;
}

// Asks the providers of these keys (each peer once) for their manifest until
// one whose id is modelId arrives; undefined when none did in time.
export async function manifestFromPeers(d: Discovery, t: Transport, keys: Uint8Array[], modelId: string, o: FromPeersOptions = {}): Promise<{ manifest: Manifest; from: string } | undefined> {
  const signal = AbortSignal.any([...(o.signal ? [o.signal] : []), AbortSignal.timeout(o.timeoutMs ?? 30_000)]);
  const asked = new Set<string>([t.peerId]);
  while (!signal.aborted) {
    for (const key of keys) {
      try {
        for await (const p of d.find(key, signal)) {
          if (asked.has(p.peer)) continue;
          asked.add(p.peer);
          try {
            const { res } = await exchange(t, p.peer, p.addrs, { type: "manifest" }, o.askTimeoutMs ?? 5000, signal);
            if (res.type !== "manifest") continue; // it has none (a partial file itself), or an older peer
            const id = manifestId(res.manifest);
            if (id === modelId) return { manifest: res.manifest, from: p.peer };
            o.log?.("warn", "a peer's manifest is of another model", { peer: p.peer, its: id, wanted: modelId });
          } catch {
            // unreachable or slow: the next provider
          }
        }
      } catch {
        // a lookup cut short: the next key, then another round
      }
    }
    try {
      throwIfAborted(signal);
      await new Promise<void>((res, rej) => {
        // the listener goes with its round: the signal lives for every round (30 s), and a listener left per round piled up
        const onAbort = () => (clearTimeout(timer), rej(signal.reason));
        const timer = setTimeout(() => (signal.removeEventListener("abort", onAbort), res()), 1000);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    } catch {
      break;
    }
  }
  return undefined;
}

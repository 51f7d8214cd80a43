// Who serves a model's layers, found without a coordinator: the providers of
// the model's block keys (discovery.ts), each asked for its record directly
// with the `info` control request (over the connection that authenticates it),
// the record checked against the model. A record that names another peer or
// another model is refused and never used. Gateways run this every few
// seconds (gateway/finder.ts); a node with --layers auto runs it once.

import { LayerswarmError, codeOf } from "../errors.js";
import { Discovery, Provider } from "./discovery.js";
import { NodeRecord, checkRecord } from "./protocol/index.js";
import { exchange } from "./rpc.js";
import { Transport } from "./transport.js";

export interface SurveyOptions {
  maxProvidersPerKey?: number; // providers taken from one key's list (default 64)
  concurrency?: number; // info requests at once (default 16)
  infoTimeoutMs?: number; // default 3000
  skip?: (peer: string) => boolean; // peers not to ask (e.g. refused recently)
}

export interface Found {
  record: NodeRecord;
  ip: string; // where it answered from
  rttMs: number; // the info request's round trip
}

export interface SurveyHandlers {
  found(f: Found): void;
  refused(peer: string, e: LayerswarmError): void; // answered with a record we cannot use, or not at all
}

type Model = { layers: number; dim: number; fingerprint: string };

// Ask every provider of these keys (each peer once) for its record. Resolves
// when the lists are exhausted or the signal aborts, and every request asked has settled.
export async function survey(d: Discovery, t: Transport, model: Model, keys: Uint8Array[], on: SurveyHandlers, o: SurveyOptions = {}, signal?: AbortSignal): Promise<{ providers: number }> {
  const seen = new Set<string>([t.peerId]);
  const asks: Promise<void>[] = [];
  const limit = pool(o.concurrency ?? 16);
  const ask = async (p: Provider): Promise<void> => {
    const t0 = performance.now();
    try {
      const { res, from } = await exchange(t, p.peer, p.addrs, { type: "info" }, o.infoTimeoutMs ?? 3000, signal);
      if (res.type !== "record") throw new LayerswarmError("BAD_MESSAGE", `answered "info" with "${res.type}"`);
      if (from.peer !== p.peer) throw new LayerswarmError("BAD_MESSAGE", `${from.peer.slice(-8)} answered for ${p.peer.slice(-8)}`);
      checkRecord(res.record, model, p.peer);
      on.found({ record: res.record, ip: from.ip, rttMs: Math.round((performance.now() - t0) * 100) / 100 });
    } catch (e) {
      on.refused(p.peer, e instanceof LayerswarmError ? e : new LayerswarmError(codeOf(e), (e as Error).message));
    }
  };
  await Promise.all(keys.map(async (key) => {
    let listed = 0;
    try {
      for await (const p of d.find(key, signal)) {
        if (++listed > (o.maxProvidersPerKey ?? 64)) break;
        if (seen.has(p.peer) || o.skip?.(p.peer)) continue;
        seen.add(p.peer);
        asks.push(limit(() => ask(p)));
      }
    } catch {
      // a lookup that fails or is cut short: what it listed is still asked
    }
  }));
  await Promise.all(asks);
  return { providers: seen.size - 1 };
}

// At most n of these functions running at once.
function pool(n: number): (f: () => Promise<void>) => Promise<void> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (f) => {
    while (running >= n) await new Promise<void>((r) => waiting.push(r));
    running++;
    try {
      await f();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

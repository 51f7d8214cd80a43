// Control requests: one stream per request and its response (the pattern of
// libp2p's ping protocol), so there is no id to match and nothing to mix up.

import { LayerswarmError, codeOf } from "../errors.js";
import { MAX_CONTROL_BYTES, PROTOCOLS, Request, Response, decodeRequest, decodeResponse, encodeMessage, errorResponse, responseError } from "./protocol/index.js";
import { Channel, Transport } from "./transport.js";

export interface Caller {
  peer: string;
  ip: string;
}

// Send one request and wait for its response (an error response becomes a typed error).
export async function request(t: Transport, peer: string, addrs: string[], req: Request, timeoutMs: number, signal?: AbortSignal): Promise<Response> {
  return (await exchange(t, peer, addrs, req, timeoutMs, signal)).res;
}

// The same, also saying who answered (authenticated by the transport) and from which address.
export async function exchange(t: Transport, peer: string, addrs: string[], req: Request, timeoutMs: number, signal?: AbortSignal): Promise<{ res: Response; from: Caller }> {
  const sig = signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
  let ch: Channel | undefined;
  const timedOut = () => new LayerswarmError(signal?.aborted ? "ABORTED" : "UNREACHABLE", `${peer.slice(-8)} did not answer "${req.type}" within ${timeoutMs} ms`);
  try {
    ch = await t.dial(peer, addrs, PROTOCOLS.control[PROTOCOLS.control.length - 1], { maxMessageBytes: MAX_CONTROL_BYTES, signal: sig });
    await ch.send(encodeMessage(req), sig);
    const it = ch.messages()[Symbol.asyncIterator]();
    const onAbort = () => ch?.abort(timedOut());
    sig.addEventListener("abort", onAbort, { once: true });
    try {
      const m = await it.next();
      if (m.done) throw new LayerswarmError("UNREACHABLE", `${peer.slice(-8)} closed the stream without answering "${req.type}"`);
      const r = decodeResponse(m.value);
      if (r.type === "error") throw responseError(r, `node ${peer.slice(-8)}`);
      return { res: r, from: { peer: ch.remotePeer, ip: ch.remoteIp } };
    } finally {
      sig.removeEventListener("abort", onAbort);
    }
  } catch (e) {
    if (sig.aborted && !(e instanceof LayerswarmError && e.code !== "UNREACHABLE" && e.code !== "ABORTED")) throw timedOut();
    if (e instanceof LayerswarmError) throw e;
    throw new LayerswarmError("UNREACHABLE", `${peer.slice(-8)}: ${(e as Error).message}`);
  } finally {
    void ch?.close().catch(() => {});
  }
}

// Serve control requests: decode, answer, close. A malformed request gets an
// error response and `onBad` (which may ban the peer); a handler's exception
// becomes an error response. Nothing a peer sends can throw out of here. A
// handler may answer with bytes it encoded once (a large answer asked often).
// An answer its asker does not read within sendTimeoutMs is dropped with the
// stream, so answers to readers that never read do not pile up in memory.
export function serveRequests(
  handler: (req: Request, from: Caller) => Promise<Response | Uint8Array>, onBad: (from: Caller, e: LayerswarmError) => void, o: { sendTimeoutMs?: number } = {},
) {
  return (ch: Channel): void => {
    const from = { peer: ch.remotePeer, ip: ch.remoteIp };
    let bad: LayerswarmError | undefined; // reported after the answer is sent: the peer learns what was wrong
    void (async () => {
      try {
        const it = ch.messages()[Symbol.asyncIterator]();
        const m = await it.next();
        if (m.done) return;
        let res: Response | Uint8Array;
        try {
          res = await handler(decodeRequest(m.value), from);
        } catch (e) {
          res = errorResponse(e);
          if (codeOf(e) === "BAD_MESSAGE") bad = e as LayerswarmError;
        }
        const ms = o.sendTimeoutMs ?? 10_000, ac = new AbortController();
        const timer = setTimeout(() => {
          ch.abort(new LayerswarmError("UNREACHABLE", `the answer was not read within ${ms} ms`));
          ac.abort();
        }, ms);
        try {
          await ch.send(res instanceof Uint8Array ? res : encodeMessage(res), ac.signal);
          await ch.close().catch(() => {});
        } finally {
          clearTimeout(timer);
        }
      } catch (e) {
        if (e instanceof LayerswarmError && e.code === "BAD_MESSAGE") bad = e;
        ch.abort(e as Error);
      } finally {
        if (bad) onBad(from, bad);
      }
    })().catch(() => {});
  };
}

import { describe, expect, it } from "vitest";
import { LayerswarmError } from "../errors.js";
import { encodeMessage } from "./protocol/index.js";
import { serveRequests } from "./rpc.js";
import { Channel } from "./transport.js";

// A channel whose far end asks once and then never reads: every send waits
// until its signal says stop (what a libp2p stream does once the reader's
// window is closed).
function neverReads(): Channel & { aborted?: Error; sends: number } {
  const ch = {
    remotePeer: "12D3KooWstranger", remoteIp: "10.9.9.9", closed: false, sends: 0, aborted: undefined as Error | undefined,
    async *messages() {
      yield encodeMessage({ type: "info" });
    },
    send(_m: Uint8Array, signal?: AbortSignal) {
      ch.sends++;
      return new Promise<void>((_, reject) => signal?.addEventListener("abort", () => reject(new LayerswarmError("ABORTED", "send aborted")), { once: true }));
    },
    async close() {},
    abort(e: Error) {
      ch.aborted ??= e; // the first reason stays, as on a real stream
      ch.closed = true;
    },
  };
  return ch as unknown as Channel & { aborted?: Error; sends: number };
}

describe("serveRequests", () => {
  it("drops an answer its asker does not read (the stream is aborted, nothing stays queued), and takes answers encoded once", async () => {
    const ch = neverReads();
    const answer = encodeMessage({ type: "ok" });
    let asked = 0;
    serveRequests(async () => (asked++, answer), () => {}, { sendTimeoutMs: 20 })(ch);
    for (let i = 0; i < 200 && !ch.aborted; i++) await new Promise((r) => setTimeout(r, 10));
    expect(asked).toBe(1);
    expect(ch.sends).toBe(1);
    expect(ch.aborted?.message).toMatch(/not read within 20 ms/);
  });
});

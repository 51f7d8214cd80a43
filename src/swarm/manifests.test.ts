import { getEventListeners } from "node:events";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Discovery } from "./discovery.js";
import { manifestFromPeers } from "./manifests.js";
import { Transport } from "./transport.js";

afterEach(() => void vi.useRealTimers());

describe("manifestFromPeers", () => {
  it("adds no abort listener per round to the signal that lives for all its rounds", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const seen: number[] = [];
    const d = {
      async *find(_key: Uint8Array, signal: AbortSignal) {
        seen.push(getEventListeners(signal, "abort").length); // nobody provides the manifest: another round in 1 s
      },
    } as unknown as Discovery;
    const ac = new AbortController();
    const asking = manifestFromPeers(d, { peerId: "me" } as Transport, [new Uint8Array(4)], "id", { signal: ac.signal, timeoutMs: 60_000 });
    for (let i = 0; i < 15; i++) await vi.advanceTimersByTimeAsync(1000);
    ac.abort();
    expect(await asking).toBeUndefined();
    expect(seen.length).toBeGreaterThanOrEqual(15);
    expect(new Set(seen).size).toBe(1); // as many listeners in the last round as in the first
  });
});

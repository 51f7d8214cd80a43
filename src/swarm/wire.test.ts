import { describe, expect, it } from "vitest";
import { Model, generate } from "../model/model.js";
import { memSwarm } from "../testing/memswarm.js";
import { STORIES_GGUF } from "../testing/shared.js";
import { rangesOf } from "../testing/swarm.js";
import { GatewayOptions } from "./gateway/index.js";
import { DType } from "./protocol/index.js";
import { WirePolicy, parsePackMode } from "./wire.js";

describe("per-link packing policy", () => {
  const MB = 2 ** 20;
  it("packs only for a receiver that takes it, a large frame, and a link measured slow enough to pay", () => {
    const w = new WirePolicy("auto");
    expect(w.shouldPack(4 * MB, false, 100)).toBe(false); // the receiver does not unpack
    expect(w.shouldPack(4 * MB, true, undefined)).toBe(false); // link not measured yet
    expect(w.shouldPack(8 * 1024, true, 100)).toBe(false); // a decode row: per-frame costs dominate
    expect(w.shouldPack(4 * MB, true, 2_500)).toBe(true); // 20 Mbit/s: a home uplink
    expect(w.shouldPack(4 * MB, true, 1_000_000)).toBe(false); // 8 Gbit/s: loopback, a fast LAN
    // what it measures moves the line: packing that turns out slow and useless stops paying
    for (let i = 0; i < 20; i++) w.sent(4 * MB, 4 * MB, 512, 400);
    expect(w.shouldPack(4 * MB, true, 2_500)).toBe(false);
    expect(w.stats.packedFrames).toBe(20);
  });

  it("always and never override, but never for a receiver that cannot unpack", () => {
    expect(new WirePolicy("always").shouldPack(100, true, undefined)).toBe(true);
    expect(new WirePolicy("always").shouldPack(100, false, undefined)).toBe(false);
    expect(new WirePolicy("never").shouldPack(4 * MB, true, 1)).toBe(false);
    expect(() => parsePackMode("sometimes")).toThrow(/--wire-pack must be auto, always or never/);
  });
});

describe("wire encodings through a swarm (in memory, stories260K, split 2+2+1)", () => {
  const prompt = [1, ...Array.from({ length: 200 }, (_, i) => 300 + ((i * 37) % 200))]; // a prompt step large enough to pack
  const run = async (o: GatewayOptions, pack: "always" | "never") => {
    const sw = await memSwarm(STORIES_GGUF, rangesOf([2, 2, 1]), { ...o, wirePack: pack }, { wirePack: pack });
    try {
      const ids = await sw.complete(prompt, 40);
      return { ids, packed: sw.gw.stats.wire.packedFrames + sw.nodes.reduce((a, n) => a + n.wire.stats.packedFrames, 0), wire: sw.gw.stats.wire };
    } finally {
      await sw.stop();
    }
  };

  it("f32 is the default and exact, packed on every hop or not: the single-process tokens", async () => {
    const local = Model.local(STORIES_GGUF);
    const expected: number[] = [...prompt];
    for await (const t of generate(local.model, local.stack, prompt, { maxTokens: 40 })) expected.push(t.id);
    const plain = await run({}, "never"), packed = await run({}, "always");
    expect(plain.ids).toEqual(expected);
    expect(packed.ids).toEqual(expected);
    expect(plain.packed).toBe(0);
    expect(packed.packed).toBeGreaterThan(0);
    // what the gateway reports per token on its hop: 64 f32 values and the frame's header
    // (rows this narrow gain nothing from packing, and are then sent as they are)
    expect(plain.wire.rawBytesPerRow).toBe(64 * 4);
    expect(plain.wire.sentBytesPerRow).toBeGreaterThan(64 * 4);
    expect(packed.wire.sentBytesPerRow).toBeLessThanOrEqual(plain.wire.sentBytesPerRow);
  });

  it("bf16 with a fixed split gives the same tokens run after run, packed or not", async () => {
    const a = await run({ dtype: DType.BF16 }, "never"), b = await run({ dtype: DType.BF16 }, "never"), c = await run({ dtype: DType.BF16 }, "always");
    expect(b.ids).toEqual(a.ids);
    expect(c.ids).toEqual(a.ids);
    expect(a.wire.rawBytesPerRow).toBeLessThan(64 * 4); // 2 bytes a value on the wire
  });
});

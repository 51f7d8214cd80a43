import { describe, expect, it } from "vitest";
import { DType, Deframer, FLAG_LAST_ROW_ONLY, Forward, decodeForward, decodeResult, encodeForward, encodeResult, frame } from "./wire.js";
import { Libp2pTransport } from "./libp2p.js";
import { PROTOCOL_FORWARD } from "./transport.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { rangesOf, startSwarm } from "../testing/swarm.js";
import { generate } from "../model/model.js";

const lim = { maxDim: 4, maxRows: 8 };
const route = { hops: [{ peer: "A", addrs: ["/ip4/127.0.0.1/tcp/1"], start: 0, end: 2 }], replyTo: { peer: "G", addrs: [] } };
const fwd = (o: Partial<Forward> = {}): Forward => ({ req: 7, session: "s1", pos: 3, T: 2, dim: 4, dtype: DType.F32, flags: FLAG_LAST_ROW_ONLY, hop: 0, route, hidden: Float32Array.from([1, -2, 3.5, 1e-8, 0, 7, -0.25, 65504]), ...o });

describe("wire frames", () => {
  it("round-trip f32 exactly, f16/bf16 within their precision", () => {
    const f = fwd();
    expect(decodeForward(encodeForward(f), lim)).toEqual(f);
    const h = decodeForward(encodeForward(fwd({ dtype: DType.F16 })), lim).hidden;
    expect(Array.from(h)).toEqual([1, -2, 3.5, 0, 0, 7, -0.25, 65504]);
    const r = { req: 1, session: "s", pos: 0, T: 1, dim: 4, dtype: DType.BF16, flags: 0, hidden: Float32Array.from([1, 2, 3, 4]) };
    expect(decodeResult(encodeResult(r), lim)).toEqual(r);
  });

  it("reject malformed frames with a message naming the problem", () => {
    const good = Buffer.from(encodeForward(fwd()));
    expect(() => decodeForward(good.subarray(0, 30), lim)).toThrow(/truncated/);
    expect(() => decodeForward(encodeForward(fwd()), { maxDim: 8, maxRows: 8 })).toThrow(/hidden width 4, the model's is 8/);
    expect(() => decodeForward(encodeForward(fwd({ T: 2 })), { maxDim: 4, maxRows: 1 })).toThrow(/2 rows/);
    const v = Buffer.from(good); v[1] = 9;
    expect(() => decodeForward(v, lim)).toThrow(/wire version 9/);
    const d = Buffer.from(good); d[2] = 7;
    expect(() => decodeForward(d, lim)).toThrow(/unknown dtype 7/);
    expect(() => decodeForward(Buffer.concat([good, Buffer.from([0])]), lim)).toThrow(/payload of 33 bytes/);
    const nan = encodeForward(fwd({ hidden: Float32Array.from([1, 2, NaN, 4, 5, 6, 7, 8]) }));
    expect(() => decodeForward(nan, lim)).toThrow(/not finite/);
    expect(() => decodeForward(encodeForward(fwd({ hop: 3 })), lim)).toThrow(/malformed route/);
  });

  it("deframe split and joined chunks, refuse oversize messages", () => {
    const d = new Deframer(100);
    const a = frame(Uint8Array.from([1, 2, 3])), b = frame(Uint8Array.from([4]));
    const all = Buffer.concat([a, b]);
    expect(d.push(all.subarray(0, 2))).toEqual([]);
    expect(d.push(all.subarray(2, 8)).map((m) => Array.from(m))).toEqual([[1, 2, 3]]);
    expect(d.push(all.subarray(8)).map((m) => Array.from(m))).toEqual([[4]]);
    expect(() => new Deframer(10).push(frame(new Uint8Array(11)))).toThrow(/exceeds the limit of 10/);
  });
});

describe("a node under malformed frames on a real authenticated stream", () => {
  it("closes that stream and keeps serving everyone else", async () => {
    const sw = await startSwarm(STORIES_GGUF, rangesOf([5]));
    try {
      const attacker = await Libp2pTransport.create({});
      const addr = sw.gw.nodes.get(sw.peers[0])!.info.addrs[0];
      const bad: Uint8Array[] = [
        Uint8Array.from([0x42, 1, 2, 3]), // unknown type
        encodeForward({ ...fwd(), dim: 4 }).subarray(0, 20), // truncated
        encodeForward({ req: 1, session: "x", pos: 0, T: 1, dim: 32, dtype: DType.F32, flags: 0, hop: 0, route, hidden: new Float32Array(32) }), // wrong width
        encodeForward({ req: 1, session: "unknown", pos: 50, T: 1, dim: 64, dtype: DType.F32, flags: 0, hop: 0, route: { ...route, hops: [{ peer: sw.peers[0], addrs: [addr], start: 0, end: 5 }] }, hidden: new Float32Array(64) }), // a position the session never had
      ];
      for (const m of bad) {
        const ch = await attacker.dial(addr, PROTOCOL_FORWARD);
        await ch.send(m).catch(() => {});
        await new Promise((r) => setTimeout(r, 50));
      }
      // an oversize length prefix
      const ch = await attacker.dial(addr, PROTOCOL_FORWARD);
      await ch.send(new Uint8Array(10)).catch(() => {});
      await attacker.stop();
      const ids = sw.model.tokenizer.encode("");
      const out: number[] = [];
      for await (const t of generate(sw.model, sw.gw, ids, { maxTokens: 30 })) out.push(t.id);
      expect([...ids, ...out]).toEqual(goldenIds("4").slice(0, 31));
    } finally {
      await sw.stop();
    }
  });
});

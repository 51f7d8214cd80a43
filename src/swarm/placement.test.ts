import { describe, expect, it } from "vitest";
import { Measured, Supply, allocateLayers, cheapestRoute, chooseRange, clampClaims, jittered, layerPressure, missingLayers, planMove, planRoute, subtractRanges } from "./placement.js";

const r = (s: number, e: number) => ({ start: s, end: e });

describe("allocateLayers", () => {
  it.each([
    ["equal nodes", 16, [[1, 99], [1, 99]], [r(0, 8), r(8, 16)]],
    ["speed 3:1", 16, [[3, 99], [1, 99]], [r(0, 12), r(12, 16)]],
    ["memory cap moves layers to the other nodes", 16, [[10, 4], [1, 99], [1, 99]], [r(0, 4), r(4, 10), r(10, 16)]],
    ["five single layers", 5, [[1, 9], [1, 9], [1, 9], [1, 9], [1, 9]], [r(0, 1), r(1, 2), r(2, 3), r(3, 4), r(4, 5)]],
    ["more nodes than layers", 2, [[1, 9], [1, 9], [1, 9]], [r(0, 1), r(1, 2), r(2, 2)]],
    ["rounding keeps the total", 5, [[1, 9], [1, 9], [1, 9]], [r(0, 2), r(2, 4), r(4, 5)]],
  ] as const)("%s", (_n, L, nodes, want) => {
    expect(allocateLayers(L, nodes.map(([speed, maxLayers], i) => ({ id: `n${i}`, speed, maxLayers })))).toEqual(want);
  });
  it("refuses a node too small for one layer, and a swarm too small for the model", () => {
    expect(() => allocateLayers(4, [{ id: "tiny", speed: 1, maxLayers: 0 }])).toThrow(/node tiny cannot hold a single layer/);
    expect(() => allocateLayers(10, [{ id: "a", speed: 1, maxLayers: 3 }, { id: "b", speed: 1, maxLayers: 3 }])).toThrow(/hold 6 layers together, the model has 10/);
  });
});

describe("planRoute", () => {
  it.each([
    ["a chain", 5, [["A", [r(0, 2)]], ["B", [r(2, 5)]]], [["A", 0, 2], ["B", 2, 5]]],
    ["the furthest-reaching node wins", 6, [["A", [r(0, 2)]], ["B", [r(0, 4)]], ["C", [r(3, 6)]]], [["B", 0, 4], ["C", 4, 6]]],
    ["a node serves part of its range", 4, [["A", [r(0, 3)]], ["B", [r(1, 4)]]], [["A", 0, 3], ["B", 3, 4]]],
    ["a node with two ranges", 4, [["A", [r(0, 1), r(2, 4)]], ["B", [r(1, 2)]]], [["A", 0, 1], ["B", 1, 2], ["A", 2, 4]]],
  ] as const)("%s", (_n, L, holders, want) => {
    expect(planRoute(L, holders.map(([id, ranges]) => ({ id, ranges: [...ranges] })))).toEqual(want.map(([id, start, end]) => ({ id, start, end })));
  });
  it("a route over part of the model (layers kept on the gateway) stops where its span does", () => {
    expect(planRoute(4, [{ id: "A", ranges: [r(0, 5)] }], 1)).toEqual([{ id: "A", start: 1, end: 4 }]);
    expect(missingLayers(4, [{ id: "A", ranges: [r(2, 5)] }], 1)).toEqual([r(1, 2)]);
  });
  it("prefers the less loaded of equal nodes; no route when a layer is missing", () => {
    expect(planRoute(2, [{ id: "A", ranges: [r(0, 2)], load: 3 }, { id: "B", ranges: [r(0, 2)], load: 1 }])).toEqual([{ id: "B", start: 0, end: 2 }]);
    expect(planRoute(5, [{ id: "A", ranges: [r(0, 2)] }, { id: "C", ranges: [r(3, 5)] }])).toBeUndefined();
    expect(missingLayers(8, [{ id: "A", ranges: [r(0, 2)] }, { id: "C", ranges: [r(3, 5)] }])).toEqual([r(2, 3), r(5, 8)]);
  });
});

describe("chooseRange (--layers auto)", () => {
  it.each([
    ["empty swarm starts at 0", 8, [], 3, r(0, 3)],
    ["fills the gap", 8, [r(0, 3), r(6, 8)], 3, r(3, 6)],
    ["doubles the least covered when all are covered", 4, [r(0, 4), r(0, 2)], 2, r(2, 4)],
    ["capped by the model", 3, [], 10, r(0, 3)],
  ] as const)("%s", (_n, L, ranges, max, want) => {
    expect(chooseRange(L, ranges.map((x, i) => ({ id: `n${i}`, ranges: [x] })), max)).toEqual(want);
  });
});

// a measured node: [id, ranges, hopMs, layerMs, rowMs, load]
const m = (id: string, ranges: { start: number; end: number }[], hopMs: number, layerMs: number, rowMs = 0, load = 0): Measured => ({ id, ranges, hopMs, layerMs, rowMs, load });

describe("cheapestRoute (measured costs)", () => {
  it.each([
    ["one node", 4, [m("A", [r(0, 4)], 1, 1)], 1, [["A", 0, 4]], 5],
    ["the faster of two replicas", 4, [m("S", [r(0, 4)], 1, 5), m("F", [r(0, 4)], 1, 1)], 1, [["F", 0, 4]], 5],
    ["fewer hops beat a chain when hops are dear", 4, [m("A", [r(0, 2)], 10, 1), m("B", [r(2, 4)], 10, 1), m("W", [r(0, 4)], 10, 2)], 1, [["W", 0, 4]], 18],
    ["a chain beats one slow node", 4, [m("A", [r(0, 2)], 1, 1), m("B", [r(2, 4)], 1, 1), m("W", [r(0, 4)], 1, 10)], 1, [["A", 0, 2], ["B", 2, 4]], 6],
    ["switching where a faster node's range starts", 6, [m("A", [r(0, 6)], 1, 3), m("B", [r(2, 6)], 1, 1)], 1, [["A", 0, 2], ["B", 2, 6]], 12],
    ["a slow link loses on a long prompt, wins on one row", 4, [m("near", [r(0, 4)], 1, 2, 0.1), m("far", [r(0, 4)], 1, 1, 5)], 64, [["near", 0, 4]], 1 + 8 + 6.3],
    ["the same on one row", 4, [m("near", [r(0, 4)], 1, 2, 0.1), m("far", [r(0, 4)], 1, 1, 5)], 1, [["far", 0, 4]], 5],
    ["load spreads sessions over replicas", 2, [m("A", [r(0, 2)], 1, 1, 0, 4), m("B", [r(0, 2)], 1, 1, 0, 0)], 1, [["B", 0, 2]], 3],
    ["a range past the span is cut", 3, [m("A", [r(0, 5)], 1, 1)], 1, [["A", 0, 3]], 4],
  ] as const)("%s", (_n, L, nodes, rows, want, ms) => {
    const got = cheapestRoute(L, nodes.map((x) => ({ ...x, ranges: [...x.ranges] })), 0, rows)!;
    expect(got.stages).toEqual(want.map(([id, start, end]) => ({ id, start, end })));
    expect(got.ms).toBeCloseTo(ms, 9);
  });
  it("starts where the gateway's own layers end; no route through a hole; ties to fewer stages", () => {
    expect(cheapestRoute(4, [m("A", [r(0, 4)], 1, 1)], 1)!.stages).toEqual([{ id: "A", start: 1, end: 4 }]);
    expect(cheapestRoute(4, [m("A", [r(0, 2)], 1, 1), m("B", [r(3, 4)], 1, 1)])).toBeUndefined();
    // A+B costs 1+1+1+1 = 4, W costs 1+3 = 4: the one-stage route
    expect(cheapestRoute(2, [m("A", [r(0, 1)], 1, 1), m("B", [r(1, 2)], 1, 1), m("W", [r(0, 2)], 1, 1.5)])!.stages.map((s) => s.id)).toEqual(["W"]);
  });
  it("a node that failed steps is taken only when nothing else covers its layers", () => {
    const bad = { ...m("X", [r(0, 2)], 0.1, 0.1), failures: 1 };
    expect(cheapestRoute(2, [bad, m("Y", [r(0, 2)], 50, 50)])!.stages[0].id).toBe("Y");
    expect(cheapestRoute(2, [bad])!.stages[0].id).toBe("X");
  });
});

describe("placement by throughput and demand", () => {
  const s = (id: string, ranges: { start: number; end: number }[], tokPerSec = 1, rowsPerSec = 0) => ({ id, ranges, tokPerSec, rowsPerSec });
  it("pressure: demand over throughput per layer, Infinity where nobody holds it", () => {
    expect(layerPressure(4, [s("A", [r(0, 2)], 2, 3), s("B", [r(1, 3)], 1, 1)])).toEqual([2, 5 / 3, 2, Infinity]);
  });
  it.each([
    ["a slow holder's layers before a fast one's", 4, [s("slow", [r(0, 2)], 1), s("fast", [r(2, 4)], 10)], 2, r(0, 2)],
    ["demand outweighs equal throughput", 4, [s("A", [r(0, 2)], 5, 1), s("B", [r(2, 4)], 5, 40)], 2, r(2, 4)],
    ["a hole before everything", 6, [s("A", [r(0, 2)], 1, 100), s("B", [r(3, 6)], 1, 100)], 1, r(2, 3)],
    ["the window holding the worst layer", 5, [s("A", [r(0, 5)], 10), s("B", [r(0, 3)], 10), s("C", [r(4, 5)], 10)], 2, r(2, 4)],
  ] as const)("chooseRange: %s", (_n, L, holders, max, want) => {
    expect(chooseRange(L, holders.map((h) => ({ ...h, ranges: [...h.ranges] })), max)).toEqual(want);
  });
  it("planMove: a node leaves a layer others hold for one the swarm starves, only if the bottleneck improves enough; never leaves a hole", () => {
    // layers 0-1 held by two fast nodes, 2-3 by one slow node: the spare moves
    const swarm = [s("A", [r(0, 2)], 10), s("B", [r(0, 2)], 10), s("C", [r(2, 4)], 1)];
    expect(planMove(4, swarm, "B", 2)).toEqual(r(2, 4));
    expect(planMove(4, swarm, "C", 2)).toBeUndefined(); // the only holder of 2-3
    // balanced already: moving would not improve the bottleneck by 4/3
    expect(planMove(4, [s("A", [r(0, 2)], 10), s("B", [r(2, 4)], 9), s("D", [r(2, 4)], 1)], "D", 2)).toBeUndefined();
    // demand makes the difference: equal throughput on both halves, but four times the traffic
    // on 2-3 (gateways that run layers 0-1 themselves send little there)
    expect(planMove(4, [s("A", [r(0, 2)], 5, 1), s("B", [r(0, 2)], 5, 1), s("C", [r(2, 4)], 5, 4), s("D", [r(2, 4)], 5, 4)], "B", 2)).toEqual(r(2, 4));
    expect(planMove(4, [s("A", [r(0, 2)], 5, 0), s("B", [r(0, 2)], 5, 0), s("C", [r(2, 4)], 5, 0), s("D", [r(2, 4)], 5, 0)], "B", 2)).toBeUndefined();
    // one record's demand far above the median's is taken at 4x it: one holder alone cannot pull nodes over
    expect(planMove(4, [s("A", [r(0, 2)], 5, 5), s("B", [r(0, 2)], 5, 5), s("C", [r(2, 4)], 10, 100)], "B", 2)).toBeUndefined();
  });
  // security review: a liar claims [0,16) at huge speed (its record copies honest layer
  // hashes), a Sybil claims [16,32) slow with huge demand; every honest holder of [0,16) moved away
  it("planMove under forged records: claims clamped to 4x the median; only holders it verified cover its layers; no range left empty", () => {
    const honest: Supply[] = [s("h1", [r(0, 16)], 10, 5), s("h2", [r(0, 16)], 10, 5), s("h3", [r(16, 32)], 10, 5), s("h4", [r(16, 32)], 10, 5)];
    const liars: Supply[] = [s("liar", [r(0, 16)], 1e9, 0), s("sybil", [r(16, 32)], 1e-3, 1e6)];
    const clamped = clampClaims([...honest, ...liars]);
    expect(clamped.find((h) => h.id === "liar")!.tokPerSec).toBe(40);
    expect(clamped.find((h) => h.id === "sybil")).toMatchObject({ tokPerSec: 2.5, rowsPerSec: 20 });
    expect(clampClaims(honest)).toEqual(honest); // honest claims near the median are untouched
    // each honest node in turn, as its timer fires, seeing the others where they are by then;
    // it has verified the honest holders (they answered its probe step bit-exactly), not the liars
    const verified = new Set(honest.map((h) => h.id));
    let world: Supply[] = honest.map((h) => ({ ...h, ranges: [...h.ranges] }));
    const moves: string[] = [];
    for (const id of ["h1", "h2", "h3", "h4"]) {
      const to = planMove(32, [...world, ...liars], id, 16, { covers: (p) => verified.has(p) });
      if (to) (moves.push(id), (world = world.map((h) => (h.id === id ? { ...h, ranges: [to] } : h))));
    }
    expect(moves).toEqual(["h1"]); // the liars still tilt the balance, so one spare moves, but only one
    expect(missingLayers(32, world)).toEqual([]);
    // and without the liars' help nobody moves
    expect(["h1", "h2", "h3", "h4"].map((id) => planMove(32, honest, id, 16))).toEqual([undefined, undefined, undefined, undefined]);
  });
  it("the rebalance timer is jittered between half and one and a half periods", () => {
    expect([0, 0.25, 0.999].map((x) => jittered(1000, () => x))).toEqual([500, 750, 1499]);
  });
  it("subtractRanges", () => {
    expect(subtractRanges([r(0, 5)], [r(1, 2), r(3, 4)])).toEqual([r(0, 1), r(2, 3), r(4, 5)]);
    expect(subtractRanges([r(0, 2), r(4, 6)], [r(0, 6)])).toEqual([]);
    expect(subtractRanges([r(0, 2)], [])).toEqual([r(0, 2)]);
  });
});

import { describe, expect, it } from "vitest";
import { allocateLayers, chooseRange, missingLayers, planRoute } from "./placement.js";

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

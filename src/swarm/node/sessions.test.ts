import { describe, expect, it } from "vitest";
import { NodeSession, SessionTable } from "./sessions.js";

let n = 0;
const sess = (gateway: string, ip: string, lastStep = n): NodeSession => ({
  id: (n++).toString(16).padStart(32, "0"), gateway, ip, createdAt: 0, lastStep, grant: undefined as never,
});

describe("session table fairness", () => {
  it("admits freely below the limit", () => {
    const t = new SessionTable(3);
    expect(t.admit(sess("a", "1"))).toBeUndefined();
    expect(t.admit(sess("b", "2"))).toBeUndefined();
    expect(t.size).toBe(2);
  });

  it.each([
    // [sessions held as gateway@ip, newcomer, evicted gateway or "BUSY"]
    [["x@9", "x@9", "x@9", "x@9"], "g@1", "x"], // one hoarder loses one slot to a newcomer
    [["x@9", "x@9", "g@1", "g@1"], "h@2", "x"], // two addresses hold two each, the newcomer none: the first biggest gives way
    [["a@1", "b@2", "c@3", "d@4"], "e@5", "BUSY"], // everyone holds one: no one to take from
    [["x@9", "y@9", "z@9", "w@9"], "g@1", "x"], // a hundred identities on one address count as one address
    [["x@1", "x@1", "x@1", "g@1"], "g@1", "x"], // same address: the gateway holding more gives way
    [["x@1", "x@1", "g@1", "g@1"], "g@1", "BUSY"], // same address, equal shares
  ])("%j + %s -> %s", (held, newcomer, want) => {
    const t = new SessionTable(held.length);
    for (const h of held) t.admit(sess(h.split("@")[0], h.split("@")[1]));
    const [g, ip] = newcomer.split("@");
    if (want === "BUSY") {
      expect(() => t.admit(sess(g, ip))).toThrow(/session slots/);
    } else expect(t.admit(sess(g, ip))?.gateway).toBe(want);
  });

  it("evicts the least recently stepped session of the biggest holder", () => {
    const t = new SessionTable(3);
    const old = sess("x", "9", 1), recent = sess("x", "9", 100), other = sess("x", "9", 50);
    [recent, old, other].forEach((s) => t.admit(s));
    expect(t.admit(sess("g", "1", 200))?.id).toBe(old.id);
  });

  it("refuses a session id that is already in use", () => {
    const t = new SessionTable(3);
    const s = sess("a", "1");
    t.admit(s);
    expect(() => t.admit({ ...s, gateway: "b" })).toThrow(/already in use/);
  });
});

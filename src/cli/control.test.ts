// The node's local control socket: only its owner may open it, requests are
// validated, errors come back with their code, and a socket left by a dead
// node is replaced while a live one is never taken over.

import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { LayerswarmError } from "../errors.js";
import { LayerRange } from "../model/config.js";
import { tmpDir } from "../testing/shared.js";
import { callControl, controlPath, serveControl } from "./control.js";

const node = () => {
  let ranges: LayerRange[] = [{ start: 0, end: 2 }];
  const calls: unknown[] = [];
  return {
    calls,
    ranges: () => ranges,
    async move(to: LayerRange | "auto", o: { drainMs?: number; force?: boolean }) {
      calls.push({ to, ...o });
      if (to === "auto") throw new LayerswarmError("BAD_ARGUMENT", "moving would leave layers [0, 2) held by nobody else");
      ranges = [to];
      return ranges;
    },
    async pause(o: { drainMs?: number }) {
      calls.push({ pause: o.drainMs });
    },
    async resume() {
      calls.push({ resume: true });
    },
  };
};

describe.skipIf(process.platform === "win32")("node control socket", () => {
  it("moves the node, passes its errors back with their code, and is its owner's alone", async () => {
    const key = path.join(tmpDir(), "node.key");
    const sock = controlPath(key);
    expect(sock).toBe(key.replace(/\.key$/, ".sock"));
    const n = node();
    const close = await serveControl(sock, n);
    try {
      expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
      expect(await callControl(sock, { cmd: "status" })).toEqual({ ranges: [{ start: 0, end: 2 }] });
      expect(await callControl(sock, { cmd: "move", layers: "3:5", drainMs: 200 })).toEqual({ ranges: [{ start: 3, end: 5 }] });
      expect(await callControl(sock, { cmd: "pause", drainMs: 0 })).toEqual({ ranges: [{ start: 3, end: 5 }] });
      expect(await callControl(sock, { cmd: "resume" })).toEqual({ ranges: [{ start: 3, end: 5 }] });
      expect(n.calls).toEqual([{ to: { start: 3, end: 5 }, drainMs: 200, force: undefined }, { pause: 0 }, { resume: true }]);
      await expect(callControl(sock, { cmd: "move", layers: "auto" })).rejects.toMatchObject({ code: "BAD_ARGUMENT", message: expect.stringMatching(/refused: moving would leave layers \[0, 2\)/) });
      await expect(callControl(sock, { cmd: "move", layers: "5-3" })).rejects.toThrow(/must look like START:END/);
      await expect(callControl(sock, { cmd: "move", layers: "1:2", drainMs: -1 } as never)).rejects.toThrow(/control request: drainMs/);
      // a second node with the same key does not take the socket over
      await expect(serveControl(sock, node())).rejects.toThrow(/another node is running with this identity/);
    } finally {
      close();
    }
    expect(fs.existsSync(sock)).toBe(false);
    await expect(callControl(sock, { cmd: "status" })).rejects.toMatchObject({ code: "UNREACHABLE" });
  });

  it("a socket file left by a node that died is replaced", async () => {
    const key = path.join(tmpDir(), "n.key");
    const sock = controlPath(key);
    fs.writeFileSync(sock, "");
    const close = await serveControl(sock, node());
    try {
      expect(await callControl(sock, { cmd: "status" })).toEqual({ ranges: [{ start: 0, end: 2 }] });
    } finally {
      close();
    }
  });
});

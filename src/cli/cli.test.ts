// The real program, as a user runs it.
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, STORIES_BIN, STORIES_GGUF, TOK512, goldenText, tmpDir } from "../testing/shared.js";
import { parseBootstrap } from "./swarm.js";

const CLI = path.join(REPO, "dist/src/cli/index.js");
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000 });

describe("layerswarm CLI", () => {
  it("generate streams exactly run.c's continuation to stdout", () => {
    const r = run("generate", "--model", STORIES_GGUF, "--max-tokens", "252", "Once upon a time");
    expect(r.status).toBe(0);
    expect("Once upon a time" + r.stdout).toBe(goldenText("1"));
  });

  it("convert then generate from the converted file, on 2 threads and split slices", () => {
    const out = path.join(tmpDir(), "c.gguf");
    expect(run("convert", "--llama2c", STORIES_BIN, "--tokenizer", TOK512, "-o", out).status).toBe(0);
    const r = run("generate", "-m", out, "-n", "252", "--threads", "2", "--slices", "0:2,2:5", "Once upon a time");
    expect("Once upon a time" + r.stdout).toBe(goldenText("1"));
  });

  it("inspect describes the model", () => {
    const r = run("inspect", STORIES_GGUF);
    expect(r.stdout).toMatch(/dim 64, 5 layers, 8 heads \(4 kv, head 8\), ffn 172, vocab 512/);
    expect(JSON.parse(run("inspect", "--json", STORIES_GGUF).stdout).layers).toHaveLength(5);
  });

  it("bad input: a clear message on stderr, exit code 2, nothing on stdout", () => {
    const r = run("generate", "-m", path.join(tmpDir(), "nope.gguf"), "hi");
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/error \[BAD_FILE\].*cannot open model file/);
    const s = run("generate", "-m", STORIES_GGUF, "--slices", "0:9", "hi");
    expect(s.stderr).toMatch(/BAD_RANGE/);
  });

  it("--bootstrap takes a multiaddr with or without /p2p/, or host:port; anything else is refused before anything starts", () => {
    const id = "12D3KooWPEDYwBofb31u4FmMX8WHAH3mJ1JW8dcmqAdD5UEYJPu9";
    const ok: [string, string][] = [
      [`/ip4/10.0.0.5/tcp/4001/p2p/${id}`, `/ip4/10.0.0.5/tcp/4001/p2p/${id}`],
      ["/ip4/10.0.0.5/tcp/4001", "/ip4/10.0.0.5/tcp/4001"],
      ["10.0.0.5:4001", "/ip4/10.0.0.5/tcp/4001"],
      ["localhost:4001", "/ip4/127.0.0.1/tcp/4001"],
      ["[::1]:4001", "/ip6/::1/tcp/4001"],
      ["boot.example.org:4001", "/dns/boot.example.org/tcp/4001"],
    ];
    for (const [a, want] of ok) expect(parseBootstrap(a), a).toBe(want);
    for (const a of ["10.0.0.5", "10.0.0.5:70000", "/ip4/10.0.0.5", "/nonsense/1", "http://10.0.0.5:4001"]) expect(() => parseBootstrap(a), a).toThrow(/--bootstrap .*(multiaddr|port)/);
    const r = run("node", "--model", STORIES_GGUF, "--layers", "0:5", "--bootstrap", "10.0.0.5", "--key", path.join(tmpDir(), "n.key"));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/error \[BAD_ARGUMENT\]: --bootstrap 10\.0\.0\.5: not a multiaddr or host:port/);
  });
});

// llama.cpp's own files, taken from the git bundle of its source that
// node-llama-cpp ships (node_modules/node-llama-cpp/llama/gitRelease.bundle):
// the vocabulary-only GGUF files its convert script wrote for real models
// (models/ggml-vocab-*.gguf), the real chat templates it tests against
// (models/templates/*.jinja), and its Jinja engine (common/jinja), compiled
// here into a small program that renders a template as llama.cpp does.
// Extracted and built once per bundle into the cache directory.

import { execFileSync, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { cacheDir } from "../format/synth.js";
import { REPO } from "./shared.js";

const FILES = [
  "models/ggml-vocab-llama-spm.gguf", "models/ggml-vocab-llama-bpe.gguf", "models/ggml-vocab-qwen2.gguf", "models/templates",
  "common/jinja", "common/json.h", "common/json.cpp", "common/unicode.h", "common/unicode.cpp", "vendor/nlohmann", "src/unicode-data.cpp",
];

function bundlePath(): string {
  return path.join(REPO, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
}

let srcDir: string | undefined;

// The directory holding FILES from llama.cpp's source.
export function llamaCppSource(): string {
  if (srcDir) return srcDir;
  const bundle = bundlePath();
  const key = crypto.createHash("sha256").update(fs.readFileSync(bundle)).update(FILES.join()).digest("hex").slice(0, 12);
  const dir = path.join(cacheDir(), "llamacpp-src", key);
  if (!fs.existsSync(path.join(dir, "complete"))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    execFileSync("git", ["clone", "-q", "--no-checkout", bundle, path.join(tmp, ".git-clone")], { stdio: "pipe" });
    const tar = execFileSync("git", ["-C", path.join(tmp, ".git-clone"), "archive", "HEAD", ...FILES], { maxBuffer: 1 << 30 });
    execFileSync("tar", ["x", "-C", tmp], { input: tar });
    fs.rmSync(path.join(tmp, ".git-clone"), { recursive: true, force: true });
    fs.writeFileSync(path.join(tmp, "complete"), "");
    // test files run in parallel workers: the first to finish wins, the others use its copy
    if (fs.existsSync(dir) && !fs.existsSync(path.join(dir, "complete"))) fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      if (!fs.existsSync(path.join(dir, "complete"))) throw e;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return (srcDir = dir);
}

// A program that renders a chat template with llama.cpp's Jinja engine:
// `render TEMPLATE_FILE < context.json` prints the text.
const DRIVER = `
#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/runtime.h"
#include "json.h"
#include <fstream>
#include <iostream>
#include <sstream>
int main(int argc, char ** argv) {
    if (argc != 2) { std::cerr << "usage: render TEMPLATE < context.json\\n"; return 2; }
    std::ifstream f(argv[1]);
    std::stringstream tmpl; tmpl << f.rdbuf();
    std::stringstream in; in << std::cin.rdbuf();
    try {
        jinja::lexer lexer;
        jinja::program ast = jinja::parse_from_tokens(lexer.tokenize(tmpl.str()));
        jinja::context ctx(tmpl.str());
        jinja::global_from_json(ctx, common_json::parse(in.str()), false);
        jinja::runtime rt(ctx);
        const jinja::value res = rt.execute(ast);
        std::string out;
        for (const auto & p : jinja::runtime::gather_string_parts(res)->as_string().parts) out += p.val;
        std::cout << out;
    } catch (const std::exception & e) {
        std::cerr << "error: " << e.what() << "\\n";
        return 1;
    }
    return 0;
}
`;

// json.cpp asserts with GGML_ASSERT: plain assert here, without linking ggml
const GGML_SHIM = "#pragma once\n#include <cassert>\n#define GGML_ASSERT(x) assert(x)\n";

let renderer: string | undefined;

// Builds the renderer (about a minute the first time on a busy machine; cached).
export function llamaCppRenderer(): string {
  if (renderer) return renderer;
  const src = llamaCppSource();
  const bin = path.join(src, "render");
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(path.join(src, "shim"), { recursive: true });
    fs.writeFileSync(path.join(src, "shim", "ggml.h"), GGML_SHIM);
    fs.writeFileSync(path.join(src, "render.cpp"), DRIVER);
    const cpp = fs.readdirSync(path.join(src, "common/jinja")).filter((f) => f.endsWith(".cpp")).map((f) => `common/jinja/${f}`);
    const tmp = `${bin}.tmp-${process.pid}`;
    const r = spawnSync("c++", ["-std=c++17", "-O0", "-Ishim", "-Icommon", "-Ivendor", "-o", tmp, "render.cpp", ...cpp, "common/json.cpp", "common/unicode.cpp"], { cwd: src, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`compiling llama.cpp's Jinja engine failed: ${r.error?.message ?? r.stderr.slice(-2000)}`);
    fs.renameSync(tmp, bin);
  }
  return (renderer = bin);
}

// The text llama.cpp's Jinja engine renders from a template and a context.
export function llamaCppRender(templateFile: string, context: unknown): string {
  const r = spawnSync(llamaCppRenderer(), [templateFile], { input: JSON.stringify(context), encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`llama.cpp's Jinja engine failed on ${path.basename(templateFile)}: ${r.stderr}`);
  return r.stdout;
}

// The code points llama.cpp's tokenizer takes for \\p{L} and \\p{N} (its unicode_ranges_flags
// table, src/unicode-data.cpp), as "start-end" hex ranges joined by commas.
export function llamaCppUnicodeClasses(): { letter: string; number: string } {
  const src = fs.readFileSync(path.join(llamaCppSource(), "src/unicode-data.cpp"), "utf8");
  const at = src.indexOf("unicode_ranges_flags");
  const table = src.slice(at, src.indexOf("};", at));
  const starts = [...table.matchAll(/\{0x([0-9A-Fa-f]+), 0x([0-9A-Fa-f]+)\}/g)].map((m) => [parseInt(m[1], 16), parseInt(m[2], 16)]);
  const ranges = (bit: number): string => {
    const out: string[] = [];
    let open = -1;
    starts.forEach(([cp, flags], i) => {
      const end = i + 1 < starts.length ? starts[i + 1][0] - 1 : 0x10ffff;
      if (flags & bit && open < 0) open = cp;
      if (!(flags & bit) && open >= 0) (out.push(`${open.toString(16)}-${(cp - 1).toString(16)}`), (open = -1));
      if (i + 1 === starts.length && open >= 0) out.push(`${open.toString(16)}-${end.toString(16)}`);
    });
    return out.join(",");
  };
  return { letter: ranges(0x0004), number: ranges(0x0002) }; // unicode_cpt_flags::LETTER, ::NUMBER
}

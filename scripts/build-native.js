#!/usr/bin/env node
// npm install's native step: build the C++ kernels (native/, binding.gyp) with
// node-gyp, keep its output (hundreds of lines) in build/native-build.log, and
// say in one line what was built. Without a compiler the package still
// installs and runs the reference kernels; the line says so, with the errors.
// `npm run build:native` runs node-gyp with all its output.

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const logFile = path.join(root, "build", "native-build.log");
const addonFile = path.join(root, "build", "Release", "layerswarm_kernels.node");

// npm names its own node-gyp for lifecycle scripts; otherwise the one on PATH
const gyp = process.env.npm_config_node_gyp;
const [cmd, args] = gyp ? [process.execPath, [gyp, "rebuild"]] : ["node-gyp", ["rebuild"]];
const out = [];
const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"], shell: !gyp && process.platform === "win32" });
child.stdout.on("data", (d) => out.push(d));
child.stderr.on("data", (d) => out.push(d));
child.on("error", (e) => finish(`could not start ${cmd}: ${e.message}`));
child.on("close", (code, signal) => finish(code === 0 ? undefined : `node-gyp exited with ${code ?? signal}`));

let finished = false;
function finish(failure) {
  if (finished) return;
  finished = true;
  const text = Buffer.concat(out).toString() + (failure ? `\n${failure}\n` : "");
  let logged = path.relative(process.cwd(), logFile) || logFile;
  try {
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    fs.writeFileSync(logFile, text);
  } catch {
    logged = "(not written)";
  }
  if (!failure) {
    let isa;
    try {
      isa = createRequire(import.meta.url)(addonFile).isa();
    } catch (e) {
      failure = `the built addon does not load: ${e.message}`;
    }
    if (!failure) {
      const built = process.arch === "x64" ? "AVX-512 VNNI + generic" : "generic";
      console.log(`layerswarm: native kernels built (${built}); this CPU runs the ${isa === "avx512" ? "AVX-512 VNNI" : "generic"} ones (build log: ${logged})`);
      return;
    }
  }
  // loud enough: the reason and the compiler's errors, then the whole log's place
  const errors = text.split("\n")
    .filter((l) => /error|ERR!|not found|no such file/i.test(l) && !/^gyp ERR! (stack\s+at|System|command|cwd|node -v|node-gyp -v|\$npm_|not ok)/.test(l))
    .slice(0, 12);
  console.warn(
    [
      `layerswarm: the native kernels could not be built (${failure}); the slower reference kernels will be used`,
      ...errors.map((l) => `  ${l.trim()}`),
      `  full output: ${logged}; to retry with it on screen: npm run build:native`,
    ].join("\n"),
  );
}

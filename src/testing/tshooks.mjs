// Node module hooks that run this repository's TypeScript sources directly
// (`node --import <register> file.ts`), for test helpers that must run in a
// separate process and cannot rely on dist/ being fresh: a `./x.js` import is
// resolved to `./x.ts` when only that exists, and `.ts` files are transpiled
// with the project's own TypeScript (types are not checked here; tsc does that).

import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";

export async function resolve(specifier, context, next) {
  if (/^\.\.?\//.test(specifier) && specifier.endsWith(".js") && context.parentURL?.startsWith("file:")) {
    const url = new URL(specifier, context.parentURL);
    const tsUrl = new URL(url.href.replace(/\.js$/, ".ts"));
    if (!existsSync(url) && existsSync(tsUrl)) return { url: tsUrl.href, shortCircuit: true };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return next(url, context);
  const fileName = fileURLToPath(url);
  const out = ts.transpileModule(readFileSync(fileName, "utf8"), {
    fileName,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true, inlineSources: false },
  });
  return { format: "module", source: out.outputText, shortCircuit: true };
}

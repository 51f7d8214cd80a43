import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

// Where identities and other state live: $LAYERSWARM_HOME or ~/.layerswarm
export function stateDir(): string {
  return process.env.LAYERSWARM_HOME ?? path.join(os.homedir(), ".layerswarm");
}

// The installed package's root, found from this file (src/cli when run from
// source, dist/src/cli when compiled): web/ and models/ ship beside dist/.
const here = path.dirname(fileURLToPath(import.meta.url));
export const PACKAGE_ROOT = path.resolve(here, path.basename(path.resolve(here, "../..")) === "dist" ? "../../.." : "../..");

export const WEB_DIR = path.join(PACKAGE_ROOT, "web");

// The demo model shipped in the package (models/README.md says where it comes from).
export const DEMO_MODEL = path.join(PACKAGE_ROOT, "models", "stories260K.gguf");

export const DEMO_BANNER =
  "layerswarm: no --model given, so this is the built-in demo stories260K, a 260K-parameter toy that writes children's stories; " +
  "for a real model pass --model hf:<owner>/<repo>/<file.gguf> or --model FILE.gguf";

// --model as given, or the demo model with its banner on stderr.
export function modelOrDemo(spec: string | undefined): string {
  if (spec) return spec;
  process.stderr.write(DEMO_BANNER + "\n");
  return DEMO_MODEL;
}

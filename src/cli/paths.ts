import * as os from "node:os";
import * as path from "node:path";

// Where identities and other state live: $LAYERSWARM_HOME or ~/.layerswarm
export function stateDir(): string {
  return process.env.LAYERSWARM_HOME ?? path.join(os.homedir(), ".layerswarm");
}

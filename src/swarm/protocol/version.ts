// Versions. A peer accepts the current protocol version and the one before it
// (N and N-1) so a swarm can upgrade one machine at a time; v1 had no
// authorization and is refused. The numerics version names the kernels'
// arithmetic: kernel code that changes any output bit bumps it, and peers
// compare it before treating outputs as comparable (replay, audits).

export const PROTOCOL_VERSION = 2;
export const SUPPORTED_VERSIONS: readonly number[] = [2];
export const NUMERICS_VERSION = 1;

export const protocolId = (kind: "control" | "steps", v = PROTOCOL_VERSION) => `/layerswarm/${kind}/${v}`;
export const PROTOCOLS = {
  control: SUPPORTED_VERSIONS.map((v) => protocolId("control", v)),
  steps: SUPPORTED_VERSIONS.map((v) => protocolId("steps", v)),
};

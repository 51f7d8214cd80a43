// Versions. A peer accepts the current protocol version and the one before it
// (N and N-1) so a swarm can upgrade one machine at a time; v1 had no
// authorization and is refused. The numerics version names the kernels'
// arithmetic: kernel code that changes any output bit bumps it, and peers
// compare it before treating outputs as comparable (replay, audits).
//
// v3: a node record names the model by content (its manifest's hash and a
// hash per layer it serves), and nodes announce in the DHT under the layout's
// hash; a gateway pairs each layer only with nodes whose hash for it matches.
// A v2 record carries no hashes, so a v3 gateway could pair none of its
// layers, and a v2 peer's DHT keys name the model by its size: accepting v2
// would be a promise we cannot keep, so v2 is refused like v1.
//
// v4: receipts travel with the hidden states (frames.ts, receipt.ts): every
// stage signs what it computed (batch-signed, Merkle receipts), a step frame at
// hop h carries the receipts of hops 0 .. h-1 and a result all of them, and a
// stage refuses a step whose previous stage's receipt does not match the rows
// it received (BAD_RECEIPT). Receipts are mandatory: a v3 node sends none, so
// its next stage would refuse every step it forwards and a v4 gateway would
// get results it cannot check. v3 is refused like v2.

export const PROTOCOL_VERSION = 4;
export const SUPPORTED_VERSIONS: readonly number[] = [4];
// Numerics 2: exp, pow, sin and cos are our own (kernels/ref/numerics.ts and
// native/numerics.h, the same operations everywhere) instead of V8's Math.* and
// the C library's exp, so results changed in the last bit.
export const NUMERICS_VERSION = 2;

export const protocolId = (kind: "control" | "steps", v = PROTOCOL_VERSION) => `/layerswarm/${kind}/${v}`;
export const PROTOCOLS = {
  control: SUPPORTED_VERSIONS.map((v) => protocolId("control", v)),
  steps: SUPPORTED_VERSIONS.map((v) => protocolId("steps", v)),
};

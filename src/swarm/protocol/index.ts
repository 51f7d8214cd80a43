// The swarm protocol, in one place: versions and protocol ids (version.ts),
// control messages and the node record (messages.ts), hidden-state frames
// (frames.ts), the signed route grant (grant.ts), and discovery's keys and
// timing (discovery.ts), receipts and fraud proofs (receipt.ts). Implementations (node, gateway, transports,
// discovery) import these types; none defines its own.

export * from "./version.js";
export * from "./messages.js";
export * from "./frames.js";
export * from "./grant.js";
export * from "./discovery.js";
export * from "./receipt.js";

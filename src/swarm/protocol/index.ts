// The swarm protocol, in one place: versions and protocol ids (version.ts),
// control messages and the node record (messages.ts), hidden-state frames
// (frames.ts) and the signed route grant (grant.ts). Implementations (node,
// gateway, transports) import these types; none defines its own.

export * from "./version.js";
export * from "./messages.js";
export * from "./frames.js";
export * from "./grant.js";

// Who may take part, decided on each side: an allow-list file names the peers
// (a gateway's: the nodes it routes through; a node's: the gateways it
// serves), a pre-shared swarm key closes the links to everyone without it, or
// the swarm is open. Peers that misbehave are banned for a while, by peer id
// and (after repeated bans) by address, since identities cost nothing.

import * as fs from "node:fs";
import * as os from "node:os";
import { LayerswarmError } from "../errors.js";
import { addressGroup, isRelayed, relayGroupOf } from "./addrgroup.js";
import { isPeerId } from "./identity.js";
import { ConnectionGate } from "./transport.js";

const isLoopback = (ip: string) => ip.startsWith("127.") || ip === "::1";

// This machine's interface addresses (a process here that dials another one's
// LAN address connects from one of them).
export function thisMachine(): Set<string> {
  return new Set(Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((i) => i.address)));
}

export type PolicyKind = "open" | "allow-list" | "swarm-key";

export function readAllowList(file: string): Set<string> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new LayerswarmError("BAD_ARGUMENT", `--allow ${file}: ${(e as Error).message}`);
  }
  const peers = new Set<string>();
  text.split("\n").forEach((line, i) => {
    const s = line.replace(/#.*/, "").trim();
    if (!s) return;
    if (!isPeerId(s)) throw new LayerswarmError("BAD_ARGUMENT", `--allow ${file}:${i + 1}: "${s.slice(0, 60)}" is not a peer id`);
    peers.add(s);
  });
  return peers;
}

export interface GateOptions {
  allow?: Set<string>; // undefined: open
  maxConnectionsPerIp?: number; // default 32 (an IPv6 /64 is one address here: addrgroup.ts)
  maxConnectionsPerRelayedPeer?: number; // default 4: one peer reached through one relay
  maxConnectionsPerRelay?: number; // default 128, above what a relay lets through (RELAY_LIMITS.circuits)
  banMs?: number; // default 10 minutes
  local?: Set<string>; // addresses treated like loopback: this machine's (thisMachine())
}

export class PeerGate implements ConnectionGate {
  private bans = new Map<string, { until: number; reason: string }>();
  private ipStrikes = new Map<string, { n: number; until: number }>();
  readonly connectionsPerIp = new Map<string, number>(); // by address group or relayed peer (addrgroup.ts)
  private connectionsPerRelay = new Map<string, number>();
  constructor(private o: GateOptions = {}) {}

  get kind(): "open" | "allow-list" {
    return this.o.allow ? "allow-list" : "open";
  }

  allowed(peer: string): boolean {
    return !this.o.allow || this.o.allow.has(peer);
  }

  banned(peer: string): string | undefined {
    const b = this.bans.get(peer);
    if (!b) return undefined;
    if (Date.now() > b.until) {
      this.bans.delete(peer);
      return undefined;
    }
    return b.reason;
  }

  // A peer broke the protocol or a limit on purpose: keep it out for a while.
  // An address whose peers are banned again and again is kept out too; never
  // a relayed peer's (its relay's address, shared with everyone behind it).
  ban(peer: string, ip: string | undefined, reason: string, ms = this.o.banMs ?? 10 * 60_000): void {
    ip = ip === undefined || isRelayed(ip) ? undefined : addressGroup(ip);
    const until = Date.now() + ms;
    this.bans.set(peer, { until, reason });
    if (this.bans.size > 100_000) this.bans.delete(this.bans.keys().next().value!);
    if (ip) {
      const s = this.ipStrikes.get(ip) ?? { n: 0, until: 0 };
      s.n++;
      if (s.n >= 8) s.until = until;
      this.ipStrikes.set(ip, s);
    }
  }

  // Connections: everyone not banned. (Allow-lists are applied per use, by the
  // node and the gateway: a node must still accept frames from the previous
  // stages of the routes its gateways sign.)
  allowPeer(peer: string): boolean {
    return this.banned(peer) === undefined;
  }

  allowIp(raw: string): boolean {
    const ip = addressGroup(raw);
    // a relayed peer: never local, never banned by address; capped per peer and per relay
    if (isRelayed(ip))
      return (this.connectionsPerIp.get(ip) ?? 0) < (this.o.maxConnectionsPerRelayedPeer ?? 4) &&
        (this.connectionsPerRelay.get(relayGroupOf(ip)!) ?? 0) < (this.o.maxConnectionsPerRelay ?? 128);
    // a local swarm (layerswarm run, or several processes on one machine) is
    // one address, and whoever is on this machine has it anyway: this
    // machine's addresses are never banned or capped as addresses
    if (isLoopback(raw) || this.o.local?.has(raw)) return true;
    const s = this.ipStrikes.get(ip);
    if (s && s.until > Date.now()) return false;
    return (this.connectionsPerIp.get(ip) ?? 0) < (this.o.maxConnectionsPerIp ?? 32);
  }

  opened(ip: string): void {
    ip = addressGroup(ip);
    this.connectionsPerIp.set(ip, (this.connectionsPerIp.get(ip) ?? 0) + 1);
    const r = relayGroupOf(ip);
    if (r) this.connectionsPerRelay.set(r, (this.connectionsPerRelay.get(r) ?? 0) + 1);
  }
  closed(ip: string): void {
    ip = addressGroup(ip);
    drop(this.connectionsPerIp, ip);
    const r = relayGroupOf(ip);
    if (r) drop(this.connectionsPerRelay, r);
  }
}

function drop(m: Map<string, number>, k: string): void {
  const n = (m.get(k) ?? 1) - 1;
  if (n <= 0) m.delete(k);
  else m.set(k, n);
}

// What each process says at start about the swarm it takes part in.
export function policyNotice(role: "node" | "gateway", kind: PolicyKind): string {
  if (kind === "allow-list")
    return role === "gateway"
      ? "layerswarm: routing only through the nodes in --allow; they still see the hidden states they compute"
      : "layerswarm: serving only the gateways in --allow";
  if (kind === "swarm-key") return "layerswarm: private swarm: only peers with the swarm key can connect; they can read the hidden states they compute";
  return role === "gateway"
    ? "layerswarm: OPEN swarm: any node may join and serve your layers. Nodes see the hidden states they compute, which can be inverted back to text " +
        "(--local-layers/--local-tail keep the first and last layers here); a node may return wrong results, which audits catch after the fact and --verify strict before any token is released. Use --allow FILE or --swarm-key to choose who serves you."
    : "layerswarm: OPEN swarm: any gateway may use this node, within its limits (--allow FILE serves only chosen gateways)";
}

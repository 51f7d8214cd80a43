// Who a connection counts as, for every limit and ban kept per address. One
// IPv4 address is one group; IPv6 is grouped by /64, the least a home or a
// server is given (an attacker with a /64 has 2^64 addresses, one group here).
// A relayed connection's address is its relay's plus /p2p-circuit: counted as
// its relay's, one peer could fill the relay's share (or get its address
// banned) and cut everyone behind that relay off; so it is its own group,
// "relay:<relay peer>/<peer>", never exempt as local and never banned as an
// address (relayGroupOf gives the relay part, for a cap per relay).

import { multiaddr, type Multiaddr } from "@multiformats/multiaddr";

// IPv6 text as 8 numbers (undefined if it is not IPv6); an IPv4 tail (::ffff:1.2.3.4) counts as two.
function ip6Words(ip: string): number[] | undefined {
  const s = ip.split("%")[0];
  if (!s.includes(":") || isRelayed(s) || s.includes("/")) return undefined;
  let tail: number[] = [];
  let text = s;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const b = v4.slice(1, 5).map(Number);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    text = s.slice(0, v4.index) + "0:0"; // placeholder words, replaced below
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const part = (h: string) => (h ? h.split(":").map((x) => parseInt(x, 16)) : []);
  const head = part(halves[0]), rest = halves.length === 2 ? part(halves[1]) : [];
  const fill = 8 - head.length - rest.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return undefined;
  const w = [...head, ...new Array(fill).fill(0), ...rest];
  if (w.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffff)) return undefined;
  if (v4) w.splice(6, 2, ...tail);
  return w;
}

const mappedV4 = (w: number[]) => w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff;
const v4Of = (w: number[]) => `${w[6] >> 8}.${w[6] & 255}.${w[7] >> 8}.${w[7] & 255}`;

// The group an IP address is limited as: IPv4 itself, IPv6 its /64 ("2001:db8:0:1::/64").
// Anything else (a group already, a relay key, a name) is returned as it is.
export function addressGroup(ip: string): string {
  const w = ip6Words(ip);
  if (!w) return ip;
  if (mappedV4(w)) return v4Of(w);
  if (w.slice(0, 7).every((x) => x === 0) && w[7] === 1) return "::1"; // loopback stays recognisable
  return `${w.slice(0, 4).map((x) => x.toString(16)).join(":")}::/64`;
}

// A wider network, for "answers from different networks": IPv4 /16, IPv6 /48.
export function networkOf(ip: string): string {
  const w = ip6Words(ip);
  if (w && !mappedV4(w)) return `${w.slice(0, 3).map((x) => x.toString(16)).join(":")}::/48`;
  const v4 = w ? v4Of(w) : ip;
  const b = v4.split(".");
  return b.length === 4 ? `${b[0]}.${b[1]}.0.0/16` : ip;
}

export const isRelayed = (key: string): boolean => key.startsWith("relay:");

// "relay:<relay>/<peer>" -> "relay:<relay>"
export function relayGroupOf(key: string): string | undefined {
  if (!isRelayed(key)) return undefined;
  const i = key.indexOf("/");
  return i < 0 ? key : key.slice(0, i);
}

// The IP a multiaddr starts with (DNS names as they are), undefined if none.
export function ipOfAddr(ma: Multiaddr): string | undefined {
  return ma.getComponents().find((x) => ["ip4", "ip6", "dns4", "dns6", "dns"].includes(x.name))?.value;
}

// The key a remote address is limited by: its address group, or for a
// circuit (<relay's address>/p2p/<relay>/p2p-circuit/p2p/<peer>)
// "relay:<relay>/<peer>".
export function remoteKey(ma: Multiaddr): string {
  return addressGroup(remoteAddress(ma));
}

// The same before grouping: the IP itself (so that this machine's own
// addresses can be recognised), or the relay key.
export function remoteAddress(ma: Multiaddr): string {
  const c = ma.getComponents();
  const at = c.findIndex((x) => x.name === "p2p-circuit");
  if (at >= 0) {
    const relay = c.slice(0, at).filter((x) => x.name === "p2p").at(-1)?.value ?? addressGroup(ipOfAddr(ma) ?? "?");
    const peer = c.slice(at + 1).filter((x) => x.name === "p2p").at(-1)?.value ?? "?";
    return `relay:${relay}/${peer}`;
  }
  return ipOfAddr(ma) ?? ma.toString();
}

// The group of the first address a peer claims (multiaddr strings): its IP's
// group, or for a peer reachable only through relays, "relay:<relay>/<peer>".
export function groupOfClaimed(addrs: string[], peer: string): string | undefined {
  let relayed: string | undefined;
  for (const a of addrs) {
    let ma: Multiaddr;
    try {
      ma = multiaddr(a);
    } catch {
      continue;
    }
    const key = remoteKey(ma);
    if (!isRelayed(key)) return ipOfAddr(ma) ? key : undefined;
    relayed ??= `${relayGroupOf(key)}/${peer}`;
  }
  return relayed;
}

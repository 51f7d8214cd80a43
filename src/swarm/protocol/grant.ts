// The route grant: a session's route, signed once by the gateway that opened
// the session. It travels with the session's first frame as a capability: a
// node serves a session's step only when the grant names it at that hop and
// the frame came from the gateway (hop 0) or from the previous stage the grant
// names; results go back only to the gateway that signed it.
//
//   [payload bytes u32][payload: JSON RouteGrant][signature bytes u16][ed25519 signature over DOMAIN + payload]

import { z } from "zod";
import { LayerswarmError } from "../../errors.js";
import { Identity, verifySignature } from "../identity.js";
import { AddrText, MAX_ADDRS, PeerIdText, SessionIdText } from "./messages.js";
import { MAX_GRANT_BYTES, MAX_HOPS } from "./frames.js";
import { PROTOCOL_VERSION } from "./version.js";

const DOMAIN = Buffer.from("layerswarm/route-grant/2\n");

const uint = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const Hop = z.object({ peer: PeerIdText, addrs: z.array(AddrText).max(MAX_ADDRS), start: uint, end: uint });
export type Hop = z.infer<typeof Hop>;

export const RouteGrant = z.object({
  v: z.literal(PROTOCOL_VERSION),
  gateway: PeerIdText,
  gatewayAddrs: z.array(AddrText).max(MAX_ADDRS),
  session: SessionIdText,
  hops: z.array(Hop).min(1).max(MAX_HOPS),
  issuedAt: uint, // ms since the epoch, for telling a newer grant of the same session from an older one
});
export type RouteGrant = z.infer<typeof RouteGrant>;

export interface SignedGrant {
  grant: RouteGrant;
  bytes: Uint8Array; // the extension as sent: forwarded unchanged along the route
}

export async function signGrant(g: RouteGrant, id: Identity): Promise<SignedGrant> {
  if (g.gateway !== id.peerId) throw new LayerswarmError("BAD_ARGUMENT", "a route grant is signed by the gateway it names");
  const payload = Buffer.from(JSON.stringify(g), "utf8");
  const sig = await id.sign(Buffer.concat([DOMAIN, payload]));
  const b = Buffer.alloc(4 + payload.length + 2 + sig.length);
  b.writeUInt32LE(payload.length, 0);
  payload.copy(b, 4);
  b.writeUInt16LE(sig.length, 4 + payload.length);
  b.set(sig, 6 + payload.length);
  if (b.length > MAX_GRANT_BYTES) throw new LayerswarmError("BAD_ARGUMENT", `route grant of ${b.length} bytes is too large`);
  return { grant: g, bytes: b };
}

// Decodes, validates against the model and verifies the signature. Throws
// BAD_MESSAGE (malformed) or FORBIDDEN (a signature that does not verify).
export async function openGrant(bytes: Uint8Array, nLayers: number): Promise<SignedGrant> {
  const fail = (m: string): never => {
    throw new LayerswarmError("BAD_MESSAGE", `route grant: ${m}`);
  };
  if (bytes.length < 6) fail("truncated");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const pl = dv.getUint32(0, true);
  if (4 + pl + 2 > bytes.length) fail("truncated payload");
  const payload = bytes.subarray(4, 4 + pl);
  const sl = dv.getUint16(4 + pl, true);
  if (6 + pl + sl !== bytes.length || sl === 0 || sl > 128) fail("bad signature length");
  const sig = bytes.subarray(6 + pl);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch {
    fail("payload is not JSON");
  }
  const r = RouteGrant.safeParse(raw);
  if (!r.success) fail(`${r.error!.issues[0].path.join(".")}: ${r.error!.issues[0].message}`);
  const g = r.data!;
  for (let i = 0; i < g.hops.length; i++) {
    const h = g.hops[i];
    if (h.start >= h.end || h.end > nLayers) fail(`hop ${i} has layers [${h.start}, ${h.end}) outside the model's ${nLayers}`);
    if (i > 0 && g.hops[i - 1].end !== h.start) fail(`hop ${i} starts at layer ${h.start}, the previous hop ends at ${g.hops[i - 1].end}`);
  }
  if (!(await verifySignature(g.gateway, Buffer.concat([DOMAIN, payload]), sig)))
    throw new LayerswarmError("FORBIDDEN", "route grant: the signature does not verify with the gateway's key");
  return { grant: g, bytes };
}

// Who may send hop `hop` of this route: the gateway for the first stage, the previous stage otherwise.
export function expectedSender(g: RouteGrant, hop: number): string {
  return hop === 0 ? g.gateway : g.hops[hop - 1].peer;
}

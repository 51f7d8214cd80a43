// Signing through node:crypto gives libp2p's own Ed25519 signatures, bit for
// bit, and each side verifies the other's.

import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { Identity, verifySignature, verifySignatureSync } from "./identity.js";

describe("Identity signing", () => {
  it("signSync and sign give exactly libp2p's signature; both verifiers accept it and refuse a changed one", async () => {
    for (let i = 0; i < 4; i++) {
      const id = await Identity.generate(), data = randomBytes(1 + 97 * i);
      const theirs = await id.key.sign(data), ours = id.signSync(data);
      expect(Buffer.from(ours)).toEqual(Buffer.from(theirs));
      expect(Buffer.from(await id.sign(data))).toEqual(Buffer.from(theirs));
      expect(await id.key.publicKey.verify(data, ours)).toBe(true);
      expect(verifySignatureSync(id.peerId, data, theirs)).toBe(true);
      expect(await verifySignature(id.peerId, data, theirs)).toBe(true);
      const bad = Uint8Array.from(ours);
      bad[5] ^= 1;
      expect(verifySignatureSync(id.peerId, data, bad)).toBe(false);
      expect(await verifySignature(id.peerId, data, bad)).toBe(false);
      expect(verifySignatureSync((await Identity.generate()).peerId, data, ours)).toBe(false);
      expect(verifySignatureSync("not a peer id", data, ours)).toBe(false);
      expect(verifySignatureSync(id.peerId, data, ours.subarray(0, 63))).toBe(false);
    }
  });
});

// A peer's identity: an ed25519 key whose public half is its peer id. Nodes
// and gateways keep theirs in the state directory so that allow-lists, node
// records, bans and (later) receipts can name them across restarts. The same
// key authenticates libp2p links (Noise) and signs route grants and receipts.
//
// Signing and verifying go through Node's own crypto (OpenSSL) with the key as
// a cached KeyObject: the same Ed25519 signatures as libp2p's JavaScript
// implementation (identity.test.ts checks it), about three times as fast,
// which counts when a node signs receipts on every batch.

import * as fs from "node:fs";
import * as path from "node:path";
import { KeyObject, createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey, peerIdFromString } from "@libp2p/peer-id";
import type { PrivateKey } from "@libp2p/interface";
import { LayerswarmError } from "../errors.js";

// DER wrappers of raw Ed25519 keys (RFC 8410): PKCS#8 around the 32-byte seed, SPKI around the 32-byte public key.
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");

export class Identity {
  readonly peerId: string;
  private native?: KeyObject; // the Ed25519 key for node:crypto, made on first use
  constructor(readonly key: PrivateKey) {
    this.peerId = peerIdFromPrivateKey(key).toString();
  }
  static async generate(): Promise<Identity> {
    return new Identity(await generateKeyPair("Ed25519"));
  }
  async sign(data: Uint8Array): Promise<Uint8Array> {
    return this.key.type === "Ed25519" ? this.signSync(data) : this.key.sign(data);
  }
  // Synchronous (for the step path): Ed25519 keys only (libp2p's .raw is seed then public key, 64 bytes).
  signSync(data: Uint8Array): Uint8Array {
    if (this.key.type !== "Ed25519") throw new LayerswarmError("UNSUPPORTED", `signSync: a ${this.key.type} key (Ed25519 only)`);
    this.native ??= createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, this.key.raw.subarray(0, 32)]), format: "der", type: "pkcs8" });
    return new Uint8Array(cryptoSign(null, data, this.native));
  }
}

// Two live processes with one identity would fight over it: the second is
// refused. The lock is a pid file beside the key, removed at exit.
function lockIdentity(file: string): void {
  const lock = `${file}.pid`;
  try {
    const pid = Number(fs.readFileSync(lock, "utf8"));
    if (pid > 0 && pid !== process.pid) {
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = true;
      } catch { /* gone */ }
      if (alive) throw new LayerswarmError("BAD_ARGUMENT", `process ${pid} already runs with the identity ${file}: give this one its own with --key FILE`);
    }
  } catch (e) {
    if (e instanceof LayerswarmError) throw e;
  }
  fs.writeFileSync(lock, String(process.pid));
  process.once("exit", () => {
    try {
      if (fs.readFileSync(lock, "utf8") === String(process.pid)) fs.unlinkSync(lock);
    } catch { /* already gone */ }
  });
}

// Loads the key in `file`, or creates it (mode 0600) when it does not exist.
// With `lock`, refuses a key that another live process is using.
export async function loadOrCreateIdentity(file: string | undefined, lock = false): Promise<Identity> {
  if (!file) return Identity.generate();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  if (lock) lockIdentity(file);
  if (fs.existsSync(file)) {
    try {
      return new Identity(privateKeyFromProtobuf(fs.readFileSync(file)));
    } catch (e) {
      throw new LayerswarmError("BAD_FILE", `${file} is not a libp2p private key (${(e as Error).message}); move it away to create a new identity`);
    }
  }
  const id = await Identity.generate();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, privateKeyToProtobuf(id.key), { mode: 0o600 });
  return id;
}

// Public keys of the peers seen lately, as node:crypto KeyObjects (most recent last, at most 1024).
const publicKeys = new Map<string, KeyObject | null>();
function nativePublicKey(peer: string): KeyObject | null {
  let k = publicKeys.get(peer);
  if (k === undefined) {
    const pk = peerIdFromString(peer).publicKey;
    k = pk?.type === "Ed25519" ? createPublicKey({ key: Buffer.concat([SPKI_ED25519, pk.raw]), format: "der", type: "spki" }) : null;
    if (publicKeys.size >= 1024) publicKeys.delete(publicKeys.keys().next().value!);
  } else publicKeys.delete(peer);
  publicKeys.set(peer, k);
  return k;
}

// Does `sig` sign `data` with the key behind `peer`? False for anything
// malformed. Synchronous for Ed25519 peer ids; false for other key types.
export function verifySignatureSync(peer: string, data: Uint8Array, sig: Uint8Array): boolean {
  try {
    const k = nativePublicKey(peer);
    return k !== null && sig.length === 64 && cryptoVerify(null, data, k, sig);
  } catch {
    return false;
  }
}

export async function verifySignature(peer: string, data: Uint8Array, sig: Uint8Array): Promise<boolean> {
  try {
    const pk = peerIdFromString(peer).publicKey;
    if (!pk) return false;
    return pk.type === "Ed25519" ? verifySignatureSync(peer, data, sig) : await pk.verify(data, sig);
  } catch {
    return false;
  }
}

export function isPeerId(s: string): boolean {
  try {
    return peerIdFromString(s).publicKey !== undefined;
  } catch {
    return false;
  }
}

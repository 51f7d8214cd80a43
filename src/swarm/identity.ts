// A peer's identity: an ed25519 key whose public half is its peer id. Nodes
// and gateways keep theirs in the state directory so that allow-lists, node
// records, bans and (later) receipts can name them across restarts. The same
// key authenticates libp2p links (Noise) and signs route grants.

import * as fs from "node:fs";
import * as path from "node:path";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { peerIdFromPrivateKey, peerIdFromString } from "@libp2p/peer-id";
import type { PrivateKey } from "@libp2p/interface";
import { LayerswarmError } from "../errors.js";

export class Identity {
  readonly peerId: string;
  constructor(readonly key: PrivateKey) {
    this.peerId = peerIdFromPrivateKey(key).toString();
  }
  static async generate(): Promise<Identity> {
    return new Identity(await generateKeyPair("Ed25519"));
  }
  async sign(data: Uint8Array): Promise<Uint8Array> {
    return this.key.sign(data);
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

// Does `sig` sign `data` with the key behind `peer`? False for anything malformed.
export async function verifySignature(peer: string, data: Uint8Array, sig: Uint8Array): Promise<boolean> {
  try {
    const pk = peerIdFromString(peer).publicKey;
    if (!pk) return false;
    return await pk.verify(data, sig);
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

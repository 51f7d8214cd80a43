// A node checks for itself that another holds layers, before it counts that
// holder as cover for layers it would give up (a move): a record says which
// layers a peer serves and its layer hashes can be copied from an honest one,
// so the record proves nothing. The check is a real step: a session of this
// node's own (a grant it signs as the session's gateway) of a few random rows
// through the other's copy of those layers, whose result must equal bit for
// bit what this node computes for the same rows (numerics are exact). A peer
// that refuses, does not answer in time or answers other bits is not cover.
// Passed checks are remembered for a while (ttlMs).

import { randomBytes, randomInt } from "node:crypto";
import { LayerswarmError } from "../../errors.js";
import { LayerRange } from "../../model/config.js";
import { Identity } from "../identity.js";
import { Outbox } from "../outbox.js";
import { CODEC_PLANES, DType, ErrorFrame, Ext, PROTOCOL_VERSION, ResultFrame, encodeStep, signGrant } from "../protocol/index.js";
import { Transport } from "../transport.js";

export interface VerifyDeps {
  t: Transport;
  identity: Identity;
  outbox: Outbox;
  dim: number;
  // this node's own result for rows at positions 0.. through these layers (a fresh session, dropped after)
  compute(range: LayerRange, hidden: Float32Array, T: number): Float32Array;
}

export class HolderCheck {
  private waiting = new Map<string, { peer: string; settle: (r: ResultFrame | Error) => void }>();
  private passed = new Map<string, number>(); // `${peer}|${start}:${end}` -> when it passed
  stats = { checks: 0, passed: 0, failed: 0 };

  constructor(private d: VerifyDeps, private ttlMs = 5 * 60_000) {}

  // Whether this peer passed a check of exactly these layers within ttlMs.
  known(peer: string, r: LayerRange): boolean {
    const at = this.passed.get(`${peer}|${r.start}:${r.end}`);
    return at !== undefined && Date.now() - at < this.ttlMs;
  }

  // Check that `peer` computes layers r as this node does. Never throws: false when it does not show it.
  async check(peer: string, addrs: string[], r: LayerRange, timeoutMs = 10_000): Promise<boolean> {
    if (this.known(peer, r)) return true;
    this.stats.checks++;
    const sid = randomBytes(16).toString("hex");
    const T = randomInt(1, 5), dim = this.d.dim;
    // plausible hidden states: small values of either sign, different every time
    const hidden = new Float32Array(T * dim);
    const raw = randomBytes(hidden.length * 2);
    for (let i = 0; i < hidden.length; i++) hidden[i] = (raw.readInt16LE(2 * i) / 32768) * 0.5;
    let timer: NodeJS.Timeout | undefined;
    try {
      const me = this.d.t.peerId;
      const grant = await signGrant({
        v: PROTOCOL_VERSION, gateway: me, gatewayAddrs: this.d.t.addrs().slice(0, 16), session: sid, issuedAt: Date.now(),
        hops: [{ peer, addrs: addrs.slice(0, 16), start: r.start, end: r.end }],
      }, this.d.identity);
      const answer = new Promise<ResultFrame | Error>((settle) => this.waiting.set(sid, { peer, settle }));
      const msg = encodeStep({
        req: randomInt(1, 2 ** 31), session: sid, pos: 0, T, dim, dtype: DType.F32, flags: 0, hop: 0, hidden,
        ext: [{ kind: Ext.ROUTE_GRANT, data: grant.bytes }, { kind: Ext.ACCEPTS, data: Uint8Array.of(CODEC_PLANES) }],
      });
      await this.d.outbox.send(peer, addrs, msg);
      const res = await Promise.race([answer, new Promise<Error>((ok) => (timer = setTimeout(() => ok(new LayerswarmError("UNREACHABLE", "no answer")), timeoutMs)))]);
      if (res instanceof Error) throw res;
      const ours = this.d.compute(r, hidden, T);
      const same = res.T === T && res.hidden.length === ours.length &&
        Buffer.from(res.hidden.buffer, res.hidden.byteOffset, res.hidden.byteLength).equals(Buffer.from(ours.buffer, ours.byteOffset, ours.byteLength));
      if (!same) throw new LayerswarmError("BAD_MESSAGE", "answered other bits than this node computes");
      this.passed.set(`${peer}|${r.start}:${r.end}`, Date.now());
      if (this.passed.size > 4096) this.passed.delete(this.passed.keys().next().value!);
      this.stats.passed++;
      return true;
    } catch {
      this.stats.failed++;
      return false;
    } finally {
      clearTimeout(timer);
      this.waiting.delete(sid);
    }
  }

  pending(session: string): boolean {
    return this.waiting.has(session);
  }

  // A result frame that arrived on this node's steps streams: ours if it answers a check, from the peer checked.
  onResult(f: ResultFrame, from: string): boolean {
    const p = this.waiting.get(f.session);
    if (!p || p.peer !== from) return false;
    p.settle(f);
    return true;
  }

  onError(e: ErrorFrame, from: string): boolean {
    const p = this.waiting.get(e.session);
    if (!p || p.peer !== from) return false;
    p.settle(new LayerswarmError(e.code, e.message));
    return true;
  }
}

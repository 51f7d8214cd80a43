// A node's session table: every session belongs to the gateway that signed its
// route grant. When the table is full, a new session is admitted by evicting
// the least recently stepped session of whoever holds the most (first by
// address, then by gateway), so a peer that opens hundreds of sessions, under
// one identity or a hundred, takes room from itself and not from others.
// Pure bookkeeping: no networking, no model.

import { LayerswarmError } from "../../errors.js";
import { DType, SignedGrant } from "../protocol/index.js";

export interface NodeSession {
  id: string; // 32 hex characters, chosen by the gateway
  gateway: string; // the peer that signed the grant: the only one that may drop it
  grant: SignedGrant;
  accepts?: Uint8Array; // per hop of the grant, the codecs its output's receiver takes (frames.ts ACCEPTS; the gateway's word)
  ip: string; // the address its first frame came from
  createdAt: number;
  lastStep: number;
  sent?: { req: number; to: string; at: number }; // its last frame forwarded to a next stage (told to the gateway when that link is cut)
  receiptSeq?: Record<number, number>; // per hop of the route: the number of this node's last receipt there (numbered 0, 1, 2 ... per session and hop)
  // per hop: the position its next step must start at. Positions only grow: a
  // stage that sent an earlier one again would rewrite this node's cache
  // behind the gateway's back (and its receipts, so that an audit blamed this
  // node); going back takes a rollback, which its receipts state
  nextPos?: Record<number, number>;
  dtypes?: Record<number, DType>; // per hop: how its rows travel (what its receipts state, a rollback's too)
}

export class SessionTable {
  private byId = new Map<string, NodeSession>();
  constructor(readonly max: number) {}

  get size(): number {
    return this.byId.size;
  }
  get(id: string): NodeSession | undefined {
    return this.byId.get(id);
  }
  values(): IterableIterator<NodeSession> {
    return this.byId.values();
  }
  delete(id: string): boolean {
    return this.byId.delete(id);
  }

  // Admit `s`; returns the session evicted to make room, if any. Throws BUSY
  // when the newcomer's own address and gateway already hold the most.
  admit(s: NodeSession): NodeSession | undefined {
    if (this.byId.has(s.id)) throw new LayerswarmError("FORBIDDEN", "session id already in use");
    let evicted: NodeSession | undefined;
    if (this.byId.size >= this.max) {
      evicted = this.victim(s);
      if (!evicted) throw new LayerswarmError("BUSY", `all ${this.max} session slots are taken and this gateway already holds its share`);
      this.byId.delete(evicted.id);
    }
    this.byId.set(s.id, s);
    return evicted;
  }

  // Max-min fairness: take from the address holding at least two more sessions
  // than the newcomer's; failing that, from the gateway of the newcomer's own
  // address holding at least two more than the newcomer's gateway (a margin of
  // two, so that two peers cannot take a slot back and forth for ever).
  private victim(s: NodeSession): NodeSession | undefined {
    const all = [...this.byId.values()];
    const biggest = (key: (x: NodeSession) => string, among: NodeSession[]) => {
      const m = new Map<string, number>();
      for (const x of among) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
      const [k, n] = [...m].sort((a, b) => b[1] - a[1])[0] ?? ["", 0];
      return { k, n, of: (v: string) => m.get(v) ?? 0 };
    };
    const ips = biggest((x) => x.ip, all);
    let pool: NodeSession[];
    if (ips.n >= ips.of(s.ip) + 2) {
      const inIp = all.filter((x) => x.ip === ips.k);
      const gws = biggest((x) => x.gateway, inIp);
      pool = inIp.filter((x) => x.gateway === gws.k);
    } else {
      const mine = all.filter((x) => x.ip === s.ip);
      const gws = biggest((x) => x.gateway, mine);
      if (gws.n < gws.of(s.gateway) + 2) return undefined;
      pool = mine.filter((x) => x.gateway === gws.k);
    }
    return pool.sort((a, b) => a.lastStep - b.lastStep)[0];
  }

  // Sessions not stepped since `before`.
  idle(before: number): NodeSession[] {
    return [...this.byId.values()].filter((x) => x.lastStep < before);
  }
}

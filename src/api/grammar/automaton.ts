// The byte automaton: a pushdown machine over UTF-8 bytes that accepts exactly
// the texts of a grammar's values (schema.ts). A state is immutable: step(b)
// gives the state after byte b, or null when no valid text continues that way.
// It also knows whether the text may end here (complete), must end here
// (finished), and how many bytes at least close it from here (closeCost).
//
// Bytes, not characters: tokens are byte strings (a byte-fallback token can be
// half a character), so UTF-8 is checked here, byte by byte.
//
// The stack holds one frame per open construct, outermost first. A frame whose
// child is open (the frame above it) is in a "child" phase and resumes in
// childDone() when the child closes. Numbers (and enum values like 1 vs 12)
// have no closing byte: such a frame ends when a byte it cannot take arrives,
// and that byte goes on to the frame below.

import { ArrayNode, Grammar, LiteralNode, Node, ObjectNode, SeqNode, StringNode, SwitchNode, entryBytes } from "./schema.js";

const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a, LBRACE = 0x7b, RBRACE = 0x7d, LBRACKET = 0x5b, RBRACKET = 0x5d, MINUS = 0x2d, PLUS = 0x2b, DOT = 0x2e;
const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x09; // (no \r: see nextWs)
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

export const MAX_NUMBER_BYTES = 24; // a longer number is refused (its text, sign and exponent included)
const MAX_EXPONENT_DIGITS = 2; // so that every number the automaton accepts is finite

// ---- the string scanner: escapes and UTF-8, packed in one integer ----
// bits 0-2: escape (0 none, 1 after '\', 2 after '\u', 3 one hex digit, 4 two, 5 three, 6 '\uD': next digit 0-7)
// bits 3-4: UTF-8 continuation bytes still needed; bits 5-7: the allowed range of the next one
const CONT = [[0x80, 0xbf], [0xa0, 0xbf], [0x80, 0x9f], [0x90, 0xbf], [0x80, 0x8f]];
const R_ANY = 0, R_A0 = 1, R_9F = 2, R_90 = 3, R_8F = 4;
const cont = (need: number, range: number) => (need << 3) | (range << 5);
const SCAN_CLOSE = -2;

// scanner state, byte -> scanner state | -1 (invalid) | SCAN_CLOSE (the closing quote)
function scanStep(s: number, b: number): number {
  if (s === 0) {
    if (b === QUOTE) return SCAN_CLOSE;
    if (b === BACKSLASH) return 1;
    if (b < 0x20) return -1; // control characters must be escaped
    if (b < 0x80) return 0;
    if (b < 0xc2) return -1; // a continuation byte, or an overlong lead
    if (b < 0xe0) return cont(1, R_ANY);
    if (b === 0xe0) return cont(2, R_A0); // no overlongs
    if (b === 0xed) return cont(2, R_9F); // no UTF-16 surrogates
    if (b < 0xf0) return cont(2, R_ANY);
    if (b === 0xf0) return cont(3, R_90);
    if (b < 0xf4) return cont(3, R_ANY);
    if (b === 0xf4) return cont(3, R_8F); // nothing above U+10FFFF
    return -1;
  }
  const need = (s >> 3) & 3;
  if (need > 0) {
    const [lo, hi] = CONT[s >> 5];
    if (b < lo || b > hi) return -1;
    return need > 1 ? cont(need - 1, R_ANY) : 0;
  }
  switch (s & 7) {
    case 1:
      if (b === 0x75) return 2; // \u
      return b === QUOTE || b === BACKSLASH || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e || b === 0x72 || b === 0x74 ? 0 : -1;
    case 2: return b === 0x44 || b === 0x64 ? 6 : isHex(b) ? 3 : -1;
    case 6: return b >= 0x30 && b <= 0x37 ? 4 : -1; // \uD800-\uDFFF (surrogates) are refused: raw UTF-8 instead
    case 3: return isHex(b) ? 4 : -1;
    case 4: return isHex(b) ? 5 : -1;
    case 5: return isHex(b) ? 0 : -1;
  }
  return -1;
}
// bytes that complete the current escape or UTF-8 sequence, at least
function scanPending(s: number): number {
  const need = (s >> 3) & 3;
  if (need) return need;
  return [0, 1, 4, 3, 2, 1, 3][s & 7];
}
// the shortest bytes that complete it
function scanCompletion(s: number): string {
  const need = (s >> 3) & 3;
  if (need) return String.fromCharCode(CONT[s >> 5][0]) + "\x80".repeat(need - 1);
  return ["", "n", "0000", "000", "00", "0", "000"][s & 7];
}

// A string body the automaton is in: closeCost() is
// scanPending(scan) + max(0, minLength - n) + after, and in a key (key: true)
// the escapes \u and \/ are refused.
export interface StringBody {
  key: boolean;
  n: number; // characters begun
  scan: number; // the scanner's state
  minLength: number;
  maxLength: number;
  after: number;
}
export { SCAN_CLOSE, scanPending, scanStep };

// the bytes closings are made of first, then every other
const COMPLETION_ORDER: number[] = (() => {
  const first = [...Buffer.from('"}],:0a{[tnf-.eu\\')];
  const rest = Array.from({ length: 256 }, (_, b) => b).filter((b) => !first.includes(b));
  return [...first, ...rest];
})();

// ---- frames ----
const ROOT = 0, OBJ = 1, ARR = 2, STR = 3, NUM = 4, LIT = 5, SEQ = 6, SW = 7;
// ROOT phases
const R_BEFORE = 0, R_CHILD = 1, R_DONE = 2;
// OBJ phases
const O_OPEN = 0, O_KEY = 1, O_COLON = 2, O_VALUE = 3, O_CHILD = 4, O_AFTER = 5, O_COMMA = 6;
// ARR phases
const A_OPEN = 0, A_CHILD = 1, A_AFTER = 2, A_COMMA = 3;
// NUM phases; the ones marked * may end there
const N_SIGN = 0, N_ZERO = 1 /* * */, N_INT = 2 /* * */, N_DOT = 3, N_FRAC = 4 /* * */, N_EXP = 5, N_EXP_SIGN = 6, N_EXP_DIGITS = 7; /* * */
const numCanEnd = (ph: number) => ph === N_ZERO || ph === N_INT || ph === N_FRAC || ph === N_EXP_DIGITS;
// SEQ / SW phases
const S_BEFORE = 0, S_CHILD = 1, S_TAG = 2;

interface RootF { t: typeof ROOT; node: Node; ph: number }
interface ObjF {
  t: typeof OBJ; node: ObjectNode; ph: number;
  seen: readonly string[]; // keys given so far, sorted
  cur: string | null; // the key whose value comes next (O_COLON, O_VALUE, O_CHILD); null: a key of no declared name
  raw: string; // O_KEY: the key's bytes so far (one char per byte), while it can still become a declared name
  scan: number; // O_KEY with free keys: the string scanner
  alive: readonly string[]; // O_KEY: declared names the key can still become
}
interface ArrF { t: typeof ARR; node: ArrayNode; ph: number; n: number } // n: items begun
interface StrF { t: typeof STR; node: StringNode; n: number; scan: number } // n: characters begun
interface NumF { t: typeof NUM; integer: boolean; ph: number; len: number; exp: number }
interface LitF { t: typeof LIT; node: LiteralNode; alive: readonly number[]; pos: number }
interface SeqF { t: typeof SEQ; node: SeqNode; idx: number; ph: number }
interface SwF { t: typeof SW; node: SwitchNode; alive: readonly number[]; pos: number; ph: number; pick: number }
type Frame = RootF | ObjF | ArrF | StrF | NumF | LitF | SeqF | SwF;

const WS_NONE = 0, WS_SPACE = 1, WS_NEWLINE = 2;
// whitespace so far, byte -> whitespace after, or -1
function nextWs(ws: number, b: number, maxIndent: number): number {
  if (ws === WS_NONE) return b === 0x0a ? WS_NEWLINE : b === 0x20 || b === 0x09 ? WS_SPACE : -1;
  if (ws === WS_SPACE || (b !== 0x20 && b !== 0x09)) return -1;
  return ws - WS_NEWLINE < maxIndent ? ws + 1 : -1;
}

// what a byte did: refused, consumed as whitespace, or consumed
const REJECT = 0, WS = 1, OK = 2;

export class JsonState {
  // ws: the whitespace just before (WS_NONE, WS_SPACE, or WS_NEWLINE + the indent after the newline)
  private constructor(private readonly frames: readonly Frame[], readonly ws: number, private readonly g: Grammar) {}

  static initial(g: Grammar): JsonState {
    return new JsonState([{ t: ROOT, node: g.root, ph: R_BEFORE }], 0, g);
  }

  step(b: number): JsonState | null {
    const st = this.frames.slice();
    const r = feed(st, b);
    if (r === REJECT) return null;
    if (r === WS) {
      const ws = nextWs(this.ws, b, this.g.maxIndent);
      return ws < 0 ? null : new JsonState(st, ws, this.g); // (a number it ended was popped)
    }
    return new JsonState(st, 0, this.g);
  }

  stepBytes(bytes: Uint8Array): JsonState | null {
    let s: JsonState | null = this;
    for (let i = 0; i < bytes.length && s; i++) s = s.step(bytes[i]);
    return s;
  }

  // The text so far is a whole value: it may end here.
  get complete(): boolean {
    const st = this.frames.slice();
    for (;;) {
      const f = st[st.length - 1];
      if (f.t === ROOT) return f.ph === R_DONE;
      if (!canEndLazily(f)) return false;
      st.pop();
      childDone(st);
    }
  }

  // Complete, and nothing may follow: the end of generation is the only way on.
  get finished(): boolean {
    const f = this.frames[this.frames.length - 1];
    return f.t === ROOT && f.ph === R_DONE;
  }

  // The fewest bytes that complete the text from here.
  closeCost(): number {
    let c = 0;
    for (const f of this.frames) c += frameCost(f);
    return c;
  }

  // A shortest completion: bytes that make the text complete, closeCost() of
  // them. Each byte is one that lowers the cost by one (there always is one:
  // automaton.test.ts checks it from every prefix), the likeliest tried first.
  shortestCompletion(): Uint8Array {
    const out: number[] = [];
    let s: JsonState = this;
    for (let c = s.closeCost(); c > 0; c--) {
      let next: JsonState | null = null;
      for (const b of COMPLETION_ORDER) {
        const t = s.step(b);
        if (t && t.closeCost() === c - 1) {
          next = t;
          out.push(b);
          break;
        }
      }
      if (!next) throw new Error(`automaton: no byte lowers the closing cost ${c} at ${s.key()}`);
      s = next;
    }
    return Uint8Array.from(out);
  }

  // Inside a string value, or a key of no declared name: its progress, and
  // what closing costs besides (lets the mask walk run through string bodies
  // on two integers).
  bodyTop(): StringBody | null {
    const f = this.frames[this.frames.length - 1];
    let below = 0;
    for (let i = 0; i < this.frames.length - 1; i++) below += frameCost(this.frames[i]);
    if (f.t === STR) return { key: false, n: f.n, scan: f.scan, minLength: f.node.minLength, maxLength: f.node.maxLength, after: below + 1 };
    if (f.t === OBJ && f.ph === O_KEY && f.node.additional && f.alive.length === 0)
      return { key: true, n: 0, scan: f.scan, minLength: 0, maxLength: Infinity, after: below + 1 + 1 + f.node.additional.minBytes + restOfObject(f.node, f.seen) };
    return null;
  }

  // This state with its top string or key body moved to (n, scan).
  withBody(n: number, scan: number): JsonState {
    const st = this.frames.slice();
    const f = st[st.length - 1] as StrF | ObjF;
    st[st.length - 1] = f.t === STR ? { t: STR, node: f.node, n, scan } : { ...f, scan };
    return new JsonState(st, 0, this.g);
  }

  // Two states with the same key accept the same continuations of up to
  // `horizon` bytes, with the same closing costs after them.
  key(horizon = Infinity): string {
    return this.frames.map((f) => frameKey(f, horizon)).join("|") + "#" + this.ws;
  }
}

function canEndLazily(f: Frame): boolean {
  if (f.t === NUM) return numCanEnd(f.ph);
  if (f.t === LIT) return f.alive.some((i) => f.node.texts[i].length === f.pos);
  return false;
}

// Feeds byte b to the stack (a private copy, changed in place).
function feed(st: Frame[], b: number): number {
  for (;;) {
    const f = st[st.length - 1];
    const top = st.length - 1;
    switch (f.t) {
      case ROOT: {
        if (f.ph !== R_BEFORE) return REJECT;
        // whitespace before the value, unless the value itself begins with it (a call's "\n{")
        st[top] = { ...f, ph: R_CHILD };
        if (begin(st, f.node, b) === OK) return OK;
        st.length = top + 1;
        st[top] = f;
        return isWs(b) ? WS : REJECT;
      }
      case OBJ:
        return feedObject(st, f, b);
      case ARR:
        return feedArray(st, f, b);
      case STR: {
        const s = scanStep(f.scan, b);
        if (s === -1) return REJECT;
        if (s === SCAN_CLOSE) {
          if (f.n < f.node.minLength) return REJECT;
          st.pop();
          childDone(st);
          return OK;
        }
        let n = f.n;
        if (f.scan === 0) if (++n > f.node.maxLength) return REJECT; // a character begins
        st[top] = { t: STR, node: f.node, n, scan: s };
        return OK;
      }
      case NUM: {
        const g = numStep(f, b);
        if (g) {
          st[top] = g;
          return OK;
        }
        if (!numCanEnd(f.ph)) return REJECT;
        st.pop();
        childDone(st);
        continue; // the byte belongs to the frame below
      }
      case LIT: {
        const texts = f.node.texts;
        const alive = f.alive.filter((i) => texts[i][f.pos] === b);
        if (alive.length) {
          st[top] = { ...f, alive, pos: f.pos + 1 };
          settleLiteral(st);
          return OK;
        }
        if (!canEndLazily(f)) return REJECT;
        st.pop();
        childDone(st);
        continue;
      }
      case SEQ:
        if (f.ph !== S_BEFORE) return REJECT;
        st[top] = { ...f, ph: S_CHILD };
        return begin(st, f.node.parts[f.idx], b);
      case SW: {
        if (f.ph === S_BEFORE) {
          st[top] = { ...f, ph: S_CHILD };
          return begin(st, f.node.cases[f.pick].then, b);
        }
        if (f.ph !== S_TAG) return REJECT;
        const cases = f.node.cases;
        const alive = f.alive.filter((i) => cases[i].tag[f.pos] === b);
        if (!alive.length) return REJECT;
        const pos = f.pos + 1;
        const done = alive.find((i) => cases[i].tag.length === pos); // tags are prefix-free: then it is alone
        st[top] = done === undefined ? { ...f, alive, pos } : { ...f, alive, pos, ph: S_BEFORE, pick: done };
        return OK;
      }
    }
  }
}

// Pushes the frames of a value of `node` that begins with byte b.
function begin(st: Frame[], node: Node, b: number): number {
  switch (node.kind) {
    case "union": {
      const i = node.dispatch[b];
      return i < 0 ? REJECT : begin(st, node.options[i], b);
    }
    case "object":
      if (b !== LBRACE) return REJECT;
      st.push({ t: OBJ, node, ph: O_OPEN, seen: [], cur: null, raw: "", scan: 0, alive: [] });
      return OK;
    case "array":
      if (b !== LBRACKET) return REJECT;
      st.push({ t: ARR, node, ph: A_OPEN, n: 0 });
      return OK;
    case "string":
      if (b !== QUOTE) return REJECT;
      st.push({ t: STR, node, n: 0, scan: 0 });
      return OK;
    case "number": {
      const ph = b === MINUS ? N_SIGN : b === 0x30 ? N_ZERO : isDigit(b) ? N_INT : -1;
      if (ph < 0) return REJECT;
      st.push({ t: NUM, integer: node.integer, ph, len: 1, exp: 0 });
      return OK;
    }
    case "literal": {
      const alive: number[] = [];
      node.texts.forEach((t, i) => t[0] === b && alive.push(i));
      if (!alive.length) return REJECT;
      st.push({ t: LIT, node, alive, pos: 1 });
      settleLiteral(st);
      return OK;
    }
    case "seq":
      st.push({ t: SEQ, node, idx: 0, ph: S_CHILD });
      return begin(st, node.parts[0], b);
    case "switch": {
      st.push({ t: SW, node, alive: node.cases.map((_, i) => i), pos: 0, ph: S_TAG, pick: -1 });
      return feed(st, b);
    }
  }
}

// A literal that has matched one of its texts whole, with no longer one left, is done.
function settleLiteral(st: Frame[]): void {
  const f = st[st.length - 1] as LitF;
  if (f.alive.every((i) => f.node.texts[i].length === f.pos)) {
    st.pop();
    childDone(st);
  }
}

// The frame on top of `st` has its child closed: move it on.
function childDone(st: Frame[]): void {
  for (;;) {
    const top = st.length - 1;
    const f = st[top];
    switch (f.t) {
      case ROOT: st[top] = { ...f, ph: R_DONE }; return;
      case OBJ: st[top] = { ...f, ph: O_AFTER }; return;
      case ARR: st[top] = { ...f, ph: A_AFTER }; return;
      case SEQ:
        if (f.idx + 1 < f.node.parts.length) {
          st[top] = { ...f, idx: f.idx + 1, ph: S_BEFORE };
          return;
        }
        st.pop();
        continue;
      case SW:
        st.pop();
        continue;
      default:
        throw new Error(`automaton: frame ${f.t} cannot have a child`);
    }
  }
}

function numStep(f: NumF, b: number): NumF | null {
  if (f.len >= MAX_NUMBER_BYTES) return null;
  const next = (ph: number, exp = f.exp): NumF => ({ t: NUM, integer: f.integer, ph, len: f.len + 1, exp });
  const frac = !f.integer;
  switch (f.ph) {
    case N_SIGN: return b === 0x30 ? next(N_ZERO) : isDigit(b) ? next(N_INT) : null;
    case N_ZERO:
    case N_INT:
      if (f.ph === N_INT && isDigit(b)) return next(N_INT);
      if (frac && b === DOT) return next(N_DOT);
      if (frac && (b === 0x65 || b === 0x45)) return next(N_EXP);
      return null;
    case N_DOT: return isDigit(b) ? next(N_FRAC) : null;
    case N_FRAC:
      if (isDigit(b)) return next(N_FRAC);
      return b === 0x65 || b === 0x45 ? next(N_EXP) : null;
    case N_EXP:
      if (b === PLUS || b === MINUS) return next(N_EXP_SIGN);
      return isDigit(b) ? next(N_EXP_DIGITS, 1) : null;
    case N_EXP_SIGN: return isDigit(b) ? next(N_EXP_DIGITS, 1) : null;
    case N_EXP_DIGITS: return isDigit(b) && f.exp < MAX_EXPONENT_DIGITS ? next(N_EXP_DIGITS, f.exp + 1) : null;
  }
  return null;
}

// ---- objects ----

const valueNode = (n: ObjectNode, key: string | null): Node => (key === null ? undefined : n.props.get(key)) ?? n.additional!;
const missing = (n: ObjectNode, seen: readonly string[]) => n.required.filter((r) => !seen.includes(r));
const canAddKey = (n: ObjectNode, seen: readonly string[]) => n.additional !== null || [...n.props.keys()].some((k) => !seen.includes(k));
function withKey(seen: readonly string[], k: string): readonly string[] {
  return seen.includes(k) ? seen : [...seen, k].sort();
}

function feedObject(st: Frame[], f: ObjF, b: number): number {
  const top = st.length - 1, n = f.node;
  switch (f.ph) {
    case O_OPEN:
    case O_COMMA:
      if (isWs(b)) return WS;
      if (b === RBRACE && f.ph === O_OPEN && n.required.length === 0) {
        st.pop();
        childDone(st);
        return OK;
      }
      if (b !== QUOTE || !canAddKey(n, f.seen)) return REJECT;
      // (with free keys, JSON's repeated keys are allowed: the last value counts, and each obeys the schema)
      st[top] = { ...f, ph: O_KEY, raw: "", scan: 0, alive: [...n.enc.keys()].filter((k) => n.additional || !f.seen.includes(k)) };
      return OK;
    case O_KEY: {
      const pos = f.raw.length;
      const alive = f.alive.filter((k) => n.enc.get(k)![pos] === b);
      if (n.additional === null) {
        // declared names only: the key's bytes follow one of them exactly
        if (!alive.length) return REJECT;
        const done = alive.find((k) => n.enc.get(k)!.length === pos + 1);
        st[top] = done !== undefined
          ? { ...f, ph: O_COLON, cur: done, seen: withKey(f.seen, done), raw: "", alive: [] }
          : { ...f, raw: f.raw + String.fromCharCode(b), alive };
        return OK;
      }
      // Free keys. A declared name is spelled as JSON.stringify spells it, and
      // \u and \/ escapes appear only in such spellings: so a key that has left
      // every declared spelling is of no declared name, whatever follows, and
      // its bytes need not be kept.
      const s = scanStep(f.scan, b);
      if (s === -1) return REJECT;
      if (!alive.length && ((f.scan === 1 && (b === 0x75 || b === 0x2f)) || (f.scan & 7) >= 2)) return REJECT;
      if (s === SCAN_CLOSE) {
        const cur = alive.length ? alive[0] : null; // the quote ends at most one declared spelling
        st[top] = { ...f, ph: O_COLON, cur, seen: cur === null ? f.seen : withKey(f.seen, cur), raw: "", scan: 0, alive: [] };
        return OK;
      }
      st[top] = { ...f, raw: alive.length ? f.raw + String.fromCharCode(b) : "", scan: s, alive };
      return OK;
    }
    case O_COLON:
      if (isWs(b)) return WS;
      if (b !== COLON) return REJECT;
      st[top] = { ...f, ph: O_VALUE };
      return OK;
    case O_VALUE:
      if (isWs(b)) return WS;
      st[top] = { ...f, ph: O_CHILD };
      return begin(st, valueNode(n, f.cur), b);
    case O_AFTER:
      if (isWs(b)) return WS;
      if (b === COMMA) {
        if (!canAddKey(n, f.seen)) return REJECT;
        st[top] = { ...f, ph: O_COMMA };
        return OK;
      }
      if (b === RBRACE && missing(n, f.seen).length === 0) {
        st.pop();
        childDone(st);
        return OK;
      }
      return REJECT;
  }
  return REJECT;
}

// ---- arrays ----

function feedArray(st: Frame[], f: ArrF, b: number): number {
  const top = st.length - 1, n = f.node;
  if (isWs(b) && f.ph !== A_CHILD) return WS;
  switch (f.ph) {
    case A_OPEN:
      if (b === RBRACKET && n.minItems === 0) {
        st.pop();
        childDone(st);
        return OK;
      }
      if (n.maxItems === 0) return REJECT;
      st[top] = { ...f, ph: A_CHILD, n: 1 };
      return begin(st, n.items, b);
    case A_AFTER:
      if (b === COMMA && f.n < n.maxItems) {
        st[top] = { ...f, ph: A_COMMA };
        return OK;
      }
      if (b === RBRACKET && f.n >= n.minItems) {
        st.pop();
        childDone(st);
        return OK;
      }
      return REJECT;
    case A_COMMA:
      st[top] = { ...f, ph: A_CHILD, n: f.n + 1 };
      return begin(st, n.items, b);
  }
  return REJECT;
}

// ---- costs: the fewest bytes that close each frame (its open child apart) ----

// `,"key":value` for each required key not given yet, then `}`
function restOfObject(n: ObjectNode, seen: readonly string[]): number {
  let c = 1;
  for (const r of missing(n, seen)) c += 1 + entryBytes(n, r);
  return c;
}

function objectCost(f: ObjF): number {
  const n = f.node;
  switch (f.ph) {
    case O_OPEN: {
      const m = n.required;
      return m.length === 0 ? 1 : restOfObject(n, f.seen) - 1;
    }
    case O_COMMA: {
      if (missing(n, f.seen).length) return restOfObject(n, f.seen) - 1;
      // one more key must come: the cheapest one allowed
      let best = Infinity;
      for (const k of n.enc.keys()) if (n.additional || !f.seen.includes(k)) best = Math.min(best, entryBytes(n, k));
      // or a key of no declared name: "" if it is free, else one character
      if (n.additional) best = Math.min(best, (n.enc.has("") ? 4 : 3) + n.additional.minBytes);
      return best + 1;
    }
    case O_KEY: {
      const pos = f.raw.length;
      let best = Infinity;
      for (const k of f.alive) best = Math.min(best, n.enc.get(k)!.length - pos + entryBytes(n, k) - (n.enc.get(k)!.length + 1) + restOfObject(n, withKey(f.seen, k)));
      // or a key of no declared name: close it now (after finishing an escape
      // or a character), or one character later if it now spells a declared name
      if (n.additional && (f.scan & 7) < 2) best = Math.min(best, freeKeyCost(f));
      return best;
    }
    case O_COLON: return 1 + valueNode(n, f.cur).minBytes + restOfObject(n, f.seen);
    case O_VALUE: return valueNode(n, f.cur).minBytes + restOfObject(n, f.seen);
    case O_CHILD:
    case O_AFTER:
      return restOfObject(n, f.seen);
  }
  return 0;
}

// the rest of an object from inside a key of no declared name
function freeKeyCost(f: ObjF): number {
  const n = f.node, whole = f.raw + scanCompletion(f.scan) + '"';
  const spellsDeclared = f.alive.some((k) => Buffer.from(n.enc.get(k)!).toString("latin1") === whole);
  return scanPending(f.scan) + (spellsDeclared ? 1 : 0) + 1 + 1 + n.additional!.minBytes + restOfObject(n, f.seen);
}

function arrayCost(f: ArrF): number {
  const n = f.node, m = n.items.minBytes;
  switch (f.ph) {
    case A_OPEN: return n.minItems === 0 ? 1 : n.minItems * m + (n.minItems - 1) + 1;
    case A_CHILD:
    case A_AFTER:
      return Math.max(0, n.minItems - f.n) * (1 + m) + 1;
    case A_COMMA: return m + Math.max(0, n.minItems - f.n - 1) * (1 + m) + 1;
  }
  return 0;
}

function frameCost(f: Frame): number {
  switch (f.t) {
    case ROOT: return f.ph === R_BEFORE ? f.node.minBytes : 0;
    case OBJ: return objectCost(f);
    case ARR: return arrayCost(f);
    case STR: return scanPending(f.scan) + Math.max(0, f.node.minLength - f.n) + 1;
    case NUM: return numCanEnd(f.ph) ? 0 : 1;
    case LIT: return Math.min(...f.alive.map((i) => f.node.texts[i].length - f.pos));
    case SEQ: return f.node.restBytes[f.ph === S_BEFORE ? f.idx : f.idx + 1];
    case SW:
      if (f.ph === S_TAG) return Math.min(...f.alive.map((i) => f.node.cases[i].tag.length - f.pos + f.node.cases[i].then.minBytes));
      return f.ph === S_BEFORE ? f.node.cases[f.pick].then.minBytes : 0;
  }
}

function frameKey(f: Frame, horizon: number): string {
  switch (f.t) {
    case ROOT: return `r${f.node.id}.${f.ph}`;
    case OBJ: return `o${f.node.id}.${f.ph}.${f.seen.join("\u0001")}.${f.cur === null ? "\u0002" : f.cur}.${f.raw}.${f.scan}.${f.alive.length}`;
    case ARR: return `a${f.node.id}.${f.ph}.${f.n}`;
    // past minLength, only maxLength - n matters, and not at all while it exceeds the horizon
    case STR: {
      const { minLength, maxLength } = f.node;
      return `s${f.node.id}.${f.n >= minLength && maxLength - f.n > horizon ? "+" : f.n}.${f.scan}`;
    }
    case NUM: return `n${f.integer ? 1 : 0}.${f.ph}.${f.len}.${f.exp}`;
    case LIT: return `l${f.node.id}.${f.pos}.${f.alive.join(",")}`;
    case SEQ: return `q${f.node.id}.${f.idx}.${f.ph}`;
    case SW: return `w${f.node.id}.${f.ph}.${f.pos}.${f.pick}.${f.alive.join(",")}`;
  }
}

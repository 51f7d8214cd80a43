// Constrained sampling: which tokens keep the text a valid (and closable)
// value of the grammar. A JsonConstraint follows one generation: mask() before
// each sampling step, accept() with the token sampled.
//
// The mask of a state is found by walking the vocabulary trie beside the
// automaton (each valid token prefix is stepped once) and is cached by the
// state's key, with, for each allowed token, the bytes that would still be
// needed to close the text after it. The token budget then only filters that
// list: a token is allowed when what it leaves to close fits in the tokens
// left after it. Every byte is one token at worst (byte-level BPE and
// SentencePiece byte fallback have a token for each byte), so a closing cost
// in bytes is a cost in tokens that can always be met.
//
// Tokens often hold several bytes ('":"', '"}'), so near the end the budget in
// bytes can be shorter than the one in tokens. There a plan keeps the text
// closable: a shortest completion, written longest tokens first; the tokens
// that begin it are allowed too when the rest of it fits, and while the text
// follows it the plan is what is left of it.

import { LayerswarmError } from "../../errors.js";
import { JsonState, SCAN_CLOSE, StringBody, scanPending, scanStep } from "./automaton.js";
import { Grammar } from "./schema.js";
import { VocabIndex } from "./vocab.js";

interface MaskEntry {
  ids: Int32Array; // tokens the grammar allows here
  costs: Int32Array; // costs[i]: bytes that close the text after ids[i]
  minCost: number;
}

const CACHE_IDS = 4_000_000; // per grammar and vocabulary: about 32 MB of cached masks

export class JsonConstraint {
  private state: JsonState;
  private prev: number | undefined;
  private cache: Map<string, MaskEntry>;
  private cached = 0; // ids held in `cache`
  private buf: Uint8Array;
  private plan: Uint8Array | null = null; // a completion of the text so far, when one was needed
  accepted = 0; // tokens accepted so far
  text: number[] = []; // the bytes accepted so far

  // `prev`: the prompt's last token (SentencePiece drops a leading space after BOS).
  constructor(readonly grammar: Grammar, readonly vocab: VocabIndex, opts: { prev?: number } = {}) {
    this.state = JsonState.initial(grammar);
    this.prev = opts.prev;
    this.cache = vocab.cacheFor<MaskEntry>(grammar);
    this.buf = new Uint8Array(vocab.vocabSize);
  }

  // the text may end here (end of generation is allowed)
  get complete(): boolean {
    return this.state.complete;
  }
  // the text is complete and nothing may follow: stop without sampling
  get finished(): boolean {
    return this.state.finished;
  }
  // tokens needed at most to close the text from here
  get closeCost(): number {
    return this.state.closeCost();
  }

  // Tokens allowed next, `remaining` tokens (this one included) being left:
  // mask[id] = 1. Those that keep the text closable within the budget; when
  // none can (the schema needs more than is left), those that come closest;
  // end-of-generation tokens only when the text is complete.
  mask(remaining: number): Uint8Array {
    const m = this.buf.fill(0);
    const eog = () => { for (const id of this.vocab.eog) m[id] = 1; };
    if (this.state.finished) {
      eog();
      return m;
    }
    const e = this.entry();
    const budget = Math.max(remaining - 1, 0);
    let any = false;
    for (let i = 0; i < e.ids.length; i++) if (e.costs[i] <= budget) (m[e.ids[i]] = 1), (any = true);
    if (this.state.closeCost() > budget) any = this.planned(m, budget) || any;
    if (!any && e.ids.length) {
      // the schema needs more than is left: the tokens that come closest (finish "length")
      for (let i = 0; i < e.ids.length; i++) if (e.costs[i] === e.minCost) m[e.ids[i]] = 1;
      any = true;
    }
    if (this.state.complete || !any) eog(); // !any: no token of this vocabulary goes on; end rather than loop
    return m;
  }

  // Allows the tokens that begin the plan and leave a rest that fits in
  // `budget` tokens (written longest first); says whether there were any.
  private planned(m: Uint8Array, budget: number): boolean {
    const v = this.vocab;
    this.plan ??= this.state.shortestCompletion();
    let any = false;
    for (const { length, id } of v.prefixTokens(this.plan))
      if (v.greedyCount(this.plan, length) <= budget) (m[id] = 1), (any = true);
    return any;
  }

  // logits (V,) -> -Infinity where the mask forbids (rows past the vocabulary too)
  applyTo(logits: Float32Array, remaining: number): void {
    const m = this.mask(remaining);
    const V = Math.min(m.length, logits.length);
    for (let i = 0; i < V; i++) if (!m[i]) logits[i] = -Infinity;
    for (let i = V; i < logits.length; i++) logits[i] = -Infinity;
  }

  // The sampler hook for a generation of at most `maxTokens` tokens:
  // (logits, history) -> logits masked in place, called just before sampling.
  // `history` is the prompt and the tokens generated so far (as generate()
  // keeps it): tokens in it that were not accept()ed yet are accepted first,
  // so the hook alone keeps the constraint in step.
  hook(maxTokens: number): (logits: Float32Array, history: readonly number[]) => void {
    let prompt = -1; // history's length before the first generated token
    return (logits, history) => {
      if (prompt < 0) prompt = history.length - this.accepted;
      for (let i = prompt + this.accepted; i < history.length; i++) this.accept(history[i]);
      this.applyTo(logits, maxTokens - this.accepted);
    };
  }

  accept(id: number): void {
    if (this.vocab.eog.includes(id)) {
      if (!this.state.complete) throw new LayerswarmError("INTERNAL", `constrained output: end of generation (token ${id}) before the text is complete`);
      this.accepted++;
      return;
    }
    const bytes = this.vocab.tok.tokenBytes(id, this.prev);
    const next = this.state.stepBytes(bytes);
    if (!next) throw new LayerswarmError("INTERNAL", `constrained output: token ${id} (${JSON.stringify(Buffer.from(bytes).toString("utf8"))}) does not fit the grammar here`);
    this.state = next;
    // still on the plan: the rest of it completes the new text
    const plan = this.plan;
    this.plan = plan && bytes.length <= plan.length && Buffer.from(plan.subarray(0, bytes.length)).equals(bytes) ? plan.subarray(bytes.length) : null;
    this.prev = id;
    this.accepted++;
    for (const b of bytes) this.text.push(b);
  }

  private entry(): MaskEntry {
    const key = this.state.key(this.vocab.maxTokenBytes); // (no token reaches further than that)
    const hit = this.cache.get(key);
    if (hit) {
      // most recently used last
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const e = walk(this.vocab, this.state);
    this.cache.set(key, e);
    this.cached += e.ids.length;
    for (const [k, old] of this.cache) {
      if (this.cached <= CACHE_IDS || old === e) break;
      this.cache.delete(k);
      this.cached -= old.ids.length;
    }
    return e;
  }
}

// Every token whose bytes the automaton accepts from `state`, with its closing cost.
export function walk(v: VocabIndex, state: JsonState): MaskEntry {
  const w = new Walk(v);
  const body = state.bodyTop();
  if (body) w.body(0, state, body);
  else w.states(0, state);
  return { ids: w.ids.slice(0, w.count), costs: w.costs.slice(0, w.count), minCost: w.minCost };
}

// A depth-first walk of the trie beside the automaton. Each trie node is
// pushed at most once, so one stack of `nodes` entries serves nested walks.
class Walk {
  readonly ids: Int32Array;
  readonly costs: Int32Array;
  count = 0;
  minCost = Infinity;
  private node: Int32Array; // the stack: trie nodes,
  private n: Int32Array; // in a string body: characters begun,
  private scan: Int32Array; // and the scanner's state
  private state: (JsonState | null)[] = []; // elsewhere: the automaton's state
  private top = 0;

  constructor(private v: VocabIndex) {
    ({ ids: this.ids, costs: this.costs, node: this.node, n: this.n, scan: this.scan } = v.walkBuffers());
  }

  private emit(node: number, cost: number): void {
    const v = this.v;
    const t0 = v.tokenStart[node], t1 = v.tokenStart[node + 1];
    if (t1 === t0) return;
    if (cost < this.minCost) this.minCost = cost;
    for (let t = t0; t < t1; t++) (this.ids[this.count] = v.tokenIds[t]), (this.costs[this.count++] = cost);
  }

  // the subtree under trie node `start`, the automaton in `state` there
  states(start: number, state: JsonState): void {
    const v = this.v, base = this.top;
    this.node[this.top] = start;
    this.state[this.top++] = state;
    while (this.top > base) {
      const n = this.node[--this.top], s = this.state[this.top]!;
      this.state[this.top] = null;
      for (let e = v.edgeStart[n], end = v.edgeStart[n + 1]; e < end; e++) {
        const s2 = s.step(v.edgeByte[e]);
        if (!s2) continue;
        const child = v.edgeNode[e];
        this.emit(child, s2.closeCost());
        const body = s2.bodyTop();
        if (body) this.body(child, s2, body);
        else (this.node[this.top] = child), (this.state[this.top++] = s2);
      }
    }
  }

  // Inside a string body, most tokens stay inside it: follow it on (n, scan)
  // alone, and build a full state only where a token closes it.
  body(start: number, state: JsonState, b: StringBody): void {
    const v = this.v, base = this.top;
    (this.node[this.top] = start), (this.n[this.top] = b.n), (this.scan[this.top++] = b.scan);
    while (this.top > base) {
      const node = this.node[--this.top], n = this.n[this.top], scan = this.scan[this.top];
      for (let e = v.edgeStart[node], end = v.edgeStart[node + 1]; e < end; e++) {
        const byte = v.edgeByte[e], child = v.edgeNode[e];
        const s2 = scanStep(scan, byte);
        if (s2 === -1 || (b.key && scan === 1 && (byte === 0x75 || byte === 0x2f))) continue;
        if (s2 === SCAN_CLOSE) {
          if (n < b.minLength) continue;
          const after = state.withBody(n, scan).step(byte)!;
          this.emit(child, after.closeCost());
          this.states(child, after);
          continue;
        }
        const n2 = scan === 0 ? n + 1 : n;
        if (n2 > b.maxLength) continue;
        this.emit(child, scanPending(s2) + Math.max(0, b.minLength - n2) + b.after);
        (this.node[this.top] = child), (this.n[this.top] = n2), (this.scan[this.top++] = s2);
      }
    }
  }
}

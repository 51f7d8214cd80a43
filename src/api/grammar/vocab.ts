// A model's vocabulary as a byte trie, built once per model and shared by all
// constrained requests: walking it beside the automaton visits each distinct
// token prefix once, so a mask costs the number of valid prefixes, not V.

import { TokenType, Tokenizer } from "../../tokenizer/types.js";

export interface TokenBytes {
  readonly vocabSize: number;
  readonly eog: ReadonlySet<number>;
  // the bytes token `id` adds to the text when it follows `prev` (Tokenizer.tokenBytes)
  tokenBytes(id: number, prev: number | undefined): Uint8Array;
  tokenType?(id: number): TokenType;
}

export interface WalkBuffers {
  ids: Int32Array; // (V,)
  costs: Int32Array; // (V,)
  node: Int32Array; // (nodes + 1,)
  n: Int32Array; // (nodes + 1,)
  scan: Int32Array; // (nodes + 1,)
}

// Not the BOS and not undefined: SentencePiece keeps a token's leading space after it.
const NOT_BOS = -1;

export class VocabIndex {
  readonly vocabSize: number;
  readonly eog: readonly number[];
  // trie, nodes in depth-first order, node 0 the root:
  readonly edgeStart: Int32Array; // (nodes + 1,) node n's edges are edgeStart[n] .. edgeStart[n+1]
  readonly edgeByte: Uint8Array; // (edges,)
  readonly edgeNode: Int32Array; // (edges,) the child an edge leads to
  readonly tokenStart: Int32Array; // (nodes + 1,) the tokens whose bytes end at node n
  readonly tokenIds: Int32Array; // (tokens in the trie,)
  readonly maxTokenBytes: number; // the longest token
  private caches = new WeakMap<object, Map<string, unknown>>();
  private scratch?: WalkBuffers;

  constructor(readonly tok: TokenBytes) {
    const V = (this.vocabSize = tok.vocabSize);
    this.eog = [...tok.eog].filter((i) => i >= 0 && i < V);
    // tokens that add no text (control, unknown, unused) are never part of a constrained text
    const entries: { id: number; bytes: Uint8Array }[] = [];
    for (let id = 0; id < V; id++) {
      if (tok.eog.has(id)) continue;
      const bytes = tok.tokenBytes(id, NOT_BOS);
      if (bytes.length > 0) entries.push({ id, bytes });
    }
    entries.sort((a, b) => Buffer.compare(a.bytes, b.bytes) || a.id - b.id);
    this.maxTokenBytes = entries.reduce((m, e) => Math.max(m, e.bytes.length), 0);
    // Sorted byte strings give the trie in depth-first order: a node's subtree is
    // a contiguous run of entries. Build with an explicit stack of open nodes.
    const edgeByte: number[] = [], edgeNode: number[] = [], tokenIds: number[] = [];
    const nodeEdges: number[][] = [[]], nodeTokens: number[][] = [[]];
    const path: number[] = [0]; // open nodes along the current entry's bytes
    let prev: Uint8Array = new Uint8Array(0);
    for (const e of entries) {
      let common = 0;
      while (common < prev.length && common < e.bytes.length && prev[common] === e.bytes[common]) common++;
      path.length = common + 1;
      for (let d = common; d < e.bytes.length; d++) {
        const child = nodeEdges.length;
        nodeEdges.push([]);
        nodeTokens.push([]);
        nodeEdges[path[d]].push(edgeByte.length);
        edgeByte.push(e.bytes[d]);
        edgeNode.push(child);
        path.push(child);
      }
      nodeTokens[path[e.bytes.length]].push(e.id);
      prev = e.bytes;
    }
    const N = nodeEdges.length;
    this.edgeStart = new Int32Array(N + 1);
    this.tokenStart = new Int32Array(N + 1);
    const eb: number[] = [], en: number[] = [];
    for (let n = 0; n < N; n++) {
      this.edgeStart[n] = eb.length;
      for (const e of nodeEdges[n]) (eb.push(edgeByte[e]), en.push(edgeNode[e]));
      this.tokenStart[n] = tokenIds.length;
      for (const id of nodeTokens[n]) tokenIds.push(id);
    }
    this.edgeStart[N] = eb.length;
    this.tokenStart[N] = tokenIds.length;
    this.edgeByte = Uint8Array.from(eb);
    this.edgeNode = Int32Array.from(en);
    this.tokenIds = Int32Array.from(tokenIds);
  }

  static fromTokenizer(tok: Tokenizer): VocabIndex {
    return new VocabIndex(tok);
  }

  get nodes(): number {
    return this.edgeStart.length - 1;
  }

  // Buffers for the mask walk (constraint.ts), allocated once: walks are synchronous.
  walkBuffers(): WalkBuffers {
    const N = this.nodes + 1, V = this.vocabSize;
    return (this.scratch ??= { ids: new Int32Array(V), costs: new Int32Array(V), node: new Int32Array(N), n: new Int32Array(N), scan: new Int32Array(N) });
  }

  // The tokens of `bytes` taken longest first: an upper bound on the fewest
  // tokens that write them (Infinity when some byte has no token).
  greedyCount(bytes: Uint8Array, from = 0): number {
    let count = 0;
    for (let i = from; i < bytes.length; count++) {
      let node = 0, longest = 0;
      for (let d = i; d < bytes.length; d++) {
        node = this.child(node, bytes[d]);
        if (node < 0) break;
        if (this.tokenStart[node + 1] > this.tokenStart[node]) longest = d + 1 - i;
      }
      if (longest === 0) return Infinity;
      i += longest;
    }
    return count;
  }

  // For each token that is a prefix of `bytes`: its length and id.
  *prefixTokens(bytes: Uint8Array): Generator<{ length: number; id: number }> {
    let node = 0;
    for (let d = 0; d < bytes.length; d++) {
      node = this.child(node, bytes[d]);
      if (node < 0) return;
      for (let t = this.tokenStart[node]; t < this.tokenStart[node + 1]; t++) yield { length: d + 1, id: this.tokenIds[t] };
    }
  }

  // node's child along byte b, or -1
  child(node: number, b: number): number {
    for (let e = this.edgeStart[node], end = this.edgeStart[node + 1]; e < end; e++) if (this.edgeByte[e] === b) return this.edgeNode[e];
    return -1;
  }

  // A cache that lives as long as `owner` (a grammar) and this index.
  cacheFor<T>(owner: object): Map<string, T> {
    let c = this.caches.get(owner);
    if (!c) this.caches.set(owner, (c = new Map()));
    return c as Map<string, T>;
  }
}

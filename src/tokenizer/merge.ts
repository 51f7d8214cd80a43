// Best-first pair merging in O(n log n), as llama.cpp's llm_tokenizer_spm and
// llm_tokenizer_bpe do it: the symbols form a doubly linked list, and every
// adjacent pair that could merge waits in a binary heap ordered by (rank, left
// symbol's index). A popped pair whose symbols have changed since it was
// queued is stale and skipped. It merges exactly as the quadratic loop in
// ref.ts does: the lowest rank first, the leftmost of equal ranks.
//
// Also here: where a text can be cut so that its pieces tokenize to the same
// ids as the whole (merges never cross the cut), used to tokenize long texts
// in slices.

// Pairs waiting to merge, best first: lowest rank, then lowest left index.
class PairHeap {
  private rank = new Float64Array(64);
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private len = new Int32Array(64); // length of the merged text when queued
  size = 0;

  push(rank: number, left: number, right: number, len: number): void {
    if (this.size === this.rank.length) this.grow();
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(rank, left, this.rank[p], this.left[p])) break;
      this.set(i, this.rank[p], this.left[p], this.right[p], this.len[p]);
      i = p;
    }
    this.set(i, rank, left, right, len);
  }

  // Removes the best pair; its fields are left in top*.
  topRank = 0;
  topLeft = 0;
  topRight = 0;
  topLen = 0;
  pop(): void {
    this.topRank = this.rank[0], this.topLeft = this.left[0], this.topRight = this.right[0], this.topLen = this.len[0];
    const n = --this.size;
    const r = this.rank[n], l = this.left[n], rt = this.right[n], ln = this.len[n];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && this.before(this.rank[c + 1], this.left[c + 1], this.rank[c], this.left[c])) c++;
      if (!this.before(this.rank[c], this.left[c], r, l)) break;
      this.set(i, this.rank[c], this.left[c], this.right[c], this.len[c]);
      i = c;
    }
    this.set(i, r, l, rt, ln);
  }

  private before(ra: number, la: number, rb: number, lb: number): boolean {
    return ra < rb || (ra === rb && la < lb);
  }
  private set(i: number, rank: number, left: number, right: number, len: number): void {
    this.rank[i] = rank, this.left[i] = left, this.right[i] = right, this.len[i] = len;
  }
  private grow(): void {
    const n = this.rank.length * 2;
    const g = <T extends Float64Array | Int32Array>(a: T, b: T): T => (b.set(a), b);
    this.rank = g(this.rank, new Float64Array(n));
    this.left = g(this.left, new Int32Array(n));
    this.right = g(this.right, new Int32Array(n));
    this.len = g(this.len, new Int32Array(n));
  }
}

// Merges adjacent symbols best-first until no pair merges. rank(a, b) is the
// rank of merging the texts a and b (lower merges first), or undefined when
// they do not merge; a null symbol never merges; pairs longer than maxLen
// UTF-16 units are never asked about. Returns the surviving symbols' indices
// in order; sym[i] then holds each one's merged text.
export function mergeBestFirst(sym: (string | null)[], rank: (a: string, b: string) => number | undefined, maxLen = Infinity): number[] {
  const n = sym.length;
  const next = new Int32Array(n), prev = new Int32Array(n);
  const len = new Int32Array(n); // 0 once merged into its left neighbour
  for (let i = 0; i < n; i++) (prev[i] = i - 1), (next[i] = i + 1 < n ? i + 1 : -1), (len[i] = sym[i]?.length ?? 1);
  const heap = new PairHeap();
  const consider = (l: number, r: number) => {
    if (l < 0 || r < 0) return;
    const a = sym[l], b = sym[r];
    if (a === null || b === null || a.length + b.length > maxLen) return;
    const k = rank(a, b);
    if (k !== undefined) heap.push(k, l, r, a.length + b.length);
  };
  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
  while (heap.size > 0) {
    heap.pop();
    const l = heap.topLeft, r = heap.topRight;
    // stale: l is gone, r is no longer its neighbour, or either has grown since
    if (len[l] === 0 || next[l] !== r || len[l] + len[r] !== heap.topLen) continue;
    sym[l] = sym[l]! + sym[r]!;
    len[l] += len[r];
    len[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    consider(prev[l], l);
    consider(l, next[l]);
  }
  const out: number[] = [];
  for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push(i);
  return out;
}

// Every two code points that stand side by side inside some token that a merge
// can produce. Between two code points that are not such a pair, no merge can
// ever cross, so a text cut there tokenizes piece by piece to the same ids.
export function innerPairs(tokens: Iterable<string>): Set<string> {
  const pairs = new Set<string>();
  for (const t of tokens) {
    let prev: string | undefined;
    for (const cp of t) {
      if (prev !== undefined) pairs.add(prev + cp);
      prev = cp;
    }
  }
  return pairs;
}

// The first position at or after `from` where `text` can be cut (see
// innerPairs), or -1. Never cuts a surrogate pair.
export function safeCut(text: string, from: number, pairs: Set<string>): number {
  for (let p = Math.max(from, 1); p < text.length; p++) {
    if (isLow(text.charCodeAt(p)) && isHigh(text.charCodeAt(p - 1))) continue; // inside a surrogate pair
    const before = p >= 2 && isLow(text.charCodeAt(p - 1)) && isHigh(text.charCodeAt(p - 2)) ? text.slice(p - 2, p) : text[p - 1];
    const after = p + 1 < text.length && isHigh(text.charCodeAt(p)) && isLow(text.charCodeAt(p + 1)) ? text.slice(p, p + 2) : text[p];
    if (!pairs.has(before + after)) return p;
  }
  return -1;
}

const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number) => c >= 0xdc00 && c <= 0xdfff;

// Cuts text into pieces of at least `chars` UTF-16 units (the last may be
// shorter) at safe positions.
export function* safePieces(text: string, chars: number, pairs: Set<string>): Generator<string> {
  let start = 0;
  while (text.length - start > chars) {
    const p = safeCut(text, start + chars, pairs);
    if (p < 0) break;
    yield text.slice(start, p);
    start = p;
  }
  yield text.slice(start);
}

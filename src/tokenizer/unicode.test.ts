// The pre-tokenizer classes as v-flag sets (JavaScript's property less the
// code points where it and llama.cpp disagree) hold exactly llama.cpp's ranges.

import { describe, expect, it } from "vitest";
import { llamaCppClasses, llamaCppRanges, llamaCppRegex } from "./unicode.js";

describe("llama.cpp's character classes", () => {
  it.each([["\\p{L}", "letter"], ["\\p{N}", "number"]] as const)("%s matches exactly the code points of llama.cpp's table", (cls, name) => {
    const r = new RegExp(`^${llamaCppClasses()[cls]}$`, "v");
    const want = new Uint8Array(0x110000);
    for (const [a, z] of llamaCppRanges()[name]) want.fill(1, a, z + 1);
    const wrong: number[] = [];
    for (let cp = 0; cp < 0x110000; cp++) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      if (r.test(String.fromCodePoint(cp)) !== (want[cp] === 1) && wrong.push(cp) >= 10) break;
    }
    expect(wrong.map((c) => c.toString(16))).toEqual([]);
  });

  it("\\s is Unicode's White_Space: U+0085 in, U+FEFF out; / and classes nest in v mode", () => {
    const r = llamaCppRegex(String.raw`\s+|[^\s\p{L}]+[\r\n/]*|\p{L}+`);
    expect([..."a\u0085 b\ufeff!/ \u{13460}".matchAll(r)].map((m) => m[0])).toEqual(["a", "\u0085 ", "b", "\ufeff!/", " ", "\u{13460}"]);
  });
});

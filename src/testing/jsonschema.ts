// An independent check of a value against a JSON Schema of the subset that
// api/grammar supports, written from the JSON Schema specification (not from
// the compiled grammar), for tests of constrained output. Returns what is
// wrong, or undefined.

type Schema = Record<string, unknown> | boolean;

const typeOf = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" ? (Number.isInteger(v) ? "integer" : "number") : typeof v;

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export function schemaErrors(s: Schema, v: unknown, at = "$"): string | undefined {
  if (s === true) return undefined;
  if (s === false) return `${at}: nothing is allowed`;
  if (Array.isArray(s.anyOf)) return s.anyOf.some((b) => !schemaErrors(b as Schema, v, at)) ? undefined : `${at}: matches no branch of anyOf`;
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    const t = typeOf(v);
    if (!types.includes(t) && !(t === "integer" && types.includes("number"))) return `${at}: ${t}, not ${types.join("/")}`;
  }
  if ("const" in s && !deepEqual(s.const, v)) return `${at}: not the const`;
  if (Array.isArray(s.enum) && !s.enum.some((e) => deepEqual(e, v))) return `${at}: not in the enum`;
  if (typeof v === "string") {
    const len = [...v].length;
    if (typeof s.minLength === "number" && len < s.minLength) return `${at}: shorter than ${s.minLength}`;
    if (typeof s.maxLength === "number" && len > s.maxLength) return `${at}: longer than ${s.maxLength}`;
  }
  if (Array.isArray(v)) {
    if (typeof s.minItems === "number" && v.length < s.minItems) return `${at}: fewer than ${s.minItems} items`;
    if (typeof s.maxItems === "number" && v.length > s.maxItems) return `${at}: more than ${s.maxItems} items`;
    if (s.items !== undefined) for (let i = 0; i < v.length; i++) { const e = schemaErrors(s.items as Schema, v[i], `${at}[${i}]`); if (e) return e; }
  }
  if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const props = (s.properties ?? {}) as Record<string, Schema>;
    for (const r of (s.required ?? []) as string[]) if (!(r in o)) return `${at}: "${r}" is missing`;
    for (const [k, x] of Object.entries(o)) {
      const sub = k in props ? props[k] : ((s.additionalProperties ?? true) as Schema);
      const e = schemaErrors(sub, x, `${at}.${k}`);
      if (e) return e;
    }
  }
  return undefined;
}

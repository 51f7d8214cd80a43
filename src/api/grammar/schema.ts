// JSON Schema (a documented subset) -> a grammar: a tree of nodes that the
// byte automaton (automaton.ts) walks. Keywords outside the subset are refused
// with a SchemaError naming the keyword and where it is (a JSON pointer), so
// that the API can answer 400 naming it, instead of silently not enforcing it.
//
// Besides the nodes a schema compiles to, three kinds build the call syntax of
// tool calls (tools.ts): `text` (fixed bytes), `seq` (parts one after the
// other) and `switch` (one of several tags, each followed by its own node).

import { LayerswarmError } from "../../errors.js";

export type Node = ObjectNode | ArrayNode | StringNode | NumberNode | LiteralNode | UnionNode | SeqNode | SwitchNode;

interface Base {
  readonly id: number; // unique among all nodes: names a node in automaton state keys
  minBytes: number; // the shortest text of a value of this node
}
export interface ObjectNode extends Base {
  kind: "object";
  props: Map<string, Node>;
  required: string[]; // names, in schema order
  additional: Node | null; // schema of other keys; null: none allowed (additionalProperties: false)
  enc: Map<string, Uint8Array>; // a declared name as JSON without its opening quote: `name"`
}
export interface ArrayNode extends Base {
  kind: "array";
  items: Node;
  minItems: number;
  maxItems: number; // Infinity when unbounded
}
export interface StringNode extends Base {
  kind: "string";
  minLength: number; // in Unicode code points, as JSON Schema counts
  maxLength: number;
}
export interface NumberNode extends Base {
  kind: "number";
  integer: boolean;
}
// enum, const, true/false, null, and fixed text: one of these exact byte strings
export interface LiteralNode extends Base {
  kind: "literal";
  texts: Uint8Array[];
}
// alternatives told apart by their first byte (dispatch[b]: the option, or -1)
export interface UnionNode extends Base {
  kind: "union";
  options: Node[];
  dispatch: Int8Array; // (256,)
}
export interface SeqNode extends Base {
  kind: "seq";
  parts: Node[];
  restBytes: number[]; // restBytes[i]: minBytes of parts[i..]
}
export interface SwitchNode extends Base {
  kind: "switch";
  cases: { tag: Uint8Array; then: Node }[]; // tags are prefix-free
}

export interface Grammar {
  root: Node;
  // Whitespace between JSON tokens, as llama.cpp's JSON grammar: none, one
  // space, or a newline and at most `maxIndent` spaces or tabs; so a text is
  // compact or pretty-printed, and never pads itself out.
  maxIndent: number;
}

export const DEFAULT_MAX_INDENT = 16; // four levels of four spaces

// A refused schema: `pointer` is where (RFC 6901, "" for the root), `keyword` what.
export class SchemaError extends LayerswarmError {
  constructor(readonly where: string, readonly pointer: string, readonly keyword: string, detail: string) {
    super("BAD_ARGUMENT", `${where}${pointer ? ` at ${pointer}` : ""}: ${detail}`);
    this.name = "SchemaError";
  }
}

export const SUPPORTED_KEYWORDS = [
  "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength", "enum", "const", "anyOf",
] as const;
// Keywords that describe and do not constrain: accepted and ignored.
const ANNOTATIONS = new Set([
  "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions",
]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;
type TypeName = (typeof TYPES)[number];

let nextId = 1;
const utf8 = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));

// ---- node constructors (also used by tools.ts) ----

export function literal(values: string[]): LiteralNode {
  const texts = values.map(utf8);
  return { kind: "literal", id: nextId++, texts, minBytes: Math.min(...texts.map((t) => t.length)) };
}
export const text = (s: string): LiteralNode => literal([s]);

export function seq(parts: Node[]): SeqNode {
  const restBytes = new Array<number>(parts.length + 1).fill(0);
  for (let i = parts.length - 1; i >= 0; i--) restBytes[i] = restBytes[i + 1] + parts[i].minBytes;
  return { kind: "seq", id: nextId++, parts, restBytes, minBytes: restBytes[0] };
}

export function switchOf(cases: { tag: string; then: Node }[]): SwitchNode {
  const cs = cases.map((c) => ({ tag: utf8(c.tag), then: c.then }));
  for (const a of cs)
    for (const b of cs)
      if (a !== b && a.tag.length <= b.tag.length && Buffer.from(b.tag.subarray(0, a.tag.length)).equals(a.tag))
        throw new LayerswarmError("BAD_ARGUMENT", `switch tags must be prefix-free: "${Buffer.from(a.tag)}" begins "${Buffer.from(b.tag)}"`);
  return { kind: "switch", id: nextId++, cases: cs, minBytes: Math.min(...cs.map((c) => c.tag.length + c.then.minBytes)) };
}

export function stringNode(minLength = 0, maxLength = Infinity): StringNode {
  return { kind: "string", id: nextId++, minLength, maxLength, minBytes: 2 + minLength };
}
const numberNode = (integer: boolean): NumberNode => ({ kind: "number", id: nextId++, integer, minBytes: 1 });

export function arrayNode(items: Node, minItems = 0, maxItems = Infinity): ArrayNode {
  return { kind: "array", id: nextId++, items, minItems, maxItems, minBytes: 2 + minItems * items.minBytes + Math.max(0, minItems - 1) };
}

export function objectNode(props: Map<string, Node>, required: string[], additional: Node | null): ObjectNode {
  const enc = new Map<string, Uint8Array>();
  for (const k of new Set([...props.keys(), ...required])) enc.set(k, utf8(JSON.stringify(k).slice(1)));
  const n: ObjectNode = { kind: "object", id: nextId++, props, required, additional, enc, minBytes: 0 };
  n.minBytes = 2 + required.reduce((s, r) => s + entryBytes(n, r), 0) + Math.max(0, required.length - 1);
  return n;
}

// `"name":value` at its shortest
export function entryBytes(n: ObjectNode, name: string): number {
  const enc = n.enc.get(name);
  const keyBytes = enc ? enc.length + 1 : Buffer.byteLength(JSON.stringify(name));
  return keyBytes + 1 + (n.props.get(name) ?? n.additional!).minBytes;
}

// the first bytes a value of `n` can start with
export function firstBytes(n: Node): Set<number> {
  switch (n.kind) {
    case "object": return new Set([0x7b]);
    case "array": return new Set([0x5b]);
    case "string": return new Set([0x22]);
    case "number": return new Set([0x2d, ...Array.from({ length: 10 }, (_, i) => 0x30 + i)]);
    case "literal": return new Set(n.texts.map((t) => t[0]));
    case "union": return new Set(n.options.flatMap((o) => [...firstBytes(o)]));
    case "seq": return firstBytes(n.parts[0]);
    case "switch": return new Set(n.cases.map((c) => c.tag[0]));
  }
}

// Alternatives that a first byte tells apart; null when two can start alike.
export function union(options: Node[]): Node | { clash: [number, number, number] } {
  const flat = options.flatMap((o) => (o.kind === "union" ? o.options : [o]));
  if (flat.length === 1) return flat[0];
  const dispatch = new Int8Array(256).fill(-1);
  for (let i = 0; i < flat.length; i++)
    for (const b of firstBytes(flat[i])) {
      if (dispatch[b] >= 0) return { clash: [dispatch[b], i, b] };
      dispatch[b] = i;
    }
  return { kind: "union", id: nextId++, options: flat, dispatch, minBytes: Math.min(...flat.map((o) => o.minBytes)) };
}

// Any JSON value: the nodes refer to each other (an object's values are any value).
function anyValue(): Node {
  const obj = objectNode(new Map(), [], null);
  const arr = arrayNode(obj); // items fixed below
  const any = union([obj, arr, stringNode(), numberNode(false), literal(["true", "false"]), literal(["null"])]) as UnionNode;
  obj.additional = any;
  arr.items = any;
  any.minBytes = 1;
  return any;
}
export const ANY: Node = anyValue();
// response_format {"type": "json_object"}: any object
export const ANY_OBJECT: Node = (ANY as UnionNode).options[0];

// ---- compiling a schema ----

const ptr = (p: string, k: string | number) => `${p}/${String(k).replace(/~/g, "~0").replace(/\//g, "~1")}`;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export interface CompileOptions {
  where?: string; // what the schema is, for messages (default "the schema")
  maxIndent?: number;
}

export function compileSchema(schema: unknown, opts: CompileOptions = {}): Grammar {
  const where = opts.where ?? "the schema";
  return { root: new Compiler(where).node(schema, ""), maxIndent: opts.maxIndent ?? DEFAULT_MAX_INDENT };
}

// The grammar of response_format {"type": "json_object"}.
export function anyObjectGrammar(maxIndent = DEFAULT_MAX_INDENT): Grammar {
  return { root: ANY_OBJECT, maxIndent };
}

class Compiler {
  constructor(private where: string) {}

  private fail(p: string, keyword: string, detail: string): never {
    throw new SchemaError(this.where, p, keyword, detail);
  }

  node(s: unknown, p: string): Node {
    if (s === true) return ANY;
    if (s === false) this.fail(p, "false", "the schema `false` allows no value");
    if (!isObj(s)) this.fail(p, "", "a schema must be an object or a boolean");
    for (const k of Object.keys(s))
      if (!ANNOTATIONS.has(k) && !(SUPPORTED_KEYWORDS as readonly string[]).includes(k))
        this.fail(p, k, `the JSON Schema keyword "${k}" is not supported (supported: ${SUPPORTED_KEYWORDS.join(", ")})`);
    if ("anyOf" in s) return this.anyOf(s, p);
    const types = this.types(s, p);
    let n: Node;
    const nodes = types.map((t) => this.typed(t, s, p));
    const u = union(nodes);
    if ("clash" in u) this.fail(ptr(p, "type"), "type", "these types cannot be told apart"); // cannot happen: types start differently
    n = u;
    if ("enum" in s || "const" in s) n = this.literal(s, p, n);
    return n;
  }

  private anyOf(s: Record<string, unknown>, p: string): Node {
    const others = Object.keys(s).filter((k) => k !== "anyOf" && !ANNOTATIONS.has(k));
    if (others.length) this.fail(ptr(p, others[0]), others[0], `"${others[0]}" beside "anyOf" is not supported: put it inside each branch`);
    const branches = s.anyOf;
    if (!Array.isArray(branches) || branches.length === 0) this.fail(ptr(p, "anyOf"), "anyOf", `"anyOf" must be a non-empty array of schemas`);
    const nodes = branches.map((b, i) => this.node(b, ptr(ptr(p, "anyOf"), i)));
    const u = union(nodes);
    if ("clash" in u) {
      const [i, j, b] = u.clash;
      this.fail(ptr(p, "anyOf"), "anyOf",
        `"anyOf" branches must differ in type (an object, an array, a string, a number, true/false, null): branches ${i} and ${j} can both start with ${JSON.stringify(String.fromCharCode(b))}`);
    }
    return u;
  }

  private types(s: Record<string, unknown>, p: string): TypeName[] {
    const t = s.type;
    let types: TypeName[];
    if (t === undefined) {
      // no type: infer it from the keywords given (constraining more than the
      // schema asks never yields an invalid value); none at all: any value
      const inferred = new Set<TypeName>();
      for (const k of ["properties", "required", "additionalProperties"]) if (k in s) inferred.add("object");
      for (const k of ["items", "minItems", "maxItems"]) if (k in s) inferred.add("array");
      for (const k of ["minLength", "maxLength"]) if (k in s) inferred.add("string");
      types = inferred.size ? [...inferred] : [...TYPES];
    } else {
      const list = Array.isArray(t) ? t : [t];
      if (list.length === 0) this.fail(ptr(p, "type"), "type", `"type" must be a type name or a non-empty array of them`);
      for (const x of list)
        if (!(TYPES as readonly unknown[]).includes(x)) this.fail(ptr(p, "type"), "type", `unknown type ${JSON.stringify(x)} (types: ${TYPES.join(", ")})`);
      types = [...new Set(list as TypeName[])];
    }
    // a number may be an integer: "integer" adds nothing beside "number"
    if (types.includes("number")) types = types.filter((x) => x !== "integer");
    return types;
  }

  private count(s: Record<string, unknown>, p: string, k: string): number | undefined {
    const v = s[k];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) this.fail(ptr(p, k), k, `"${k}" must be a non-negative integer`);
    return v;
  }

  private typed(t: TypeName, s: Record<string, unknown>, p: string): Node {
    switch (t) {
      case "string": {
        const lo = this.count(s, p, "minLength") ?? 0, hi = this.count(s, p, "maxLength") ?? Infinity;
        if (lo > hi) this.fail(ptr(p, "minLength"), "minLength", `"minLength" ${lo} is above "maxLength" ${hi}`);
        return stringNode(lo, hi);
      }
      case "number": return numberNode(false);
      case "integer": return numberNode(true);
      case "boolean": return literal(["true", "false"]);
      case "null": return literal(["null"]);
      case "array": {
        const lo = this.count(s, p, "minItems") ?? 0, hi = this.count(s, p, "maxItems") ?? Infinity;
        if (lo > hi) this.fail(ptr(p, "minItems"), "minItems", `"minItems" ${lo} is above "maxItems" ${hi}`);
        if (Array.isArray(s.items)) this.fail(ptr(p, "items"), "items", `"items" as an array (tuple validation) is not supported: give one schema for every item`);
        return arrayNode(s.items === undefined ? ANY : this.node(s.items, ptr(p, "items")), lo, hi);
      }
      case "object": return this.object(s, p);
    }
  }

  private object(s: Record<string, unknown>, p: string): Node {
    const props = new Map<string, Node>();
    if (s.properties !== undefined) {
      if (!isObj(s.properties)) this.fail(ptr(p, "properties"), "properties", `"properties" must be an object of schemas`);
      for (const [k, v] of Object.entries(s.properties)) props.set(k, this.node(v, ptr(ptr(p, "properties"), k)));
    }
    let additional: Node | null = ANY;
    const ap = s.additionalProperties;
    if (ap === false) additional = null;
    else if (ap !== undefined && ap !== true) additional = this.node(ap, ptr(p, "additionalProperties"));
    const required: string[] = [];
    if (s.required !== undefined) {
      if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== "string"))
        this.fail(ptr(p, "required"), "required", `"required" must be an array of property names`);
      for (const r of s.required as string[]) {
        if (required.includes(r)) continue;
        if (!props.has(r) && !additional)
          this.fail(ptr(p, "required"), "required", `"${r}" is required but not in "properties", and "additionalProperties" is false`);
        required.push(r);
      }
    }
    return objectNode(props, required, additional);
  }

  private literal(s: Record<string, unknown>, p: string, typed: Node): Node {
    let values: unknown[];
    let k: string;
    if ("const" in s) (values = [s.const]), (k = "const");
    else {
      k = "enum";
      if (!Array.isArray(s.enum) || s.enum.length === 0) this.fail(ptr(p, "enum"), "enum", `"enum" must be a non-empty array`);
      values = s.enum;
    }
    const ok = values.filter((v) => accepts(typed, v));
    if (ok.length === 0) this.fail(ptr(p, k), k, `no value of "${k}" satisfies the rest of this schema`);
    const texts = [...new Set(ok.map((v) => JSON.stringify(v)))];
    return literal(texts);
  }
}

// Does `v` (a parsed JSON value) match node `n`? Used to keep the enum values a schema allows.
export function accepts(n: Node, v: unknown): boolean {
  switch (n.kind) {
    case "union": return n.options.some((o) => accepts(o, v));
    case "literal": {
      const t = Buffer.from(JSON.stringify(v) ?? "", "utf8");
      return n.texts.some((x) => t.equals(x));
    }
    case "string": {
      if (typeof v !== "string") return false;
      const len = [...v].length;
      return len >= n.minLength && len <= n.maxLength;
    }
    case "number": return typeof v === "number" && Number.isFinite(v) && (!n.integer || Number.isInteger(v));
    case "array": return Array.isArray(v) && v.length >= n.minItems && v.length <= n.maxItems && v.every((x) => accepts(n.items, x));
    case "object": {
      if (!isObj(v)) return false;
      if (!n.required.every((r) => r in v)) return false;
      return Object.entries(v).every(([k, x]) => {
        const s = n.props.get(k) ?? n.additional;
        return s !== null && accepts(s, x);
      });
    }
    case "seq": case "switch": return false; // not JSON values
  }
}

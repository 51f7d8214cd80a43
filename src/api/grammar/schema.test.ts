import { describe, expect, it } from "vitest";
import { LayerswarmError } from "../../errors.js";
import { SchemaError, accepts, compileSchema } from "./schema.js";

function refusal(schema: unknown): SchemaError {
  try {
    compileSchema(schema, { where: "response_format.json_schema.schema" });
  } catch (e) {
    expect(e).toBeInstanceOf(SchemaError);
    expect(e).toBeInstanceOf(LayerswarmError);
    expect((e as SchemaError).code).toBe("BAD_ARGUMENT");
    return e as SchemaError;
  }
  throw new Error(`accepted: ${JSON.stringify(schema)}`);
}

describe("compiling a JSON Schema", () => {
  it("refuses keywords outside the subset, naming the keyword and where it is", () => {
    const cases: [unknown, string, string][] = [
      [{ type: "string", pattern: "^a" }, "", "pattern"],
      [{ type: "object", properties: { when: { type: "string", format: "date-time" } } }, "/properties/when", "format"],
      [{ type: "object", properties: { n: { type: "integer", minimum: 0 } } }, "/properties/n", "minimum"],
      [{ type: "array", items: { $ref: "#/$defs/x" } }, "/items", "$ref"],
      [{ oneOf: [{ type: "string" }] }, "", "oneOf"],
      [{ allOf: [{ type: "string" }] }, "", "allOf"],
      [{ type: "object", properties: { "a/b~c": { not: {} } } }, "/properties/a~1b~0c", "not"],
      [{ type: "array", prefixItems: [] }, "", "prefixItems"],
      [{ type: "object", patternProperties: {} }, "", "patternProperties"],
      [{ type: "array", items: { type: "object", properties: { x: { type: "number", multipleOf: 2 } } } }, "/items/properties/x", "multipleOf"],
    ];
    for (const [schema, pointer, keyword] of cases) {
      const e = refusal(schema);
      expect(e.pointer, keyword).toBe(pointer);
      expect(e.keyword).toBe(keyword);
      expect(e.message).toContain(`"${keyword}"`);
      expect(e.message).toContain("response_format.json_schema.schema");
      if (pointer) expect(e.message).toContain(` at ${pointer}:`);
      expect(e.message).toMatch(/is not supported \(supported: type, properties, required, additionalProperties, items/);
    }
  });

  it("refuses schemas that are malformed or allow nothing, saying why", () => {
    const cases: [unknown, string, RegExp][] = [
      [{ type: "strin" }, "/type", /unknown type "strin"/],
      [{ type: [] }, "/type", /non-empty array/],
      [{ type: "string", minLength: 5, maxLength: 2 }, "/minLength", /"minLength" 5 is above "maxLength" 2/],
      [{ type: "array", minItems: -1 }, "/minItems", /non-negative integer/],
      [{ type: "object", properties: { a: {} }, required: ["b"], additionalProperties: false }, "/required", /"b" is required but not in "properties"/],
      [{ type: "string", enum: [1, 2] }, "/enum", /no value of "enum" satisfies/],
      [{ enum: [] }, "/enum", /non-empty array/],
      [{ anyOf: [{ type: "object" }, { type: "object", properties: {} }] }, "/anyOf", /branches 0 and 1 can both start with "\{"/],
      [{ anyOf: [{ type: "string" }], type: "string" }, "/type", /beside "anyOf"/],
      [{ type: "array", items: [{ type: "string" }] }, "/items", /tuple/],
      [false, "", /allows no value/],
      [{ type: "object", properties: { a: 3 } }, "/properties/a", /must be an object or a boolean/],
    ];
    for (const [schema, pointer, re] of cases) {
      const e = refusal(schema);
      expect(e.pointer, JSON.stringify(schema)).toBe(pointer);
      expect(e.message).toMatch(re);
    }
  });

  it("ignores annotations, infers a missing type from the keywords given", () => {
    const g = compileSchema({ title: "T", description: "d", $schema: "x", examples: [], properties: { a: { default: 1, type: "integer" } }, required: ["a"] });
    expect(g.root.kind).toBe("object");
    expect(compileSchema({ maxLength: 3 }).root.kind).toBe("string");
    expect(compileSchema({ items: { type: "null" } }).root.kind).toBe("array");
    expect(compileSchema({}).root.kind).toBe("union"); // anything
    expect(compileSchema(true).root.kind).toBe("union");
  });

  it("keeps only the enum values that the rest of the schema allows, as compact JSON", () => {
    const g = compileSchema({ type: "string", enum: ["a", "abc", 3, null], maxLength: 2 });
    expect(g.root.kind === "literal" && g.root.texts.map((t) => Buffer.from(t).toString())).toEqual(['"a"']);
    const h = compileSchema({ const: { b: [1, "x"] } });
    expect(h.root.kind === "literal" && Buffer.from(h.root.texts[0]).toString()).toBe('{"b":[1,"x"]}');
  });

  it("accepts() checks values against the compiled subset", () => {
    const g = compileSchema({
      type: "object", properties: { s: { type: "string", minLength: 1 }, n: { type: ["integer", "null"] }, l: { type: "array", items: { enum: [1, 2] }, maxItems: 2 } },
      required: ["s"], additionalProperties: false,
    });
    expect(accepts(g.root, { s: "x", n: null, l: [1, 2] })).toBe(true);
    expect(accepts(g.root, { s: "😀", n: 3 })).toBe(true);
    for (const bad of [{ s: "" }, { n: 1 }, { s: "x", n: 1.5 }, { s: "x", l: [1, 2, 1] }, { s: "x", l: [3] }, { s: "x", z: 1 }, [], "x"])
      expect(accepts(g.root, bad), JSON.stringify(bad)).toBe(false);
  });
});

describe("response_format", () => {
  it("text: no grammar; json_object: any object; json_schema: the schema's", async () => {
    const { responseFormatGrammar } = await import("./response.js");
    expect(responseFormatGrammar(null)).toBeNull();
    expect(responseFormatGrammar({ type: "text" })).toBeNull();
    expect(responseFormatGrammar({ type: "json_object" })!.root.kind).toBe("object");
    expect(responseFormatGrammar({ type: "json_schema", json_schema: { name: "x", strict: true, schema: { type: "array" } } })!.root.kind).toBe("array");
    const refused: [unknown, RegExp][] = [
      [{ type: "xml" }, /^response_format.type: must be "text", "json_object" or "json_schema"/],
      [{ type: "json_schema" }, /^response_format.json_schema: must be/],
      [{ type: "json_schema", json_schema: { name: "a b", schema: {} } }, /^response_format.json_schema.name: must be 1 to 64/],
      [{ type: "json_schema", json_schema: { name: "x", schema: { type: "string", pattern: "a" } } }, /^response_format.json_schema.schema: the JSON Schema keyword "pattern" is not supported/],
    ];
    for (const [rf, re] of refused) expect(() => responseFormatGrammar(rf)).toThrow(re);
  });
});

// OpenAI's `response_format` -> the grammar that constrains the answer, or
// null for plain text. Errors are SchemaErrors (BAD_ARGUMENT) that name the
// field: answer 400 with param "response_format".

import { Grammar, SchemaError, anyObjectGrammar, compileSchema } from "./schema.js";

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export function responseFormatGrammar(rf: unknown): Grammar | null {
  if (rf === undefined || rf === null) return null;
  const bad = (field: string, detail: string): never => {
    throw new SchemaError(field, "", field, detail);
  };
  if (!isObj(rf)) bad("response_format", `must be {"type": "text" | "json_object" | "json_schema", ...}`);
  switch ((rf as Record<string, unknown>).type) {
    case "text": return null;
    case "json_object": return anyObjectGrammar();
    case "json_schema": {
      const js = (rf as Record<string, unknown>).json_schema;
      if (!isObj(js)) return bad("response_format.json_schema", `must be {"name": ..., "schema": {...}, "strict": ...}`);
      if (typeof js.name !== "string" || !/^[a-zA-Z0-9_-]{1,64}$/.test(js.name))
        bad("response_format.json_schema.name", "must be 1 to 64 letters, digits, underscores or dashes");
      // no schema: any JSON value, as OpenAI (strict or not, the output is held to the schema)
      return compileSchema(js.schema ?? true, { where: "response_format.json_schema.schema" });
    }
    default:
      return bad("response_format.type", `must be "text", "json_object" or "json_schema"`);
  }
}

// Structured output: JSON Schema (a subset) -> grammar -> byte automaton ->
// token masks for constrained sampling. See README "Structured output".

export { ANY, ANY_OBJECT, DEFAULT_MAX_INDENT, SUPPORTED_KEYWORDS, SchemaError, accepts, anyObjectGrammar, compileSchema } from "./schema.js";
export type { CompileOptions, Grammar, Node } from "./schema.js";
export { JsonState, MAX_NUMBER_BYTES } from "./automaton.js";
export { JsonConstraint, walk } from "./constraint.js";
export { responseFormatGrammar } from "./response.js";
export { VocabIndex } from "./vocab.js";
export type { TokenBytes } from "./vocab.js";

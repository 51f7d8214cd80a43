// A generation loop with a token mask, for tests of constrained output: the
// same steps as model.ts generate(), with the constraint applied to the logits
// before sampling and told each token sampled.

import { JsonConstraint } from "../api/grammar/constraint.js";
import { LayerStack, Model } from "../model/model.js";
import { Sampler, SamplingParams } from "../model/sampler.js";
import { decodeAll } from "../tokenizer/types.js";

export interface ConstrainedResult {
  ids: number[]; // generated, end of generation excluded
  text: string; // as the API decodes them
  finish: "stop" | "length";
}

let sessions = 0;

export async function generateConstrained(model: Model, stack: LayerStack, prompt: number[], c: JsonConstraint, opts: SamplingParams & { maxTokens: number }): Promise<ConstrainedResult> {
  const session = `constrained-${++sessions}`;
  const sampler = new Sampler(opts);
  const history = [...prompt], ids: number[] = [];
  const step = async (toks: number[], pos: number) => {
    const [h] = await stack.forward([{ session, pos, T: toks.length, tokens: toks, hidden: model.embedder.embed(toks), lastRowOnly: true }]);
    return model.head.logitsBatched(h.subarray(h.length - model.cfg.dim));
  };
  let finish: "stop" | "length" = "length";
  try {
    let logits = await step(prompt, 0);
    for (let n = 0; n < opts.maxTokens; n++) {
      if (c.finished) break; // complete: stop without sampling
      c.applyTo(logits, opts.maxTokens - n);
      const id = sampler.sample(logits, history);
      if (model.tokenizer.eog.has(id)) {
        finish = "stop";
        break;
      }
      c.accept(id);
      ids.push(id);
      history.push(id);
      if (n + 1 < opts.maxTokens && !c.finished) logits = await step([id], history.length - 1);
    }
    if (c.complete) finish = "stop";
  } finally {
    await stack.dropSession(session);
  }
  return { ids, text: decodeAll(model.tokenizer, ids, prompt.at(-1)), finish };
}

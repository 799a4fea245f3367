import { AddedTokenMatcher } from './added-tokens.js'

/**
 * Finds special-token strings (`<|eot_id|>`, `<|im_end|>` …) inside user text. In a chat they would
 * be tokenized as control tokens — a turn could end inside a message — so chat contents may not
 * hold them.
 */
export function makeSpecialTokenFinder (tokens: readonly string[]): (text: string) => string | null {
  const matcher = new AddedTokenMatcher(tokens)
  return (text) => matcher.find(text)?.token ?? null
}

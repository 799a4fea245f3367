import type { ChatRenderer } from './chat-template.js'
import { IGNORE_INDEX, type DatasetExample, type TokenizedDoc } from './examples.js'
import type { ModelTokenizer } from './model.js'

/** A run of an example: text to tokenize, or ids known already; trained or not. */
interface Piece { text?: string, ids?: readonly number[], trained: boolean }

/** An example ready for the tokenizer: its pieces, in order. `wrapped`: BOS/EOS added by us, not by a template. */
export interface TokenPlan { line: number, pieces: Piece[], wrapped: boolean }

/**
 * Splits an example into trained and untrained pieces. Each piece is tokenized on its own, so a
 * trained turn starts on a token boundary exactly where inference would start generating (after the
 * generation prompt), never inside a token merged across the boundary.
 */
export function planExample (example: DatasetExample, model: ModelTokenizer, renderer: ChatRenderer | null): TokenPlan {
  const line = example.line
  switch (example.format) {
    case 'chat': {
      if (renderer === null) throw new Error('chat examples need a chat renderer')
      const { text, spans } = renderer.render(example)
      const pieces: Piece[] = []
      let at = 0
      for (const [start, end] of spans) {
        if (start > at) pieces.push({ text: text.slice(at, start), trained: false })
        pieces.push({ text: text.slice(start, end), trained: true })
        at = end
      }
      if (at < text.length) pieces.push({ text: text.slice(at), trained: false })
      return { line, pieces, wrapped: false }
    }
    // Raw formats get what the tokenizer's post-processor adds (Llama: BOS) and EOS at the end, so
    // the model learns to stop; the prompt is tokenized apart from the completion, as at inference.
    case 'prompt_completion': return {
      line,
      wrapped: true,
      pieces: [
        { ids: model.sequencePrefixIds, trained: false },
        { text: example.prompt, trained: false },
        { text: example.completion, trained: true },
        { ids: eosIds(model), trained: true },
      ],
    }
    case 'text': return {
      line,
      wrapped: true,
      pieces: [
        { ids: model.sequencePrefixIds, trained: true },
        { text: example.text, trained: true },
        { ids: eosIds(model), trained: true },
      ],
    }
    case 'pretokenized': throw new Error('pretokenized examples need no plan')
  }
}

function eosIds (model: ModelTokenizer): number[] {
  return model.eosId === null ? model.sequenceSuffixIds : [model.eosId]
}

/** Tokenizes many plans in one native call (`encodeBatch` spreads it over all cores). */
export async function tokenizePlans (model: ModelTokenizer, plans: readonly TokenPlan[]): Promise<TokenizedDoc[]> {
  const texts: string[] = []
  for (const plan of plans) {
    for (const piece of plan.pieces) if (piece.text !== undefined && piece.text !== '') texts.push(piece.text)
  }
  const encodings = texts.length === 0 ? [] : await model.tokenizer.encodeBatch(texts, { addSpecialTokens: false })
  let next = 0
  return plans.map((plan) => {
    const runs = plan.pieces.map((piece) => {
      if (piece.text === undefined) return { ids: piece.ids ?? [], trained: piece.trained }
      if (piece.text === '') return { ids: [], trained: piece.trained }
      return { ids: (encodings[next++] as { getIds: () => number[] }).getIds(), trained: piece.trained }
    })
    return assembleDoc(plan.line, plan.wrapped ? dedupeBoundaryIds(runs, model) : runs)
  })
}

/**
 * Raw text that already starts with BOS (or ends with EOS) must not get a second one: drops the
 * added id when the text's own tokens repeat it.
 */
function dedupeBoundaryIds (runs: Array<{ ids: readonly number[], trained: boolean }>, model: ModelTokenizer): Array<{ ids: readonly number[], trained: boolean }> {
  const first = runs[0]
  const second = runs[1]
  if (first !== undefined && second !== undefined && first.ids.length === 1 && first.ids[0] === second.ids[0] && first.ids[0] === model.bosId) {
    runs = runs.slice(1)
  }
  const last = runs[runs.length - 1]
  const beforeLast = runs[runs.length - 2]
  if (last !== undefined && beforeLast !== undefined && last.ids.length === 1 && last.ids[0] === beforeLast.ids[beforeLast.ids.length - 1] && last.ids[0] === model.eosId) {
    runs = runs.slice(0, -1)
  }
  return runs
}

/** Concatenates runs and pre-shifts the labels: targets[i] = label of token i+1 (trained) or -100. */
export function assembleDoc (line: number, runs: ReadonlyArray<{ ids: readonly number[], trained: boolean }>): TokenizedDoc {
  let length = 0
  for (const run of runs) length += run.ids.length
  const tokens = new Int32Array(length)
  const targets = new Int32Array(length).fill(IGNORE_INDEX)
  let at = 0
  let lossTokens = 0
  for (const { ids, trained } of runs) {
    for (let i = 0; i < ids.length; i++, at++) {
      const id = ids[i] as number
      tokens[at] = id
      if (trained && at > 0) {
        targets[at - 1] = id
        lossTokens++
      }
    }
  }
  return { line, tokens, targets, lossTokens }
}

/** Pretokenized rows: labels (HF-aligned, -100 = masked) shift by one; without labels every next token is a target. */
export function pretokenizedDoc (line: number, tokenIds: readonly number[], labels: readonly number[] | null): TokenizedDoc {
  const tokens = Int32Array.from(tokenIds)
  const targets = new Int32Array(tokens.length).fill(IGNORE_INDEX)
  const source = labels ?? tokenIds
  let lossTokens = 0
  for (let i = 0; i + 1 < tokens.length; i++) {
    const target = source[i + 1] as number
    targets[i] = target
    if (target !== IGNORE_INDEX) lossTokens++
  }
  return { line, tokens, targets, lossTokens }
}

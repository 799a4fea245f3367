import type { Span } from './chat-template.js'
import { IGNORE_INDEX, type TokenizedDoc } from './examples.js'
import type { ModelTokenizer } from './model.js'
import type { SegmentTokenizer } from './segment-tokenizer.js'

/** An example ready for the tokenizer: rendered text, its trained character spans, ids around it. */
export interface TokenPlan {
  line: number
  text: string
  spans: Span[]
  /** Untrained ids before the text (BOS for raw formats on Llama-like tokenizers). */
  prefixIds: readonly number[]
  /** Trained ids after the text (EOS for raw formats), so the model learns to stop. */
  suffixIds: readonly number[]
}

interface Run { ids: readonly number[], trained: boolean }

/** Tokenizes a batch of plans: one native call spread over all cores. */
export async function tokenizePlans (model: ModelTokenizer, plans: readonly TokenPlan[]): Promise<TokenizedDoc[]> {
  if (plans.length === 0) return []
  const bodies = model.segmenter === null
    ? await runsFromWholeTexts(model, plans)
    : await runsFromPieces(model.segmenter, plans)
  return plans.map((plan, i) => {
    const runs = trimDuplicateMarkers(bodies[i] as Run[], plan, model)
    return assembleDoc(plan.line, [
      { ids: runs.prefix, trained: false },
      ...runs.body,
      { ids: runs.suffix, trained: true },
    ])
  })
}

/**
 * Exact, fast path: the text is cut at span boundaries and each piece tokenized on its own, so a
 * trained turn starts on a token boundary exactly where inference starts generating (after the
 * generation prompt), never inside a token merged across the boundary.
 */
async function runsFromPieces (segmenter: SegmentTokenizer, plans: readonly TokenPlan[]): Promise<Run[][]> {
  const texts: string[] = []
  const shapes: boolean[][] = plans.map((plan) => {
    const trained: boolean[] = []
    let at = 0
    const push = (end: number, isTrained: boolean): void => {
      if (end > at) {
        texts.push(plan.text.slice(at, end))
        trained.push(isTrained)
      }
      at = end
    }
    for (const [start, end] of plan.spans) {
      push(start, false)
      push(end, true)
    }
    push(plan.text.length, false)
    return trained
  })
  const ids = await segmenter.encodeAll(texts)
  let next = 0
  return shapes.map((trained) => trained.map((isTrained) => ({ ids: ids[next++] as number[], trained: isTrained })))
}

/**
 * For tokenizers whose pieces depend on position (SentencePiece-style prefix on the first piece
 * only): tokenize the whole text, and train the tokens that start inside a span.
 */
async function runsFromWholeTexts (model: ModelTokenizer, plans: readonly TokenPlan[]): Promise<Run[][]> {
  const encodings = await model.tokenizer.encodeBatch(plans.map((plan) => plan.text), { addSpecialTokens: false })
  return plans.map((plan, i) => {
    const encoding = encodings[i] as { getIds: () => number[], getOffsets: () => number[][] }
    const ids = encoding.getIds()
    const offsets = encoding.getOffsets()
    const spans = plan.spans.map(([start, end]) =>
      [codePointIndex(plan.text, start), codePointIndex(plan.text, end)] as const)
    return ids.map((id, t) => {
      const start = (offsets[t] as number[])[0] as number
      return { ids: [id], trained: spans.some(([s, e]) => start >= s && start < e) }
    })
  })
}

/** The tokenizer's offsets count code points; JS strings count UTF-16 units. */
function codePointIndex (text: string, utf16Index: number): number {
  let surrogatePairs = 0
  for (let i = 0; i < utf16Index; i++) {
    const c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) surrogatePairs++
  }
  return utf16Index - surrogatePairs
}

/** Raw text that already starts with BOS (or ends with EOS) must not get a second one. */
function trimDuplicateMarkers (
  body: Run[],
  plan: TokenPlan,
  model: ModelTokenizer
): { prefix: readonly number[], body: Run[], suffix: readonly number[] } {
  const first = body.find((run) => run.ids.length > 0)?.ids[0]
  const last = body.findLast((run) => run.ids.length > 0)?.ids.at(-1)
  const prefix = plan.prefixIds.length === 1 && plan.prefixIds[0] === first && first === model.bosId
    ? []
    : plan.prefixIds
  const suffix = plan.suffixIds.length === 1 && plan.suffixIds[0] === last && last === model.eosId
    ? []
    : plan.suffixIds
  return { prefix, body, suffix }
}

/** Concatenates runs and pre-shifts the labels: targets[i] = token i+1 if trained, else -100. */
export function assembleDoc (line: number, runs: readonly Run[]): TokenizedDoc {
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
export function pretokenizedDoc (
  line: number,
  tokenIds: readonly number[],
  labels: readonly number[] | null
): TokenizedDoc {
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

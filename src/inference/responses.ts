// The OpenAI wire objects of chat and text completions, whole and as stream chunks.
import { randomBytes } from 'node:crypto'
import type { Tokenizer } from 'tokenizers'
import { nowSeconds } from '../ids.js'
import type { TopLogprobs } from './engine-worker.js'
import type { ChoiceOutput, TokenInfo } from './generate.js'
import type { Prepared } from './inference.service.js'
import { parseToolCalls, type ParsedToolCall } from './tool-calls.js'

export interface Usage { prompt_tokens: number, completion_tokens: number, total_tokens: number }
export interface Envelope { id: string, created: number, model: string }

export const envelope = (kind: 'chatcmpl' | 'cmpl', model: string): Envelope =>
  ({ id: `${kind}-${randomBytes(12).toString('hex')}`, created: nowSeconds(), model })

/** Prompt tokens count once per prompt (OpenAI counts a prompt once whatever n is). */
export function usageOf (prepared: Prepared, choices: ChoiceOutput[]): Usage {
  const prompt = prepared.prompts.reduce((sum, p) => sum + p.ids.length, 0)
  const completion = choices.reduce((sum, c) => sum + c.completionTokens, 0)
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

/** Each token as text (what OpenAI's `token` field holds) and its UTF-8 bytes. */
export class TokenTexts {
  private readonly known = new Map<number, string>()
  constructor (private readonly tokenizer: Tokenizer) {}

  async load (ids: Iterable<number>): Promise<void> {
    const missing = [...new Set(ids)].filter(id => !this.known.has(id))
    if (missing.length === 0) return
    const texts = await this.tokenizer.decodeBatch(missing.map(id => [id]), false)
    missing.forEach((id, i) => this.known.set(id, texts[i] ?? ''))
  }

  text (id: number): string { return this.known.get(id) ?? '' }
}

export const idsOf = (tokens: TokenInfo[]) => tokens.flatMap(t => [t.id, ...t.top.map(([id]) => id)])

function chatLogprob (texts: TokenTexts, id: number, logprob: number) {
  const token = texts.text(id)
  return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] }
}

export function chatLogprobs (texts: TokenTexts, tokens: TokenInfo[]) {
  return {
    content: tokens.map(t => ({
      ...chatLogprob(texts, t.id, t.logprob),
      top_logprobs: t.top.map(([id, lp]) => chatLogprob(texts, id, lp)),
    })),
    refusal: null,
  }
}

export function chatMessage (prepared: Prepared, choice: ChoiceOutput) {
  const parsed = prepared.tools ? parseToolCalls(prepared.tools, choice.text) : { content: choice.text, calls: [] }
  const message: { role: 'assistant', content: string | null, refusal: null, tool_calls?: ParsedToolCall[] } =
    { role: 'assistant', content: parsed.content, refusal: null }
  if (parsed.calls.length > 0) message.tool_calls = parsed.calls
  return { message, finishReason: parsed.calls.length > 0 ? 'tool_calls' as const : choice.finishReason }
}

export function chatCompletion (env: Envelope, prepared: Prepared, choices: ChoiceOutput[], texts: TokenTexts) {
  return {
    ...env,
    object: 'chat.completion' as const,
    system_fingerprint: null,
    choices: choices.map((c, index) => {
      const { message, finishReason } = chatMessage(prepared, c)
      const logprobs = prepared.logprobs === null ? null : chatLogprobs(texts, c.tokens)
      return { index, message, logprobs, finish_reason: finishReason }
    }),
    usage: usageOf(prepared, choices),
  }
}

export function chatChunk (env: Envelope, choices: unknown[], usage?: Usage | null) {
  return { ...env, object: 'chat.completion.chunk' as const, system_fingerprint: null, choices, ...(usage === undefined ? {} : { usage }) }
}

/** Completions' logprobs: parallel lists, `text_offset` counted from the start of the choice's text. */
type EchoedToken = { id: number, logprob: number | null, top: TopLogprobs | null }

export function completionLogprobs (texts: TokenTexts, tokens: EchoedToken[], offset = 0) {
  const out = {
    tokens: [] as string[],
    token_logprobs: [] as Array<number | null>,
    top_logprobs: [] as Array<Record<string, number> | null>,
    text_offset: [] as number[],
  }
  let at = offset
  for (const t of tokens) {
    const text = texts.text(t.id)
    out.tokens.push(text)
    out.token_logprobs.push(t.logprob)
    out.top_logprobs.push(t.top === null ? null : Object.fromEntries(t.top.map(([id, lp]) => [texts.text(id), lp])))
    out.text_offset.push(at)
    at += text.length
  }
  return out
}

/** The prompt's own tokens with their logprobs, for `echo` (the first has none: nothing precedes it). */
export function promptTokens (ids: number[], choice: ChoiceOutput) {
  return ids.map((id, i) => ({ id, logprob: choice.prompt?.logprobs[i] ?? null, top: choice.prompt?.top?.[i] ?? null }))
}

export function textCompletion (
  env: Envelope,
  prepared: Prepared,
  choices: ChoiceOutput[],
  texts: TokenTexts,
  echo: boolean
) {
  const n = prepared.params.n
  return {
    ...env,
    object: 'text_completion' as const,
    system_fingerprint: null,
    choices: choices.map((c, index) => {
      const prompt = prepared.prompts[Math.floor(index / n)] ?? { ids: [], text: '' }
      const head = echo ? prompt.text : ''
      let logprobs = null
      if (prepared.logprobs !== null) {
        const echoed = echo ? completionLogprobs(texts, promptTokens(prompt.ids, c)) : null
        const generated = completionLogprobs(texts, c.tokens, head.length)
        logprobs = echoed === null
          ? generated
          : {
              tokens: [...echoed.tokens, ...generated.tokens],
              token_logprobs: [...echoed.token_logprobs, ...generated.token_logprobs],
              top_logprobs: [...echoed.top_logprobs, ...generated.top_logprobs],
              text_offset: [...echoed.text_offset, ...generated.text_offset],
            }
      }
      return { index, text: head + c.text, logprobs, finish_reason: c.finishReason }
    }),
    usage: usageOf(prepared, choices),
  }
}

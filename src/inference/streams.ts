// Streamed completions: chunks as the text arrives, a last chunk per choice with its finish_reason,
// the usage chunk when `stream_options.include_usage`, then `[DONE]`. With tools, a choice's text is
// held until it ends, because whether it is a tool call is only known then.
import { ApiError } from '../errors.js'
import type { EventStream } from '../http/sse.js'
import type { EngineWorker } from './engine-worker.js'
import type { TokenInfo } from './generate.js'
import { runChoices, type Prepared } from './inference.service.js'
import { chatChunk, chatLogprobs, chatMessage, completionLogprobs, idsOf, TokenTexts, usageOf, type Envelope } from './responses.js'

export async function streamChat (
  engine: EngineWorker,
  prepared: Prepared,
  env: Envelope,
  events: EventStream,
  signal: AbortSignal
): Promise<void> {
  const texts = new TokenTexts(prepared.prompt.tokenizer.tokenizer)
  const withUsage = prepared.params.includeUsage
  const send = (choice: object) => { events.send(chatChunk(env, [choice], withUsage ? null : undefined)) }
  const count = prepared.prompts.length * prepared.params.n
  for (let index = 0; index < count; index++) {
    send({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null })
  }
  const logprobsOf = async (tokens: TokenInfo[]) => {
    if (prepared.logprobs === null) return null
    await texts.load(idsOf(tokens))
    return chatLogprobs(texts, tokens)
  }
  await run(events, async () => {
    const choices = await runChoices(engine, prepared, signal, (index) => ({
      delta: async (text, tokens) => {
        if (prepared.tools) return
        send({ index, delta: { content: text }, logprobs: await logprobsOf(tokens), finish_reason: null })
      },
    }))
    for (const [index, choice] of choices.entries()) {
      if (prepared.tools) {
        const { message } = chatMessage(prepared, choice)
        const calls = message.tool_calls?.map((call, i) => ({ index: i, ...call }))
        const delta = { content: message.content, ...(calls ? { tool_calls: calls } : {}) }
        send({ index, delta, logprobs: await logprobsOf(choice.tokens), finish_reason: null })
      }
      send({ index, delta: {}, logprobs: null, finish_reason: chatMessage(prepared, choice).finishReason })
    }
    if (withUsage) events.send(chatChunk(env, [], usageOf(prepared, choices)))
  })
}

export async function streamCompletion (
  engine: EngineWorker,
  prepared: Prepared,
  env: Envelope,
  echo: boolean,
  events: EventStream,
  signal: AbortSignal
): Promise<void> {
  const texts = new TokenTexts(prepared.prompt.tokenizer.tokenizer)
  const withUsage = prepared.params.includeUsage
  const send = (choice: object) => {
    events.send({ ...env, object: 'text_completion', system_fingerprint: null, choices: [choice], ...(withUsage ? { usage: null } : {}) })
  }
  const n = prepared.params.n
  if (echo) {
    prepared.prompts.forEach((p, i) => {
      for (let k = 0; k < n; k++) send({ index: i * n + k, text: p.text, logprobs: null, finish_reason: null })
    })
  }
  await run(events, async () => {
    const choices = await runChoices(engine, prepared, signal, (index) => ({
      delta: async (text, tokens) => {
        let logprobs = null
        if (prepared.logprobs !== null) {
          await texts.load(idsOf(tokens))
          logprobs = completionLogprobs(texts, tokens)
        }
        send({ index, text, logprobs, finish_reason: null })
      },
    }))
    for (const [index, choice] of choices.entries()) send({ index, text: '', logprobs: null, finish_reason: choice.finishReason })
    if (withUsage) events.send({ ...env, object: 'text_completion', system_fingerprint: null, choices: [], usage: usageOf(prepared, choices) })
  })
}

/** Ends the stream whatever happens: an error after the first byte is an `error` event. */
async function run (events: EventStream, body: () => Promise<void>): Promise<void> {
  try {
    await body()
  } catch (err) {
    if (!(err instanceof ApiError)) throw err
    events.fail(err)
  } finally {
    events.end()
  }
}

// One completion choice on the embedded engine: token ids from the worker turned into text deltas
// (stop strings applied here, where the text is), with their logprobs, ending in a finish reason.
import type { Tokenizer } from 'tokenizers'
import type { ApiError } from '../errors.js'
import type { EngineWorker, GeneratedToken, GenerateRequest, PromptLogprobs, TopLogprobs } from './engine-worker.js'
import { TextStream } from './text-stream.js'

export interface TokenInfo { id: number, logprob: number, top: TopLogprobs }

export interface ChoiceOutput {
  text: string
  finishReason: 'stop' | 'length'
  /** Tokens the model generated for this choice (an end-of-turn token included: it was generated). */
  completionTokens: number
  /** Per shown token, when logprobs were asked for (stop tokens and a cut-off stop string's tokens excluded). */
  tokens: TokenInfo[]
  prompt: PromptLogprobs | null
}

export interface ChoiceListener {
  /** Text that may be shown now, and the tokens it came from (when logprobs were asked for). */
  delta: (text: string, tokens: TokenInfo[]) => Promise<void> | void
}

export interface ChoiceRequest extends GenerateRequest {
  stop: string[]
}

/** Runs one choice to its end; `signal` (the client went away) cancels it in the worker. */
export async function runChoice (
  engine: EngineWorker,
  tokenizer: Tokenizer,
  request: ChoiceRequest,
  signal: AbortSignal,
  listener?: ChoiceListener
): Promise<ChoiceOutput> {
  const { stop, ...generate } = request
  const stream = new TextStream(tokenizer, stop)
  const stopIds = new Set(request.stop_ids)
  const out: ChoiceOutput = { text: '', finishReason: 'length', completionTokens: 0, tokens: [], prompt: null }
  let pending: TokenInfo[] = []
  let chain = Promise.resolve() // tokens are decoded in order, one at a time
  let settled = false
  return await new Promise<ChoiceOutput>((resolve, reject) => {
    const fail = (err: unknown) => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      generation.cancel()
      reject(err)
    }
    // one step after another; a step that throws (a decode, a client write) fails the choice, never the process
    const then = (step: () => Promise<void>) => { chain = chain.then(step).catch(fail) }
    const finish = (reason: 'stop' | 'length') => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      chain = chain.then(async () => {
        if (!stream.stopped) await emit(stream.flush(), true)
        out.finishReason = stream.stopped ? 'stop' : reason
        resolve(out)
      }).catch(reject)
    }
    // tokens wait for their text (a held-back partial character or stop string) unless it is the end
    const emit = async (text: string, last = false) => {
      if (text === '' && (!last || pending.length === 0)) return
      out.text += text
      const tokens = pending
      pending = []
      if (request.logprobs !== null) out.tokens.push(...tokens)
      await listener?.delta(text, tokens)
    }
    const onToken = (t: GeneratedToken) => {
      if (settled) return
      out.completionTokens++
      if (stopIds.has(t.token)) return // ends the turn; never shown
      then(async () => {
        if (stream.stopped) return
        if (request.logprobs !== null) pending.push({ id: t.token, logprob: t.logprob ?? 0, top: t.top ?? [] })
        const text = await stream.push(t.token)
        await emit(text, stream.stopped)
        if (stream.stopped) {
          generation.cancel()
          finish('stop')
        }
      })
    }
    const generation = engine.generate(generate, {
      prompt: (p) => { out.prompt = p },
      token: onToken,
      done: (reason) => { finish(reason === 'stop' ? 'stop' : 'length') },
      fail: (err: ApiError) => { fail(err) },
    })
    const onAbort = () => { generation.cancel() }
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
}

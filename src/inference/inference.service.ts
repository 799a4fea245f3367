// From a checked request to choices: resolve the model, build the prompt as it was trained, check it
// fits the context, and run the choices (n per prompt) concurrently on the embedded engine.
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { resolveDraftModel, type DraftModel } from './draft-model.js'
import type { EngineWorker, GenerateRequest } from './engine-worker.js'
import { runChoice, type ChoiceListener, type ChoiceOutput, type ChoiceRequest } from './generate.js'
import type { ChatCompletionRequest, CompletionRequest } from './inference.schemas.js'
import type { SamplingParams } from './parameters.js'
import { chatPrompt, checkTools, promptModel, templateMessages, textPrompt, type PromptModel } from './prompt.js'
import { resolveServedModel } from './resolve-model.js'
import type { ServedModel } from './served-model.js'
import { toolFormat, type ToolFormat } from './tool-calls.js'

export interface Prepared {
  served: ServedModel
  prompt: PromptModel
  /** One per prompt (chat: one); each runs `params.n` choices. */
  prompts: Array<{ ids: number[], text: string }>
  params: SamplingParams
  maxTokens: number
  logprobs: number | null
  promptLogprobs: boolean
  tools: ToolFormat | null
  /** The drafter of a request with `draft_model`. */
  draft?: DraftModel
}

export async function servedModelOrThrow (ctx: AppContext, projectId: string, model: string): Promise<ServedModel> {
  const served = await resolveServedModel(ctx, projectId, model)
  if (!served) throw errors.modelNotFound(model)
  return served
}

/** The request's drafter, when it names one (a 404 or a 400 naming draft_model otherwise). */
export async function draftModelFor (
  ctx: AppContext,
  projectId: string,
  served: ServedModel,
  params: SamplingParams
): Promise<DraftModel | undefined> {
  if (params.draftModel === null) return undefined
  return await resolveDraftModel(ctx, projectId, served, params.draftModel, params.numSpeculativeTokens)
}

export async function prepareChat (
  served: ServedModel,
  body: ChatCompletionRequest,
  params: SamplingParams
): Promise<Prepared> {
  const prompt = await promptModel(served.tokenizerDir, served.weightsDir)
  const messages = templateMessages(prompt, body.messages)
  const wantsTools = body.tools != null && body.tools.length > 0 && body.tool_choice !== 'none'
  if (body.tool_choice != null && !['auto', 'none'].includes(body.tool_choice as string)) {
    throw errors.unsupportedParameter('tool_choice', 'only "auto" and "none": forcing a call needs constrained decoding')
  }
  const format = wantsTools ? toolFormat(prompt.tokenizer) : null
  if (wantsTools && format === null) {
    throw errors.unsupportedParameter('tools', `the chat template of ${served.base.id} has no tool-call format this server ` +
      'can parse back (supported: Hermes <tool_call> templates such as Qwen2.5/Qwen3, and Llama 3.1 JSON calls)')
  }
  const rendered = await chatPrompt(prompt, messages, wantsTools ? checkTools(body.tools) : undefined)
  const logprobs = body.logprobs === true ? body.top_logprobs ?? 0 : null
  return finishPreparing(served, prompt, [rendered], params, logprobs, false, format)
}

export async function prepareCompletion (
  served: ServedModel,
  body: CompletionRequest,
  params: SamplingParams
): Promise<Prepared> {
  const prompt = await promptModel(served.tokenizerDir, served.weightsDir)
  const raw = body.prompt
  const list: Array<string | number[]> = typeof raw === 'string'
    ? [raw]
    : typeof raw[0] === 'number' ? [raw as number[]] : raw as Array<string | number[]>
  const vocab = prompt.tokenizer.vocabSize
  const prompts = await Promise.all(list.map(async (p, i) => {
    if (typeof p === 'string') return { ids: await textPrompt(prompt, p), text: p }
    const bad = p.find(id => id >= vocab)
    if (bad !== undefined) throw errors.unsupportedParameter(list.length > 1 ? `prompt[${i}]` : 'prompt', `token id ${bad} is not below the vocabulary size ${vocab}`)
    return { ids: p, text: await prompt.tokenizer.tokenizer.decode(p, false) }
  }))
  const logprobs = body.logprobs ?? null
  return finishPreparing(served, prompt, prompts, params, logprobs, body.echo === true && logprobs !== null, null)
}

function finishPreparing (
  served: ServedModel,
  prompt: PromptModel,
  prompts: Prepared['prompts'],
  params: SamplingParams,
  logprobs: number | null,
  promptLogprobs: boolean,
  tools: ToolFormat | null
): Prepared {
  const longest = Math.max(...prompts.map(p => p.ids.length))
  const maxTokens = params.maxTokens ?? Math.max(0, served.contextLength - longest)
  if (longest + maxTokens > served.contextLength || (params.maxTokens === null && maxTokens === 0)) {
    throw errors.contextTooLong(longest, maxTokens, served.contextLength)
  }
  return { served, prompt, prompts, params, maxTokens, logprobs, promptLogprobs, tools }
}

/** All choices, index = prompt index · n + i; a seed gives choice i the seed + i, so choices differ. */
export async function runChoices (
  engine: EngineWorker,
  prepared: Prepared,
  signal: AbortSignal,
  listener?: (index: number) => ChoiceListener
): Promise<ChoiceOutput[]> {
  const { params, served } = prepared
  const requests: ChoiceRequest[] = prepared.prompts.flatMap(p => Array.from({ length: params.n }, (_, i) => ({
    model: { weights: served.weightsDir, adapter: served.adapter?.dir ?? null },
    prompt: p.ids,
    max_tokens: prepared.maxTokens,
    temperature: params.temperature,
    top_p: params.topP,
    seed: params.seed === null ? null : params.seed + i,
    presence_penalty: params.presencePenalty,
    frequency_penalty: params.frequencyPenalty,
    stop_ids: prepared.prompt.stopIds,
    logprobs: prepared.logprobs,
    prompt_logprobs: prepared.promptLogprobs,
    ...draftFields(prepared.draft),
    stop: params.stop,
  })))
  // every choice or none: a second failing after the first must not leave the first running
  const inner = new AbortController()
  const abort = () => inner.abort()
  signal.addEventListener('abort', abort, { once: true })
  try {
    return await Promise.all(requests.map(async (r, index) => {
      try {
        return await runChoice(engine, prepared.prompt.tokenizer.tokenizer, r, inner.signal, listener?.(index))
      } catch (err) {
        inner.abort()
        throw err
      }
    }))
  } finally {
    signal.removeEventListener('abort', abort)
  }
}

/** The worker's draft fields: absent without a drafter (the request line stays as it was). */
function draftFields (draft: DraftModel | undefined): Pick<GenerateRequest, 'draft' | 'num_speculative_tokens'> {
  if (!draft) return {}
  const steps = draft.numSpeculativeTokens
  return { draft: draft.dir, ...(steps !== null ? { num_speculative_tokens: steps } : {}) }
}

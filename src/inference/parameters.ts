// What a request asks of the sampler, with OpenAI's defaults, and a 400 naming any parameter we do
// not honour: a silently ignored `logit_bias` or `response_format` would be a wrong answer.
import { errors } from '../errors.js'
import type { ChatCompletionRequest, CompletionRequest } from './inference.schemas.js'

export interface SamplingParams {
  maxTokens: number | null // null: up to the model's context
  temperature: number
  topP: number
  n: number
  seed: number | null
  presencePenalty: number
  frequencyPenalty: number
  stop: string[]
  stream: boolean
  includeUsage: boolean
  /** A spec-draft checkpoint's name (draft-model.ts), and the drafts per step asked for. */
  draftModel: string | null
  numSpeculativeTokens: number | null
}

// Accepted because they change nothing about the output (bookkeeping, routing hints).
const HARMLESS = ['user', 'metadata', 'safety_identifier', 'prompt_cache_key', 'parallel_tool_calls']
const SAMPLING = ['model', 'max_tokens', 'temperature', 'top_p', 'n', 'seed', 'presence_penalty', 'frequency_penalty',
  'stop', 'stream', 'stream_options', 'draft_model', 'num_speculative_tokens']
const CHAT = new Set([...HARMLESS, ...SAMPLING, 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs', 'tools',
  'tool_choice', 'store', 'service_tier', 'response_format', 'logit_bias'])
const COMPLETION = new Set([...HARMLESS, ...SAMPLING, 'prompt', 'echo', 'logprobs', 'best_of', 'suffix', 'logit_bias'])

export function chatSampling (body: ChatCompletionRequest): SamplingParams {
  refuseUnknown(body, CHAT)
  refuseUnless(body, 'store', v => v === false || v === null, 'completions are not stored here')
  refuseUnless(body, 'service_tier', v => v === null || v === 'auto' || v === 'default', 'there is one service tier')
  refuseUnless(body, 'response_format', v => v === null || (isObject(v) && v.type === 'text'),
    'only {"type": "text"}: structured outputs (json_object, json_schema) are not enforced by this engine')
  refuseUnless(body, 'top_logprobs', v => v === null || v === 0 || body.logprobs === true, 'it needs "logprobs": true')
  if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens) {
    throw errors.unsupportedParameter('max_tokens', 'give max_tokens or max_completion_tokens, not two different values')
  }
  return common(body, body.max_completion_tokens ?? body.max_tokens ?? null)
}

export function completionSampling (body: CompletionRequest): SamplingParams {
  refuseUnknown(body, COMPLETION)
  refuseUnless(body, 'best_of', v => v === null || v === 1 || v === (body.n ?? 1), 'best_of must equal n (no server-side ranking)')
  refuseUnless(body, 'suffix', v => v === null || v === '', 'insertion (fill-in-the-middle) is not supported')
  return common(body, body.max_tokens ?? 16) // OpenAI's default for completions
}

function common (body: ChatCompletionRequest | CompletionRequest, maxTokens: number | null): SamplingParams {
  refuseUnless(body, 'logit_bias', v => v === null || (isObject(v) && Object.keys(v).length === 0),
    'logit_bias is not applied by this engine')
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop
  if (stop.some(s => s === '')) throw errors.unsupportedParameter('stop', 'a stop sequence may not be empty')
  const stream = body.stream === true
  if (body.stream_options != null && !stream) throw errors.unsupportedParameter('stream_options', 'it needs "stream": true')
  if (body.num_speculative_tokens != null && body.draft_model == null) {
    throw errors.unsupportedParameter('num_speculative_tokens', 'it needs a draft_model')
  }
  return {
    maxTokens,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    n: body.n ?? 1,
    seed: body.seed ?? null,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    stop,
    stream,
    includeUsage: body.stream_options?.include_usage === true,
    draftModel: body.draft_model ?? null,
    numSpeculativeTokens: body.num_speculative_tokens ?? null,
  }
}

function refuseUnknown (body: object, known: ReadonlySet<string>): void {
  for (const key of Object.keys(body)) {
    if (!known.has(key)) throw errors.unsupportedParameter(key, 'this server does not implement it')
  }
}

function refuseUnless (body: object, key: string, ok: (value: unknown) => boolean, why: string): void {
  const value = (body as Record<string, unknown>)[key]
  if (value !== undefined && !ok(value)) throw errors.unsupportedParameter(key, why)
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

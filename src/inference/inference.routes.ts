// OpenAI inference — POST /v1/chat/completions and /v1/completions, whole or streamed (SSE), on
// base models, fine-tuned models, checkpoints and deployments of the caller's project.
import { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { clientGoneSignal, openEventStream, type EventStream } from '../http/sse.js'
import type { EngineWorker } from './engine-worker.js'
import type { VllmBackend } from './vllm.js'
import type { ChoiceOutput } from './generate.js'
import { ChatCompletionRequest, CompletionRequest } from './inference.schemas.js'
import {
  draftModelFor, prepareChat, prepareCompletion, runChoices, servedModelOrThrow, type Prepared,
} from './inference.service.js'
import { streamChat, streamCompletion } from './streams.js'
import { chatSampling, completionSampling } from './parameters.js'
import { chatCompletion, envelope, idsOf, promptTokens, textCompletion, TokenTexts } from './responses.js'

type Options = { ctx: AppContext, engine: EngineWorker, vllm: VllmBackend | null }

export const inferenceRoutes: FastifyPluginAsyncTypebox<Options> = async (app, { ctx, engine, vllm }) => {
  app.post('/v1/chat/completions', {
    schema: { summary: 'Create a chat completion', body: ChatCompletionRequest },
  }, async (request, reply) => {
    const served = await servedModelOrThrow(ctx, request.projectId, request.body.model)
    // vLLM implements parameters we do not (response_format, logit_bias…): it judges them itself
    if (vllm) {
      refuseDraftOnVllm(request.body)
      return await passThrough(reply, await vllm.forward('/v1/chat/completions', request.body, served, clientGoneSignal(reply)))
    }
    const params = chatSampling(request.body)
    const draft = await draftModelFor(ctx, request.projectId, served, params)
    const prepared = { ...await prepareChat(served, request.body, params), ...(draft ? { draft } : {}) }
    engine.checkCapacity(prepared.prompts.length * params.n)
    const env = envelope('chatcmpl', request.body.model)
    if (params.stream) {
      return await streamed(reply, (events, signal) => streamChat(engine, prepared, env, events, signal))
    }
    const choices = await runWhole(engine, prepared, reply)
    return chatCompletion(env, prepared, choices, await textsFor(prepared, choices))
  })

  app.post('/v1/completions', {
    schema: { summary: 'Create a text completion', body: CompletionRequest },
  }, async (request, reply) => {
    const served = await servedModelOrThrow(ctx, request.projectId, request.body.model)
    // vLLM implements parameters we do not (response_format, logit_bias…): it judges them itself
    if (vllm) {
      refuseDraftOnVllm(request.body)
      return await passThrough(reply, await vllm.forward('/v1/completions', request.body, served, clientGoneSignal(reply)))
    }
    const params = completionSampling(request.body)
    const draft = await draftModelFor(ctx, request.projectId, served, params)
    const prepared = { ...await prepareCompletion(served, request.body, params), ...(draft ? { draft } : {}) }
    engine.checkCapacity(prepared.prompts.length * params.n)
    const env = envelope('cmpl', request.body.model)
    const echo = request.body.echo === true
    if (params.stream) {
      return await streamed(reply, (events, signal) => streamCompletion(engine, prepared, env, echo, events, signal))
    }
    const choices = await runWhole(engine, prepared, reply)
    return textCompletion(env, prepared, choices, await textsFor(prepared, choices, echo), echo)
  })
}

/** vLLM takes a drafter only at launch (--speculative-config), for every request: not per request. */
function refuseDraftOnVllm (body: { draft_model?: string | null, num_speculative_tokens?: number | null }): void {
  for (const key of ['draft_model', 'num_speculative_tokens'] as const) {
    if (body[key] != null) {
      throw errors.unsupportedParameter(key, 'the vLLM backend takes a drafter only when vLLM starts ' +
        '(--speculative-config, docs/spec-draft.md), for every request; it cannot be chosen per request')
    }
  }
}

/** vLLM's answer as it came: status, content type and body bytes (an SSE stream stays one). */
async function passThrough (reply: FastifyReply, upstream: Response): Promise<FastifyReply> {
  void reply.code(upstream.status).type(upstream.headers.get('content-type') ?? 'application/json')
  if (upstream.body === null) return await reply.send('')
  return await reply.send(Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream))
}

/** Everything is checked before the first byte (a bad request still gets its 4xx); after it, errors are events. */
async function streamed (
  reply: FastifyReply,
  run: (events: EventStream, signal: AbortSignal) => Promise<void>
): Promise<FastifyReply> {
  const signal = clientGoneSignal(reply)
  const events = openEventStream(reply)
  await run(events, signal)
  return reply
}

async function runWhole (engine: EngineWorker, prepared: Prepared, reply: FastifyReply): Promise<ChoiceOutput[]> {
  return await runChoices(engine, prepared, clientGoneSignal(reply))
}

async function textsFor (prepared: Prepared, choices: ChoiceOutput[], echo = false): Promise<TokenTexts> {
  const texts = new TokenTexts(prepared.prompt.tokenizer.tokenizer)
  if (prepared.logprobs === null) return texts
  const ids = choices.flatMap((c, i) => {
    const prompt = echo ? promptTokens(prepared.prompts[Math.floor(i / prepared.params.n)]?.ids ?? [], c) : []
    return [...idsOf(c.tokens), ...prompt.flatMap(t => [t.id, ...(t.top ?? []).map(([id]) => id)])]
  })
  await texts.load(ids)
  return texts
}

// OpenAI inference — POST /v1/chat/completions and /v1/completions, whole or streamed (SSE), on
// base models, fine-tuned models, checkpoints and deployments of the caller's project.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import type { AppContext } from '../context.js'
import { clientGoneSignal, openEventStream, type EventStream } from '../http/sse.js'
import type { EngineWorker } from './engine-worker.js'
import type { ChoiceOutput } from './generate.js'
import { ChatCompletionRequest, CompletionRequest } from './inference.schemas.js'
import { prepareChat, prepareCompletion, runChoices, servedModelOrThrow, type Prepared } from './inference.service.js'
import { streamChat, streamCompletion } from './streams.js'
import { chatSampling, completionSampling } from './parameters.js'
import { chatCompletion, envelope, idsOf, promptTokens, textCompletion, TokenTexts } from './responses.js'

type Options = { ctx: AppContext, engine: EngineWorker }

export const inferenceRoutes: FastifyPluginAsyncTypebox<Options> = async (app, { ctx, engine }) => {
  app.post('/v1/chat/completions', {
    schema: { summary: 'Create a chat completion', body: ChatCompletionRequest },
  }, async (request, reply) => {
    const params = chatSampling(request.body)
    const served = await servedModelOrThrow(ctx, request.projectId, request.body.model)
    const prepared = await prepareChat(served, request.body, params)
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
    const params = completionSampling(request.body)
    const served = await servedModelOrThrow(ctx, request.projectId, request.body.model)
    const prepared = await prepareCompletion(served, request.body, params)
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

// Request shapes of POST /v1/chat/completions and /v1/completions (OpenAI's), checked for types here
// (422, FastAPI-shaped like every route); what a well-typed request asks that we do not do is a 400
// naming the parameter (parameters.ts). Responses are built in responses.ts.
import { Type, type Static, type TSchema } from '@sinclair/typebox'

const Nullable = <T extends TSchema>(t: T) => Type.Optional(Type.Union([t, Type.Null()]))
const Stop = Type.Optional(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 }), Type.Null()]))
const StreamOptions = Type.Optional(Type.Union([
  Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: true }),
  Type.Null(),
]))

/** What both endpoints sample with. */
const Sampling = {
  model: Type.String({ minLength: 1 }),
  max_tokens: Nullable(Type.Integer({ minimum: 0 })),
  temperature: Nullable(Type.Number({ minimum: 0, maximum: 2 })),
  top_p: Nullable(Type.Number({ minimum: 0, maximum: 1 })),
  n: Nullable(Type.Integer({ minimum: 1, maximum: 16 })),
  seed: Nullable(Type.Integer()),
  presence_penalty: Nullable(Type.Number({ minimum: -2, maximum: 2 })),
  frequency_penalty: Nullable(Type.Number({ minimum: -2, maximum: 2 })),
  stop: Stop,
  stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  stream_options: StreamOptions,
  user: Type.Optional(Type.String()),
  // speculative decoding on the embedded engine (extra_body; docs/inference.md "Speculative decoding")
  draft_model: Nullable(Type.String({ minLength: 1 })),
  num_speculative_tokens: Nullable(Type.Integer({ minimum: 1, maximum: 10 })),
}

export const ChatCompletionRequest = Type.Object({
  ...Sampling,
  messages: Type.Array(Type.Unknown(), { minItems: 1 }),
  max_completion_tokens: Nullable(Type.Integer({ minimum: 0 })),
  logprobs: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  top_logprobs: Nullable(Type.Integer({ minimum: 0, maximum: 20 })),
  tools: Type.Optional(Type.Union([Type.Array(Type.Unknown()), Type.Null()])),
  tool_choice: Type.Optional(Type.Unknown()),
}, { additionalProperties: true })
export type ChatCompletionRequest = Static<typeof ChatCompletionRequest>

const TokenIds = Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 })
export const CompletionRequest = Type.Object({
  ...Sampling,
  prompt: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 }), TokenIds,
    Type.Array(TokenIds, { minItems: 1 })]),
  echo: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  logprobs: Nullable(Type.Integer({ minimum: 0, maximum: 5 })),
}, { additionalProperties: true })
export type CompletionRequest = Static<typeof CompletionRequest>

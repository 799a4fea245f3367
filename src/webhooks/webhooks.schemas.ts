// Wire shapes of webhook endpoints and their deliveries (/v1/webhooks, opentune's own: OpenAI sets
// webhooks up in its dashboard, not through the API). The events sent are OpenAI's
// (openai-node src/resources/webhooks.ts, FineTuningJob{Succeeded,Failed,Cancelled}WebhookEvent).
import { Type, type Static, type TSchema } from '@sinclair/typebox'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

export const WEBHOOK_EVENT_TYPES = [
  'fine_tuning.job.succeeded',
  'fine_tuning.job.failed',
  'fine_tuning.job.cancelled',
] as const
export type WebhookEventType = typeof WEBHOOK_EVENT_TYPES[number]

/** pending: due at next_attempt_at (or being sent); succeeded: a 2xx came back; failed: retries ran out. */
export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'succeeded', 'failed'] as const
export type WebhookDeliveryStatus = typeof WEBHOOK_DELIVERY_STATUSES[number]

/** The body of every delivery: a thin event, the receiver reads the job itself. */
export interface WebhookEvent {
  id: string
  object: 'event'
  created_at: number
  type: WebhookEventType
  data: { id: string }
}

const EventType = Type.Union(WEBHOOK_EVENT_TYPES.map(t => Type.Literal(t)))

export const WebhookQuery = Type.Object({ ai_project_id: Type.Optional(Nullable(Type.String())) })

export const WebhookCreateBody = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2048 }),
  events: Type.Optional(Type.Array(EventType, { minItems: 1, uniqueItems: true })),
  description: Type.Optional(Nullable(Type.String({ maxLength: 1024 }))),
}, { additionalProperties: false, title: 'WebhookEndpointCreate' })
export type WebhookCreateBody = Static<typeof WebhookCreateBody>

export const EndpointParams = Type.Object({ webhook_id: Type.String() })
export const DeliveryParams = Type.Object({ webhook_id: Type.String(), delivery_id: Type.String() })

const LastDelivery = Nullable(Type.Object({
  at: Type.Integer(),
  status: Type.Union(WEBHOOK_DELIVERY_STATUSES.map(s => Type.Literal(s))),
  status_code: Nullable(Type.Integer()),
  error: Nullable(Type.String()),
}))

const endpointFields = {
  id: Type.String(),
  object: Type.Literal('webhook_endpoint'),
  url: Type.String(),
  events: Type.Array(EventType),
  description: Nullable(Type.String()),
  created_at: Type.Integer(),
  /** The outcome of the latest attempt of any of its deliveries; null before the first. */
  last_delivery: LastDelivery,
}

export const WebhookEndpoint = Type.Object(endpointFields, { title: 'WebhookEndpoint' })
export type WebhookEndpoint = Static<typeof WebhookEndpoint>

/** The create reply: the only one that carries the secret. */
export const WebhookEndpointCreated = Type.Object({ ...endpointFields, secret: Type.String() },
  { title: 'WebhookEndpointCreated' })

export const WebhookEndpointList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(WebhookEndpoint),
  has_more: Type.Boolean(),
})

export const WebhookEndpointDeleted = Type.Object({
  id: Type.String(),
  object: Type.Literal('webhook_endpoint.deleted'),
  deleted: Type.Literal(true),
})

export const WebhookDelivery = Type.Object({
  id: Type.String(),
  object: Type.Literal('webhook_delivery'),
  webhook_id: Type.String(),
  event_id: Type.String(),
  event_type: EventType,
  job_id: Type.String(),
  status: Type.Union(WEBHOOK_DELIVERY_STATUSES.map(s => Type.Literal(s))),
  attempts: Type.Integer(),
  created_at: Type.Integer(),
  last_attempt_at: Nullable(Type.Integer()),
  /** Seconds; null once it succeeded or gave up. */
  next_attempt_at: Nullable(Type.Integer()),
  last_status_code: Nullable(Type.Integer()),
  last_error: Nullable(Type.String()),
  delivered_at: Nullable(Type.Integer()),
}, { title: 'WebhookDelivery' })
export type WebhookDelivery = Static<typeof WebhookDelivery>

export const DeliveryListQuery = Type.Object({
  ai_project_id: Type.Optional(Nullable(Type.String())),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
})

export const WebhookDeliveryList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(WebhookDelivery),
  has_more: Type.Boolean(),
})

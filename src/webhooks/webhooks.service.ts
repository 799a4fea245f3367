// Webhook endpoints and the outbox: what a job's final status writes (in its transaction), the
// endpoint and delivery wire objects, and a replay. The sending is delivery.ts's.
import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Database } from '../db/database.js'
import { errors, fieldError } from '../errors.js'
import { nowSeconds } from '../ids.js'
import type { JobStatus } from '../fine-tuning/jobs.schemas.js'
import { newWebhookSecret } from './signing.js'
import {
  WEBHOOK_EVENT_TYPES, type WebhookCreateBody, type WebhookDelivery, type WebhookEndpoint, type WebhookEvent,
  type WebhookEventType,
} from './webhooks.schemas.js'
import {
  getDelivery, getEndpoint, insertDeliveries, insertEndpoint, listEndpoints, requeueDelivery,
  type DeliveryRow, type EndpointRow,
} from './webhooks.store.js'

const hex32 = () => randomBytes(16).toString('hex')
export const newEndpointId = () => `whep_${hex32()}`
export const newDeliveryId = () => `msg_${hex32()}`
export const newWebhookEventId = () => `evt_${hex32()}`

const EVENT_OF: Partial<Record<JobStatus, WebhookEventType>> = {
  succeeded: 'fine_tuning.job.succeeded',
  failed: 'fine_tuning.job.failed',
  cancelled: 'fine_tuning.job.cancelled',
}

/** Checks the URL a user gave: absolute http(s), no credentials in it (they would be sent in clear logs). */
export function checkWebhookUrl (url: string, loc: Array<string | number> = ['body', 'url']): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw fieldError(loc, 'Input should be a valid URL', 'url_parsing', url)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw fieldError(loc, "URL scheme should be 'http' or 'https'", 'url_scheme', url)
  }
  if (parsed.username || parsed.password) throw fieldError(loc, 'URL should not carry credentials', 'url_type', url)
  return parsed.href
}

/** A new endpoint; its secret is in the returned row and shown only in the create reply. */
export async function createEndpoint (
  db: Kysely<Database>,
  projectId: string,
  body: WebhookCreateBody
): Promise<EndpointRow> {
  return await insertEndpoint(db, {
    id: newEndpointId(),
    project_id: projectId,
    url: checkWebhookUrl(body.url),
    events: body.events ?? [...WEBHOOK_EVENT_TYPES],
    description: body.description ?? null,
    secret: newWebhookSecret(),
    created_at: nowSeconds(),
  })
}

/**
 * The outbox rows of a job that just reached `status`: one per endpoint of its project that wants
 * the event. Called inside the transaction that writes the status, so a committed final status
 * always has its deliveries and a rolled-back one none.
 */
export async function enqueueJobWebhooks (
  trx: Kysely<Database>,
  job: { id: string, project_id: string, finished_at: number | null },
  status: JobStatus
): Promise<void> {
  const type = EVENT_OF[status]
  if (!type) return
  const endpoints = (await listEndpoints(trx, job.project_id)).filter(e => e.events.includes(type))
  if (endpoints.length === 0) return
  const event: WebhookEvent = {
    id: newWebhookEventId(),
    object: 'event',
    created_at: job.finished_at ?? nowSeconds(),
    type,
    data: { id: job.id },
  }
  const payload = JSON.stringify(event)
  const now = Date.now()
  await insertDeliveries(trx, endpoints.map(e => ({
    id: newDeliveryId(),
    endpoint_id: e.id,
    event_id: event.id,
    event_type: type,
    job_id: job.id,
    payload,
    created_at: nowSeconds(),
    status: 'pending' as const,
    next_attempt_at: now,
    retry_from: now,
    locked_by: null,
    locked_until: null,
    last_attempt_at: null,
    last_status_code: null,
    last_error: null,
    delivered_at: null,
  })))
}

/** Re-queues one of the endpoint's deliveries (any status): sent again at once, same webhook-id. */
export async function replayDelivery (
  db: Kysely<Database>,
  projectId: string,
  endpointId: string,
  deliveryId: string
): Promise<DeliveryRow> {
  if (!await getEndpoint(db, projectId, endpointId)) throw errors.webhookNotFound(endpointId)
  if (!await getDelivery(db, endpointId, deliveryId)) throw errors.webhookDeliveryNotFound(deliveryId)
  const row = await requeueDelivery(db, endpointId, deliveryId)
  if (!row) throw errors.webhookDeliveryNotFound(deliveryId) // the endpoint was removed meanwhile
  return row
}

export function endpointRowToApi (row: EndpointRow): WebhookEndpoint {
  return {
    id: row.id,
    object: 'webhook_endpoint',
    url: row.url,
    events: row.events,
    description: row.description,
    created_at: row.created_at,
    last_delivery: row.last_delivery_at !== null && row.last_delivery_status !== null
      ? {
          at: row.last_delivery_at,
          status: row.last_delivery_status,
          status_code: row.last_status_code,
          error: row.last_error,
        }
      : null,
  }
}

export function deliveryRowToApi (row: DeliveryRow): WebhookDelivery {
  return {
    id: row.id,
    object: 'webhook_delivery',
    webhook_id: row.endpoint_id,
    event_id: row.event_id,
    event_type: row.event_type,
    job_id: row.job_id,
    status: row.status,
    attempts: row.attempts,
    created_at: row.created_at,
    last_attempt_at: row.last_attempt_at,
    next_attempt_at: row.status === 'pending' && row.next_attempt_at !== null
      ? Math.ceil(row.next_attempt_at / 1000)
      : null,
    last_status_code: row.last_status_code,
    last_error: row.last_error,
    delivered_at: row.delivered_at,
  }
}

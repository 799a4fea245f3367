// SQL for webhook endpoints and the delivery outbox. Endpoint reads are scoped by project: another
// project's endpoint is simply not found. Claiming due deliveries is the one dialect-specific query.
import type { Insertable, Kysely, Selectable } from 'kysely'
import type { Dialect } from '../db/connect.js'
import type { Database, WebhookDeliveryTable, WebhookEndpointTable } from '../db/database.js'
import type { WebhookEventType } from './webhooks.schemas.js'

export type EndpointRow = Omit<Selectable<WebhookEndpointTable>, 'events'> & { events: WebhookEventType[] }
export type DeliveryRow = Selectable<WebhookDeliveryTable>
export type NewEndpoint = Omit<EndpointRow, 'seq' | 'last_delivery_at' | 'last_delivery_status' | 'last_status_code'
  | 'last_error'>
export type NewDelivery = Omit<Insertable<WebhookDeliveryTable>, 'seq'>

const decodeEndpoint = (row: Selectable<WebhookEndpointTable>): EndpointRow =>
  ({ ...row, events: JSON.parse(row.events) as WebhookEventType[] })

export async function projectIdByName (db: Kysely<Database>, name: string): Promise<string | undefined> {
  return (await db.selectFrom('projects').select('id').where('name', '=', name).executeTakeFirst())?.id
}

export async function insertEndpoint (db: Kysely<Database>, row: NewEndpoint): Promise<EndpointRow> {
  const saved = await db.insertInto('webhook_endpoints').values({ ...row, events: JSON.stringify(row.events) })
    .returningAll().executeTakeFirstOrThrow()
  return decodeEndpoint(saved)
}

/** The project's endpoints, oldest first. */
export async function listEndpoints (db: Kysely<Database>, projectId: string): Promise<EndpointRow[]> {
  const rows = await db.selectFrom('webhook_endpoints').selectAll().where('project_id', '=', projectId)
    .orderBy('seq').execute()
  return rows.map(decodeEndpoint)
}

export async function getEndpoint (
  db: Kysely<Database>,
  projectId: string,
  id: string
): Promise<EndpointRow | undefined> {
  const row = await db.selectFrom('webhook_endpoints').selectAll()
    .where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
  return row && decodeEndpoint(row)
}

export async function endpointsByIds (db: Kysely<Database>, ids: string[]): Promise<Map<string, EndpointRow>> {
  if (ids.length === 0) return new Map()
  const rows = await db.selectFrom('webhook_endpoints').selectAll().where('id', 'in', ids).execute()
  return new Map(rows.map(r => [r.id, decodeEndpoint(r)]))
}

/** Removes the endpoint and its deliveries (those still pending are never sent); false if not the project's. */
export async function deleteEndpoint (db: Kysely<Database>, projectId: string, id: string): Promise<boolean> {
  return await db.transaction().execute(async (trx) => {
    if (!await getEndpoint(trx, projectId, id)) return false
    await trx.deleteFrom('webhook_deliveries').where('endpoint_id', '=', id).execute()
    await trx.deleteFrom('webhook_endpoints').where('id', '=', id).execute()
    return true
  })
}

export async function insertDeliveries (db: Kysely<Database>, rows: NewDelivery[]): Promise<void> {
  if (rows.length > 0) await db.insertInto('webhook_deliveries').values(rows).execute()
}

/** The endpoint's latest deliveries, newest first (limit + 1 read, to answer has_more). */
export async function listDeliveries (db: Kysely<Database>, endpointId: string, limit: number): Promise<DeliveryRow[]> {
  return await db.selectFrom('webhook_deliveries').selectAll().where('endpoint_id', '=', endpointId)
    .orderBy('seq', 'desc').limit(limit + 1).execute()
}

export async function getDelivery (
  db: Kysely<Database>,
  endpointId: string,
  id: string
): Promise<DeliveryRow | undefined> {
  return await db.selectFrom('webhook_deliveries').selectAll()
    .where('id', '=', id).where('endpoint_id', '=', endpointId).executeTakeFirst()
}

/**
 * Claims up to `limit` due deliveries for `workerId` until now + leaseMs, counting the attempt. On
 * PostgreSQL, FOR UPDATE SKIP LOCKED keeps two service processes from claiming one row; SQLite has
 * one writer and the single UPDATE is atomic. A worker that dies mid-send leaves its lease to run out:
 * the row is claimed again then (at-least-once: the receiver may see that webhook-id twice).
 */
export async function claimDueDeliveries (
  db: Kysely<Database>,
  dialect: Dialect,
  workerId: string,
  leaseMs: number,
  limit: number
): Promise<DeliveryRow[]> {
  const now = Date.now()
  let due = db.selectFrom('webhook_deliveries').select('id')
    .where('status', '=', 'pending').where('next_attempt_at', '<=', now)
    .where(eb => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<', now)]))
    .orderBy('next_attempt_at').limit(limit)
  if (dialect === 'postgres') due = due.forUpdate().skipLocked()
  return await db.updateTable('webhook_deliveries')
    .set(eb => ({
      locked_by: workerId,
      locked_until: now + leaseMs,
      attempts: eb('attempts', '+', 1),
      last_attempt_at: Math.floor(now / 1000),
    }))
    .where('id', 'in', due)
    .returningAll()
    .execute()
}

export interface AttemptOutcome {
  statusCode: number | null
  error: string | null
  /** succeeded: a 2xx; pending: retried at nextAttemptAt; failed: given up */
  status: DeliveryRow['status']
  nextAttemptAt: number | null
}

/** Stores an attempt's outcome on the delivery (only while this worker still holds it) and its endpoint. */
export async function recordAttempt (
  db: Kysely<Database>,
  delivery: DeliveryRow,
  workerId: string,
  outcome: AttemptOutcome
): Promise<void> {
  const at = delivery.last_attempt_at ?? Math.floor(Date.now() / 1000)
  await db.transaction().execute(async (trx) => {
    const r = await trx.updateTable('webhook_deliveries')
      .set({
        status: outcome.status,
        next_attempt_at: outcome.nextAttemptAt,
        locked_by: null,
        locked_until: null,
        last_status_code: outcome.statusCode,
        last_error: outcome.error,
        delivered_at: outcome.status === 'succeeded' ? Math.floor(Date.now() / 1000) : null,
      })
      .where('id', '=', delivery.id).where('locked_by', '=', workerId)
      .executeTakeFirst()
    if (Number(r.numUpdatedRows) === 0) return // replayed or taken over meanwhile: theirs to record
    await trx.updateTable('webhook_endpoints')
      .set({
        last_delivery_at: at,
        // the endpoint tells how its receiver answered last: a failure to be retried is a failure there
        last_delivery_status: outcome.status === 'succeeded' ? 'succeeded' : 'failed',
        last_status_code: outcome.statusCode,
        last_error: outcome.error,
      })
      .where('id', '=', delivery.endpoint_id)
      .execute()
  })
}

/** Lets go of a claimed delivery without an outcome (the attempt was cut short): due again, not counted. */
export async function releaseDelivery (db: Kysely<Database>, delivery: DeliveryRow, workerId: string): Promise<void> {
  await db.updateTable('webhook_deliveries')
    .set(eb => ({ locked_by: null, locked_until: null, attempts: eb('attempts', '-', 1) }))
    .where('id', '=', delivery.id).where('locked_by', '=', workerId)
    .execute()
}

/** Due at once again, with a new retry window and attempts counted from 0. */
export async function requeueDelivery (
  db: Kysely<Database>,
  endpointId: string,
  id: string
): Promise<DeliveryRow | undefined> {
  const now = Date.now()
  return await db.updateTable('webhook_deliveries')
    .set({
      status: 'pending',
      attempts: 0,
      next_attempt_at: now,
      retry_from: now,
      locked_by: null,
      locked_until: null,
      delivered_at: null,
    })
    .where('id', '=', id).where('endpoint_id', '=', endpointId)
    .returningAll().executeTakeFirst()
}

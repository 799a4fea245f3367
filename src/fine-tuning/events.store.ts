// Job events: append-only, listed oldest first; `after` = the last id seen, so polling is a tail.
// Every append tells streams (event-stream.ts) that the job has news: on PostgreSQL a NOTIFY in the
// writer's transaction (delivered to every process at commit), on SQLite this process's emitter.
import { EventEmitter } from 'node:events'
import { PostgresAdapter, sql, type Kysely, type Selectable } from 'kysely'
import type { Database, EventTable } from '../db/database.js'
import { pageOfJob, type Page, type PageRequest } from '../db/paging.js'
import { newEventId, nowSeconds } from '../ids.js'
import type { EventLevel, EventType, FineTuningJobEvent } from './jobs.schemas.js'

export type EventRow = Omit<Selectable<EventTable>, 'data'> & { data: unknown }

export interface NewEvent {
  level?: EventLevel
  message: string
  type?: EventType
  data?: unknown
}

const decodeEvent = (row: Selectable<EventTable>): EventRow => ({
  ...row,
  data: row.data === null ? null : JSON.parse(row.data),
})

/** NOTIFY channel on PostgreSQL; the payload is the job id. */
export const EVENTS_CHANNEL = 'opentune_job_events'

/** This process's appends on SQLite, by job id ('appended'). Listeners must not throw. */
export const localAppends = new EventEmitter().setMaxListeners(0)

export async function appendEvent (db: Kysely<Database>, jobId: string, e: NewEvent): Promise<EventRow> {
  const row = await insertEvent(db, jobId, e)
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`SELECT pg_notify(${EVENTS_CHANNEL}, ${jobId})`.execute(db)
  } else {
    localAppends.emit('appended', jobId) // in a transaction, the reader it wakes queues behind it (one connection)
  }
  return row
}

async function insertEvent (db: Kysely<Database>, jobId: string, e: NewEvent): Promise<EventRow> {
  return decodeEvent(await db.insertInto('job_events').values({
    id: newEventId(),
    job_id: jobId,
    created_at: nowSeconds(),
    level: e.level ?? 'info',
    message: e.message,
    type: e.type ?? 'message',
    data: e.data === undefined ? null : JSON.stringify(e.data),
  }).returningAll().executeTakeFirstOrThrow())
}

export async function listEvents (db: Kysely<Database>, jobId: string, req: Omit<PageRequest, 'order'>): Promise<Page<EventRow>> {
  const page = await pageOfJob(db, 'job_events', jobId, req)
  return { ...page, data: page.data.map(decodeEvent) }
}

export function eventRowToApi (row: EventRow): FineTuningJobEvent {
  return {
    id: row.id,
    object: 'fine_tuning.job.event',
    created_at: row.created_at,
    level: row.level,
    message: row.message,
    type: row.type,
    data: row.data,
  }
}

/** The job's events after `seq` (exclusive), oldest first, at most `limit`. */
export async function eventsAfterSeq (
  db: Kysely<Database>, jobId: string, seq: number, limit: number
): Promise<EventRow[]> {
  const rows = await db.selectFrom('job_events').selectAll().where('job_id', '=', jobId).where('seq', '>', seq)
    .orderBy('seq', 'asc').limit(limit).execute()
  return rows.map(decodeEvent)
}

/** The seq of one of the job's events, or undefined when the job has no such event. */
export async function eventSeq (db: Kysely<Database>, jobId: string, id: string): Promise<number | undefined> {
  const row = await db.selectFrom('job_events').select('seq').where('id', '=', id).where('job_id', '=', jobId)
    .executeTakeFirst()
  return row?.seq
}

/** The seq of the job's latest event (0 when it has none). */
export async function lastEventSeq (db: Kysely<Database>, jobId: string): Promise<number> {
  const row = await db.selectFrom('job_events').select(eb => eb.fn.max('seq').as('seq')).where('job_id', '=', jobId).executeTakeFirst()
  return Number(row?.seq ?? 0)
}

// Job events: append-only, listed oldest first; `after` = the last id seen, so polling is a tail.
import type { Kysely, Selectable } from 'kysely'
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

export async function appendEvent (db: Kysely<Database>, jobId: string, e: NewEvent): Promise<EventRow> {
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

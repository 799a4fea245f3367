// Job events: append-only, listed oldest first; `after` = the last id seen, so polling is a tail.
import type { Kysely } from 'kysely'
import type { Database, EventRow } from '../db/database.js'
import { pageOfJob, type Page } from '../db/paging.js'
import { newEventId, nowSeconds } from '../ids.js'
import type { FineTuningJobEvent } from './jobs.schemas.js'

export interface NewEvent {
  level?: 'info' | 'warn' | 'error'
  message: string
  type?: 'message' | 'metrics'
  data?: unknown
}

export async function appendEvent (db: Kysely<Database>, jobId: string, e: NewEvent): Promise<EventRow> {
  return await db.insertInto('job_events').values({
    id: newEventId(),
    job_id: jobId,
    created_at: nowSeconds(),
    level: e.level ?? 'info',
    message: e.message,
    type: e.type ?? 'message',
    data: e.data === undefined ? null : JSON.stringify(e.data),
  }).returningAll().executeTakeFirstOrThrow()
}

export async function listEvents (db: Kysely<Database>, jobId: string, req: { limit: number, after?: string | undefined }): Promise<Page<EventRow>> {
  return await pageOfJob(db, 'job_events', jobId, req)
}

export function eventRowToApi (row: EventRow): FineTuningJobEvent {
  return {
    id: row.id,
    object: 'fine_tuning.job.event',
    created_at: row.created_at,
    level: row.level as FineTuningJobEvent['level'],
    message: row.message,
    type: row.type as FineTuningJobEvent['type'],
    data: row.data === null ? null : JSON.parse(row.data),
  }
}

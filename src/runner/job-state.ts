// Job transitions the runner makes, each a compare-and-set on the status (jobs.service's
// JOB_TRANSITIONS), with the event the user reads. A job cancelled meanwhile is never overwritten.
import type { Kysely, Updateable } from 'kysely'
import type { Database, JobTable } from '../db/database.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import { statusesThatMayBecome } from '../fine-tuning/jobs.service.js'
import type { JobStatus } from '../fine-tuning/jobs.schemas.js'
import { updateJobIf } from '../fine-tuning/jobs.store.js'
import { nowSeconds } from '../ids.js'

export interface JobError { code: string, message: string, param: string | null }

export async function moveJob (db: Kysely<Database>, jobId: string, to: JobStatus, set: Updateable<JobTable> = {}, event?: { message: string, level?: 'info' | 'warn' | 'error' }): Promise<boolean> {
  return await db.transaction().execute(async (trx) => {
    const row = await updateJobIf(trx, jobId, statusesThatMayBecome(to), { ...set, status: to })
    if (row && event) await appendEvent(trx, jobId, event)
    return row !== undefined
  })
}

export async function failJob (db: Kysely<Database>, jobId: string, error: JobError): Promise<boolean> {
  const message = error.message.length > 4000 ? `${error.message.slice(0, 4000)}…` : error.message
  return await moveJob(db, jobId, 'failed', {
    error: JSON.stringify({ ...error, message }),
    finished_at: nowSeconds(),
    estimated_finish: null,
    locked_by: null,
    locked_until: null,
  }, { level: 'error', message: `Fine-tuning job failed: ${message}` })
}

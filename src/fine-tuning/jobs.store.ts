// SQL for fine-tuning jobs. Reads are scoped by project; another project's job is not found.
// JSON columns are encoded and decoded here only: callers see and give plain values.
import type { ExpressionBuilder, Insertable, Kysely, Selectable, Updateable } from 'kysely'
import type { Database, JobTable } from '../db/database.js'
import { toPage, unknownAfter, type Page, type PageRequest } from '../db/paging.js'
import type { HubCheckpoint } from '../hub/hub-checkpoint.js'
import type { JobHyperparameters, StoredMethod } from './job-method.js'
import type { Integration } from './integrations.js'
import { TERMINAL_STATUSES, UNFINISHED_STATUSES, type JobError, type JobStatus } from './jobs.schemas.js'

interface JobJson {
  hyperparameters: JobHyperparameters // fully resolved, the method's (job-method.ts)
  method: StoredMethod | null // its type; null on rows from before it was stored: supervised
  integrations: Integration[] | null // as requested, secrets included; never sent back
  tags: string[] | null
  extra_body: Record<string, unknown> | null
  extra_fields: Record<string, unknown> | null // unknown top-level request keys, echoed back
  error: JobError | null
  result_files: string[]
  from_checkpoint: HubCheckpoint | null // type hf; the token only sealed, and only until downloaded
}
type JsonColumn = keyof JobJson
const JSON_COLUMNS = ['hyperparameters', 'method', 'integrations', 'tags', 'extra_body', 'extra_fields', 'error', 'result_files',
  'from_checkpoint'] as const satisfies readonly JsonColumn[]

export type JobRow = Omit<Selectable<JobTable>, JsonColumn> & JobJson
export type NewJob = Omit<Insertable<JobTable>, JsonColumn> & JobJson
export type JobChanges = Omit<Updateable<JobTable>, JsonColumn | 'id' | 'seq'> & Partial<JobJson>

const parsed = <T>(text: string | null): T | null => (text === null ? null : JSON.parse(text) as T)

/** A stored row as callers see it (the queue's claim returns rows too). */
export function decodeJob (row: Selectable<JobTable>): JobRow {
  return {
    ...row,
    hyperparameters: JSON.parse(row.hyperparameters) as JobHyperparameters,
    method: parsed(row.method),
    integrations: parsed(row.integrations),
    tags: parsed(row.tags),
    extra_body: parsed(row.extra_body),
    extra_fields: parsed(row.extra_fields),
    error: parsed(row.error),
    result_files: JSON.parse(row.result_files) as string[],
    from_checkpoint: parsed(row.from_checkpoint),
  }
}

// A JSON column as stored: text, or null where the value may be null.
type Stored<T> = { [K in keyof T]?: K extends JsonColumn ? (null extends JobJson[K] ? string | null : string) : T[K] }

function encode<T extends Partial<JobJson>> (values: T): Stored<T> {
  const out: Record<string, unknown> = { ...values }
  for (const k of JSON_COLUMNS) {
    const v = values[k]
    if (v !== undefined) out[k] = v === null ? null : JSON.stringify(v)
  }
  return out as Stored<T> // each JSON column present is now its text
}

export async function insertJob (db: Kysely<Database>, row: NewJob): Promise<JobRow> {
  const stored = encode(row) as Insertable<JobTable>
  return decodeJob(await db.insertInto('fine_tuning_jobs').values(stored).returningAll().executeTakeFirstOrThrow())
}

export async function getJob (db: Kysely<Database>, projectId: string, id: string): Promise<JobRow | undefined> {
  const row = await db.selectFrom('fine_tuning_jobs').selectAll().where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
  return row && decodeJob(row)
}

/** For the runner, which works across projects. */
export async function getJobById (db: Kysely<Database>, id: string): Promise<JobRow | undefined> {
  const row = await db.selectFrom('fine_tuning_jobs').selectAll().where('id', '=', id).executeTakeFirst()
  return row && decodeJob(row)
}

export async function listJobs (db: Kysely<Database>, projectId: string, req: PageRequest): Promise<Page<JobRow>> {
  let q = db.selectFrom('fine_tuning_jobs').selectAll().where('project_id', '=', projectId)
  if (req.after !== undefined) {
    const after = await getJob(db, projectId, req.after)
    if (!after) throw unknownAfter(req.after)
    q = q.where('seq', req.order === 'desc' ? '<' : '>', after.seq)
  }
  const rows = await q.orderBy('seq', req.order).limit(req.limit + 1).execute()
  return toPage(rows.map(decodeJob), req.limit)
}

/**
 * Updates a job only while its status is one of `from` (compare-and-set), so a cancel and a
 * runner's transition cannot overwrite each other. Returns the updated row, or undefined.
 */
export async function updateJobIf (
  db: Kysely<Database>,
  id: string,
  from: readonly JobStatus[],
  set: JobChanges
): Promise<JobRow | undefined> {
  const row = await db.updateTable('fine_tuning_jobs').set(encode(set)).where('id', '=', id).where('status', 'in', from)
    .returningAll().executeTakeFirst()
  return row && decodeJob(row)
}

export async function updateJob (db: Kysely<Database>, id: string, set: JobChanges): Promise<void> {
  await db.updateTable('fine_tuning_jobs').set(encode(set)).where('id', '=', id).execute()
}

/** The id of an unfinished job that reads this file, if any (such a file cannot be deleted). */
export async function unfinishedJobUsing (
  db: Kysely<Database>,
  projectId: string,
  fileId: string
): Promise<string | undefined> {
  const row = await db.selectFrom('fine_tuning_jobs').select('id')
    .where('project_id', '=', projectId)
    .where('status', 'in', UNFINISHED_STATUSES)
    .where(eb => eb.or([eb('training_file', '=', fileId), eb('validation_file', '=', fileId)]))
    .executeTakeFirst()
  return row?.id
}

/** A Slurm attempt named on a job row (executor_attempt, executor_job_id: migration 0007_executor). */
export interface StoredAttempt { id: string, executor_attempt: string | null, executor_job_id: string | null }

/**
 * Finished jobs that still name a Slurm attempt while no live lease holds them: no runner follows
 * that attempt (it was cancelled with every runner down, or its runner died as it ended).
 */
export async function unfollowedAttempts (db: Kysely<Database>, nowMs: number): Promise<StoredAttempt[]> {
  return await db.selectFrom('fine_tuning_jobs').select(['id', 'executor_attempt', 'executor_job_id'])
    .where('status', 'in', TERMINAL_STATUSES)
    .where(eb => eb.or([eb('executor_attempt', 'is not', null), eb('executor_job_id', 'is not', null)]))
    .where(eb => eb.or([eb('locked_by', 'is', null), eb('locked_until', '<', nowMs)]))
    .orderBy('id').limit(500)
    .execute()
}

/** Forgets a finished job's attempt (its Slurm job has ended), unless the row names another one now. */
export async function clearAttempt (db: Kysely<Database>, a: StoredAttempt): Promise<void> {
  const same = (column: 'executor_attempt' | 'executor_job_id', v: string | null) =>
    (eb: ExpressionBuilder<Database, 'fine_tuning_jobs'>) => v === null ? eb(column, 'is', null) : eb(column, '=', v)
  await db.updateTable('fine_tuning_jobs').set({ executor_attempt: null, executor_job_id: null, protocol_offset: 0 })
    .where('id', '=', a.id).where('status', 'in', TERMINAL_STATUSES)
    .where(same('executor_attempt', a.executor_attempt)).where(same('executor_job_id', a.executor_job_id))
    .execute()
}

/**
 * Those of `ids` whose job has finished and is held by no live lease (its runner is done with it),
 * nor names a Slurm attempt that may still write into its folder (cleared once that has ended).
 */
export async function finishedJobIds (db: Kysely<Database>, ids: readonly string[], nowMs: number): Promise<string[]> {
  const finished: string[] = []
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom('fine_tuning_jobs').select('id')
      .where('id', 'in', ids.slice(i, i + 500))
      .where('status', 'in', TERMINAL_STATUSES)
      .where(eb => eb.or([eb('locked_by', 'is', null), eb('locked_until', '<', nowMs)]))
      .where('executor_attempt', 'is', null).where('executor_job_id', 'is', null)
      .execute()
    finished.push(...rows.map(r => r.id))
  }
  return finished
}

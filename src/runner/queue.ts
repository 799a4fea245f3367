// The only dialect-specific SQL: claiming a job. On PostgreSQL, FOR UPDATE SKIP LOCKED lets many
// runners claim side by side without blocking or double-claiming; SQLite has one writer, and a
// single UPDATE … WHERE id = (SELECT …) is atomic there.
import { sql, type Kysely } from 'kysely'
import type { Dialect } from '../db/connect.js'
import type { Database } from '../db/database.js'
import type { JobStatus } from '../fine-tuning/jobs.schemas.js'
import { decodeJob, type JobRow } from '../fine-tuning/jobs.store.js'

export type ClaimKind = 'validate' | 'train'

/**
 * Claims the oldest job a runner may take: `validate` → a job in validating_files; `train` → a
 * queued job, or a running one whose runner stopped heartbeating (it is resumed from saved state).
 * `busy`: the jobs this runner works on now; one whose lease ran out while its heartbeat was late
 * is still ours to finish, not a job to start a second time in the same folder.
 */
export async function claimJob (
  db: Kysely<Database>,
  dialect: Dialect,
  kind: ClaimKind,
  runnerId: string,
  leaseMs: number,
  busy: readonly string[] = []
): Promise<JobRow | undefined> {
  const now = Date.now()
  const statuses: JobStatus[] = kind === 'validate' ? ['validating_files'] : ['queued', 'running']
  let pick = db.selectFrom('fine_tuning_jobs').select('id')
    .where('status', 'in', statuses)
    .where(eb => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<', now)]))
    .$if(busy.length > 0, q => q.where('id', 'not in', busy))
    .orderBy('seq').limit(1)
  if (dialect === 'postgres') pick = pick.forUpdate().skipLocked()
  const row = await db.updateTable('fine_tuning_jobs')
    .set({ locked_by: runnerId, locked_until: now + leaseMs, ...(kind === 'train' ? { attempts: sql`attempts + 1` } : {}) })
    .where('id', '=', pick)
    .returningAll()
    .executeTakeFirst()
  return row && decodeJob(row)
}

/** Extends the lease; false when another runner took the job (our lease had run out). */
export async function heartbeat (
  db: Kysely<Database>,
  jobId: string,
  runnerId: string,
  leaseMs: number
): Promise<boolean> {
  const r = await db.updateTable('fine_tuning_jobs').set({ locked_until: Date.now() + leaseMs })
    .where('id', '=', jobId).where('locked_by', '=', runnerId).executeTakeFirst()
  return Number(r.numUpdatedRows) > 0
}

export async function releaseJob (db: Kysely<Database>, jobId: string, runnerId: string): Promise<void> {
  await db.updateTable('fine_tuning_jobs').set({ locked_by: null, locked_until: null })
    .where('id', '=', jobId).where('locked_by', '=', runnerId).execute()
}

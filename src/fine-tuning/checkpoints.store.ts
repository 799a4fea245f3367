// Checkpoints: one per epoch, listed oldest first (ascending step_number, i.e. insertion order).
import type { Kysely } from 'kysely'
import type { CheckpointRow, Database } from '../db/database.js'
import { pageOfJob, type Page } from '../db/paging.js'
import { prepared } from '../db/prepared.js'
import { newCheckpointId, nowSeconds } from '../ids.js'
import type { FineTuningJobCheckpoint, Metrics } from './jobs.schemas.js'

export const METRIC_KEYS = ['step', 'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy'] as const

export interface NewCheckpoint {
  id?: string
  jobId: string
  stepNumber: number
  fineTunedModelCheckpoint: string
  metrics: Partial<Metrics>
  resultFiles: string[]
}

/** All seven metric keys are always present; what does not apply is null (DESIGN §1). */
export function completeMetrics (m: Partial<Metrics>): Metrics {
  const out: Record<string, number | null> = {}
  for (const k of METRIC_KEYS) out[k] = typeof m[k] === 'number' && Number.isFinite(m[k]) ? m[k] : null
  return out as Metrics
}

export async function insertCheckpoint (db: Kysely<Database>, c: NewCheckpoint): Promise<CheckpointRow> {
  return await db.insertInto('checkpoints').values({
    id: c.id ?? newCheckpointId(),
    job_id: c.jobId,
    created_at: nowSeconds(),
    step_number: c.stepNumber,
    fine_tuned_model_checkpoint: c.fineTunedModelCheckpoint,
    metrics: JSON.stringify(completeMetrics(c.metrics)),
    result_files: JSON.stringify(c.resultFiles),
  }).returningAll().executeTakeFirstOrThrow()
}

export async function listCheckpoints (db: Kysely<Database>, jobId: string, req: { limit: number, after?: string | undefined }): Promise<Page<CheckpointRow>> {
  return await pageOfJob(db, 'checkpoints', jobId, req)
}

const checkpointOfProject = prepared((db: Kysely<Database>, arg: (name: 'id' | 'jobId' | 'projectId') => string) =>
  db.selectFrom('checkpoints')
    .innerJoin('fine_tuning_jobs', 'fine_tuning_jobs.id', 'checkpoints.job_id')
    .selectAll('checkpoints')
    .where('checkpoints.id', '=', arg('id'))
    .where('checkpoints.job_id', '=', arg('jobId'))
    .where('fine_tuning_jobs.project_id', '=', arg('projectId')))

/** The checkpoint, only if it belongs to that job of that project: one prepared query on the hot path. */
export async function getCheckpoint (db: Kysely<Database>, projectId: string, jobId: string, id: string): Promise<CheckpointRow | undefined> {
  return (await checkpointOfProject(db, { id, jobId, projectId }))[0]
}

export function checkpointRowToApi (row: CheckpointRow): FineTuningJobCheckpoint {
  return {
    id: row.id,
    object: 'fine_tuning.job.checkpoint',
    created_at: row.created_at,
    fine_tuned_model_checkpoint: row.fine_tuned_model_checkpoint,
    fine_tuning_job_id: row.job_id,
    metrics: JSON.parse(row.metrics) as Metrics,
    step_number: row.step_number,
    result_files: JSON.parse(row.result_files) as string[],
  }
}

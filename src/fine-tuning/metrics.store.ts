// Every optimizer step's metrics of a job (GET /v1/fine_tuning/jobs/{id}/metrics), one row per
// (job, step), written by the runner as the trainer reports each step. A trainer resumed from step N
// trains the steps after N again: those rows are dropped when it starts (dropMetricsAfter, as the
// runner's metrics log is truncated) and each step's latest report is the one kept (upsert).
import type { Kysely, Selectable } from 'kysely'
import type { Database, JobMetricsTable } from '../db/database.js'

/** `extra`: the step's metrics beyond the fixed columns (a drafter's acceptance rates), by name. */
export type MetricsRow = Omit<Selectable<JobMetricsTable>, 'job_id' | 'extra'> & { extra: Record<string, number> }

export type StepMetrics = Omit<MetricsRow, 'extra'> & { extra?: Record<string, number> }

const finite = (v: number | null | undefined): number | null =>
  typeof v === 'number' && Number.isFinite(v) ? v : null

/** One step's metrics; a step reported again replaces the earlier report. */
export async function recordStepMetrics (db: Kysely<Database>, jobId: string, m: StepMetrics): Promise<void> {
  const values = {
    epoch: finite(m.epoch),
    train_loss: finite(m.train_loss),
    train_mean_token_accuracy: finite(m.train_mean_token_accuracy),
    learning_rate: finite(m.learning_rate),
    grad_norm: finite(m.grad_norm),
    tokens: finite(m.tokens),
    step_time_s: finite(m.step_time_s),
    extra: m.extra && Object.keys(m.extra).length > 0 ? JSON.stringify(m.extra) : null,
  }
  await db.insertInto('job_metrics').values({ job_id: jobId, step: m.step, ...values })
    .onConflict(oc => oc.columns(['job_id', 'step']).doUpdateSet(values))
    .execute()
}

/** A trainer resumed from `step`: what was stored beyond it is about to be reported again. */
export async function dropMetricsAfter (db: Kysely<Database>, jobId: string, step: number): Promise<void> {
  await db.deleteFrom('job_metrics').where('job_id', '=', jobId).where('step', '>', step).execute()
}

/** The job's steps after `afterStep` (exclusive), ascending; at most `limit` when given. */
export async function listStepMetrics (
  db: Kysely<Database>,
  jobId: string,
  req: { afterStep?: number | undefined, limit?: number | undefined }
): Promise<MetricsRow[]> {
  let q = db.selectFrom('job_metrics')
    .select(['step', 'epoch', 'train_loss', 'train_mean_token_accuracy', 'learning_rate', 'grad_norm', 'tokens', 'step_time_s',
      'extra'])
    .where('job_id', '=', jobId)
  if (req.afterStep !== undefined) q = q.where('step', '>', req.afterStep)
  q = q.orderBy('step', 'asc')
  if (req.limit !== undefined) q = q.limit(req.limit)
  const rows = await q.execute()
  return rows.map(r => ({ ...r, extra: r.extra === null ? {} : JSON.parse(r.extra) as Record<string, number> }))
}

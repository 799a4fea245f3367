// Turning trainer output into what users read: checkpoint rows whose result files are in the
// Files API (purpose fine-tune-results, filename <checkpoint_id>/<file>), and the job's metrics CSV.
import { link, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { AppContext } from '../context.js'
import { insertResultFile } from '../files/files.store.js'
import { checkpointMetrics, hasCheckpointAtStep, insertCheckpoint } from '../fine-tuning/checkpoints.store.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import { checkpointModelName } from '../fine-tuning/jobs.service.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
import { newCheckpointId, newFileId } from '../ids.js'
import { extraStepMetrics, type TrainerLine } from './protocol.js'

type CheckpointLine = Extract<TrainerLine, { type: 'checkpoint' }>
type MetricsLine = Extract<TrainerLine, { type: 'metrics' }>

/** Registers a checkpoint once: a resumed trainer that writes the same step again is ignored. */
export async function registerCheckpoint (
  ctx: AppContext,
  job: JobRow,
  projectName: string,
  line: CheckpointLine
): Promise<boolean> {
  if (await hasCheckpointAtStep(ctx.db, job.id, line.step)) return false
  const checkpointId = newCheckpointId()
  const files: Array<{ id: string, name: string, bytes: number }> = []
  for (const name of line.files) {
    const id = newFileId()
    files.push({ id, name, bytes: await importBlob(ctx, join(line.dir, name), id) })
  }
  const modelName = checkpointModelName(job, projectName, line.step)
  await ctx.db.transaction().execute(async (trx) => {
    for (const f of files) {
      await insertResultFile(trx, { id: f.id, projectId: job.project_id, filename: `${checkpointId}/${f.name}`, bytes: f.bytes })
    }
    await insertCheckpoint(trx, {
      id: checkpointId,
      jobId: job.id,
      stepNumber: line.step,
      fineTunedModelCheckpoint: modelName,
      metrics: { ...line.metrics, step: line.step },
      resultFiles: files.map(f => f.id),
    })
    await appendEvent(trx, job.id, { message: `Checkpoint created at step ${line.step} with Snapshot ID: ${modelName}`, data: { checkpoint_id: checkpointId, step: line.step, metrics: line.metrics } })
  })
  return true
}

// Checkpoints can be gigabytes: a hard link costs nothing when the job dir and the file store
// share a file system; otherwise the bytes are copied (and fsynced) like an upload.
async function importBlob (ctx: AppContext, path: string, id: string): Promise<number> {
  try {
    await link(path, ctx.blobs.pathOf(id))
    return await ctx.blobs.size(id)
  } catch {
    return await ctx.blobs.importFile(path, id)
  }
}

// --- per-step metrics, kept as JSON lines in the job dir and published as CSV at the end -------

const CSV_COLUMNS = ['step', 'epoch', 'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy', 'learning_rate', 'tokens', 'step_time_s'] as const

export async function readMetricsLog (path: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(path, 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).map(l => JSON.parse(l) as Record<string, unknown>)
}

/** After a resume from step N, what was logged beyond N is about to be logged again. */
export async function truncateMetricsLog (path: string, keepUpToStep: number): Promise<void> {
  const rows = (await readMetricsLog(path)).filter(r => Number(r.step) <= keepUpToStep)
  await writeFile(path, rows.map(r => JSON.stringify(r) + '\n').join(''))
}

export function metricsLogLine (line: MetricsLine): string {
  return JSON.stringify({ ...extraStepMetrics(line), step: line.step, epoch: line.epoch, train_loss: line.train_loss, train_mean_token_accuracy: line.train_mean_token_accuracy, learning_rate: line.learning_rate, tokens: line.tokens, step_time_s: line.step_time_s }) + '\n'
}

/** The job's result file: one CSV row per optimizer step, validation columns filled at checkpoints;
 *  a method's own metrics (a drafter's acceptance rates) in columns after the fixed ones, by name. */
export async function publishMetricsCsv (ctx: AppContext, job: JobRow, logPath: string): Promise<string> {
  const rows = await readMetricsLog(logPath)
  const validByStep = await checkpointMetrics(ctx.db, job.id)
  const cell = (v: unknown) => (v === null || v === undefined ? '' : String(v))
  const merged = rows.map(r => ({ ...r, ...Object.fromEntries(Object.entries(validByStep.get(Number(r.step)) ?? {}).filter(([k]) => k.includes('valid'))) }))
  const fixed = new Set<string>(CSV_COLUMNS)
  const extra = [...new Set(merged.flatMap(r => Object.keys(r)).filter(k => !fixed.has(k)))].sort()
  const columns = [...CSV_COLUMNS, ...extra]
  const lines = [columns.join(',')]
  for (const r of merged) lines.push(columns.map(c => cell((r as Record<string, unknown>)[c])).join(','))
  const csvPath = `${logPath}.csv`
  await writeFile(csvPath, lines.join('\n') + '\n')
  const id = newFileId()
  const bytes = await ctx.blobs.importFile(csvPath, id)
  await insertResultFile(ctx.db, { id, projectId: job.project_id, filename: `${job.id}/metrics.csv`, bytes })
  return id
}

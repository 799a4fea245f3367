// The W&B and MLflow runs of one attempt at a job (its `integrations` of type wandb and mlflow):
// started with the attempt (train-job.ts), fed every step's metrics and every checkpoint's
// validation metrics (trainer-lines.ts), ended with the job's outcome. Nothing here waits on a
// tracker: each run has its own bounded queue and sender (delivery.ts).
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { getFile } from '../files/files.store.js'
import { checkpointMetrics } from '../fine-tuning/checkpoints.store.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import type { Integration } from '../fine-tuning/integrations.js'
import { getJobById, type JobRow } from '../fine-tuning/jobs.store.js'
import { listStepMetrics } from '../fine-tuning/metrics.store.js'
import type { TrainerLine } from '../runner/protocol.js'
import { Delivery } from './delivery.js'
import { TrackerError } from './http.js'
import { mlflowTracker, type MlflowConfig } from './mlflow.js'
import type { FinalStatus, StepPoint, Tracker } from './tracker.js'
import { loadRun, saveRun } from './tracker-runs.store.js'
import { wandbTracker, type RunFacts, type WandbConfig } from './wandb.js'

/** The integration types that run here; others are stored and echoed only. */
export const TRACKER_TYPES: readonly string[] = ['wandb', 'mlflow']

type MetricsLine = Extract<TrainerLine, { type: 'metrics' }>
type CheckpointLine = Extract<TrainerLine, { type: 'checkpoint' }>

const STEP_KEYS = ['train_loss', 'train_mean_token_accuracy', 'learning_rate', 'grad_norm', 'tokens', 'step_time_s', 'epoch'] as const

const finite = (entries: Array<[string, unknown]>): Record<string, number> =>
  Object.fromEntries(entries.filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1])))

export class TrackerSet {
  // A step is held until the next line: its checkpoint (validation metrics) comes right after it
  // and joins it, so a W&B history row holds a step's train and valid values together.
  #held: StepPoint | null = null

  constructor (
    private readonly ctx: AppContext,
    private readonly jobId: string,
    private readonly deliveries: readonly Delivery[],
    private readonly log: FastifyBaseLogger
  ) {}

  /** The trainer (re)started after `startStep`: what the runs lack up to there comes from the store. */
  started (startStep: number): void {
    if (startStep > 0) for (const d of this.deliveries) d.backfill(startStep)
  }

  step (line: MetricsLine): void {
    if (this.deliveries.length === 0) return
    this.#release()
    this.#held = { step: line.step, timestampMs: Date.now(), values: finite(STEP_KEYS.map(k => [k, line[k]])) }
  }

  checkpoint (line: CheckpointLine): void {
    if (this.deliveries.length === 0) return
    const values = finite(Object.entries(line.metrics).filter(([k]) => k.includes('valid')))
    if (this.#held?.step === line.step) Object.assign(this.#held.values, values)
    else this.#push({ step: line.step, timestampMs: Date.now(), values })
  }

  /** Flushes every run (at most the configured flush time) and finishes it if the job has ended. */
  async end (shutdown: AbortSignal): Promise<void> {
    if (this.deliveries.length === 0) return
    this.#release()
    const status = await getJobById(this.ctx.db, this.jobId).then(j => j?.status, (err: unknown) => {
      this.log.warn({ err }, 'reading the job for its trackers failed')
      return undefined
    })
    const final = status === 'succeeded' || status === 'failed' || status === 'cancelled' ? status : null
    const { flushMs } = this.ctx.config.trackers
    await Promise.all(this.deliveries.map(d => d.close(final as FinalStatus | null, flushMs, shutdown)))
  }

  #release (): void {
    if (this.#held) this.#push(this.#held)
    this.#held = null
  }

  #push (p: StepPoint): void {
    for (const d of this.deliveries) d.push(p)
  }
}

/** The trackers of the job's integrations; runs are opened in the background, never waited for. */
export function startTrackers (ctx: AppContext, job: JobRow, log: FastifyBaseLogger): TrackerSet {
  const { trackers: cfg } = ctx.config
  const facts: RunFacts = {
    jobId: job.id,
    model: job.model,
    createdAtMs: job.created_at * 1000,
    config: {
      model: job.model,
      training_file: job.training_file,
      validation_file: job.validation_file,
      suffix: job.suffix,
      seed: job.seed,
      ...job.hyperparameters,
    },
  }
  let wandbRuns = 0
  const deliveries = (job.integrations ?? []).flatMap((item, slot) => {
    const tracker = makeTracker(ctx, job, item, facts, wandbRuns)
    if (!tracker) return []
    if (tracker.kind === 'wandb') wandbRuns++
    const scoped = log.child({ tracker: tracker.kind, slot })
    return [new Delivery(tracker, {
      attempts: cfg.attempts,
      backoffMs: cfg.backoffMs,
      capacity: cfg.queueSteps,
      load: async () => await loadRun(ctx.db, job.id, slot),
      stored: async (afterStep, toStep) => await storedSteps(ctx, job.id, afterStep, toStep),
      save: async (state) => {
        await saveRun(ctx.db, job.id, slot, tracker.kind, state).catch((err: unknown) => scoped.warn({ err }, 'saving the tracker run failed'))
      },
      event: async (level, message) => {
        await appendEvent(ctx.db, job.id, { level, message }).catch((err: unknown) => scoped.warn({ err }, 'tracker event not stored'))
      },
      log: scoped,
    })]
  })
  return new TrackerSet(ctx, job.id, deliveries, log)
}

function makeTracker (
  ctx: AppContext,
  job: JobRow,
  item: Integration,
  facts: RunFacts,
  wandbRuns: number
): Tracker | null {
  const type = item.type ?? 'wandb'
  const timeoutMs = ctx.config.trackers.requestTimeoutMs
  if (type === 'wandb') {
    // the first W&B run of a job is named by the job id, as OpenAI's are
    const defaultRunId = wandbRuns === 0 ? job.id : `${job.id}-${wandbRuns}`
    const baseUrl = ctx.config.trackers.wandbBaseUrl
    return wandbTracker(item.wandb as WandbConfig, { ...facts, defaultRunId }, { baseUrl, timeoutMs })
  }
  if (type === 'mlflow') {
    const config = item.mlflow as MlflowConfig & { certificate_file?: string, certificate_file_id?: string | null }
    return mlflowTracker(config, facts, { timeoutMs, ca: async () => await certificate(ctx, job, config) })
  }
  return null
}

async function storedSteps (ctx: AppContext, jobId: string, afterStep: number, toStep: number): Promise<StepPoint[]> {
  const rows = (await listStepMetrics(ctx.db, jobId, { afterStep })).filter(r => r.step <= toStep)
  const validated = await checkpointMetrics(ctx.db, jobId)
  return rows.map(r => ({
    step: r.step,
    timestampMs: Date.now(),
    values: {
      ...finite(STEP_KEYS.map(k => [k, r[k]])),
      ...finite(Object.entries(validated.get(r.step) ?? {}).filter(([k]) => k.includes('valid'))),
    },
  }))
}

/** The CA of an MLflow server: a file of the project (certificate_file_id), or PEM text in certificate_file. */
async function certificate (
  ctx: AppContext,
  job: JobRow,
  cfg: { certificate_file?: string, certificate_file_id?: string | null }
): Promise<string | null> {
  const id = cfg.certificate_file_id
  if (id) {
    if (!(await getFile(ctx.db, job.project_id, id))) throw new TrackerError(`certificate_file_id '${id}' is not a file of this project`, false)
    const chunks: Buffer[] = []
    for await (const c of ctx.blobs.read(id)) chunks.push(c as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }
  const pem = cfg.certificate_file ?? ''
  if (pem.trim() === '') return null
  if (!pem.includes('-----BEGIN')) throw new TrackerError('certificate_file must be the PEM text of a CA certificate (-----BEGIN CERTIFICATE-----…)', false)
  return pem
}

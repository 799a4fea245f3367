// The trainer's stdout lines, handled one after another in the order they came: job status and
// progress, bounded metrics events, checkpoints, the per-step metrics log.
import { appendFile, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import { moveJob } from '../fine-tuning/jobs.service.js'
import { dropMetricsAfter, recordStepMetrics } from '../fine-tuning/metrics.store.js'
import { updateJob, type JobRow } from '../fine-tuning/jobs.store.js'
import type { TrackerSet } from '../trackers/trackers.js'
import { extraStepMetrics, parseTrainerLine, type TrainerLine } from './protocol.js'
import { metricsLogLine, registerCheckpoint, truncateMetricsLog } from './results.js'

const MAX_METRIC_EVENTS = 100 // per job, besides the first and last step: long jobs stay readable

type Line<T extends TrainerLine['type']> = Extract<TrainerLine, { type: T }>

// A diverged step reports NaN/inf losses as null (protocol): say so rather than throw.
const fixed = (v: number | null) => (typeof v === 'number' ? v.toFixed(4) : 'n/a')

export class TrainerLines {
  errorLine: Line<'error'> | null = null
  failure: unknown = null // a line whose effects could not be stored: the attempt must not go on
  quiet = false // set once the job is cancelled: no more progress is reported
  lastStep: number // the last step already reported (before an interruption too)
  savedNewState = false // this attempt saved state past the step it started from: it made progress
  trackers: TrackerSet | null = null // the job's W&B / MLflow runs (train-job.ts starts and ends them)
  #tokens: number
  #lastWrite = 0
  #startedAt = Date.now()
  #firstStep = 0
  #chain = Promise.resolve()

  constructor (
    private readonly ctx: AppContext,
    private readonly job: JobRow,
    private readonly projectName: string,
    readonly metricsLog: string,
    private readonly checkpointsDir: string,
    private readonly log: FastifyBaseLogger,
    private readonly onFailure: () => void
  ) {
    this.lastStep = job.trained_steps ?? 0
    this.#tokens = job.trained_tokens ?? 0
  }

  /** Queues a line; lines are handled strictly in order. A failure stops the attempt (onFailure). */
  push (line: TrainerLine): void {
    this.#chain = this.#chain.then(() => this.#handle(line)).catch((err: unknown) => {
      this.log.error({ err, line: line.type }, 'handling a trainer line failed')
      this.failure ??= err
      this.onFailure()
    })
  }

  async drained (): Promise<void> {
    await this.#chain
  }

  async #handle (line: TrainerLine): Promise<void> {
    switch (line.type) {
      case 'started': return await this.#onStarted(line)
      case 'metrics': return await this.#onMetrics(line)
      case 'checkpoint':
        await registerCheckpoint(this.ctx, this.job, this.projectName, line)
        this.trackers?.checkpoint(line)
        return
      case 'log':
        await appendEvent(this.ctx.db, this.job.id, { level: line.level, message: line.message })
        return
      case 'error':
        this.errorLine = line
        return
      case 'state_saved':
        this.log.info({ line }, 'trainer')
        return await this.#onStateSaved(line)
      case 'finished':
        this.log.info({ line }, 'trainer')
        break
      case 'heartbeat': // only a sign of life (trainer-silence.ts)
    }
  }

  /**
   * Only attempts that make no progress count towards the limit (train-job.ts): once this one has
   * saved state past where it started, the interruptions before it are forgotten.
   */
  async #onStateSaved (line: Line<'state_saved'>): Promise<void> {
    if (this.savedNewState || line.step <= this.#firstStep) return
    this.savedNewState = true
    await updateJob(this.ctx.db, this.job.id, { attempts: 0 })
  }

  async #onStarted (line: Line<'started'>): Promise<void> {
    const { db } = this.ctx
    this.#firstStep = line.start_step
    this.#startedAt = Date.now()
    await truncateMetricsLog(this.metricsLog, line.start_step)
    await dropMetricsAfter(db, this.job.id, line.start_step) // the stored series, alike
    this.trackers?.started(line.start_step) // runs get the stored steps they lack up to there
    await this.#registerUnreadCheckpoints(line.start_step)
    const resumed = line.start_step > 0 || this.job.status === 'running'
    // where it runs, so a GPU user sees at once that a job trains on the CPU
    const on = line.device ? ` on ${line.device}${line.dtype ? `, ${line.dtype}` : ''}` : ''
    const message = resumed ? `Fine-tuning job resumed from step ${line.start_step}/${line.total_steps}${on}` : `Fine-tuning job started${on}`
    if (!(await moveJob(db, this.job.id, 'running', { total_steps: line.total_steps }, { message }))) {
      await updateJob(db, this.job.id, { total_steps: line.total_steps })
      if (resumed) await appendEvent(db, this.job.id, { message })
    }
  }

  /** Checkpoints written before an interruption whose line the service never read (step-N.json). */
  async #registerUnreadCheckpoints (upToStep: number): Promise<void> {
    const names = await readdir(this.checkpointsDir).catch(() => [] as string[])
    for (const name of names.filter(n => /^step-\d+\.json$/.test(n))) {
      const line = parseTrainerLine(await readFile(join(this.checkpointsDir, name), 'utf8'))
      if (line?.type === 'checkpoint' && line.step <= upToStep) await registerCheckpoint(this.ctx, this.job, this.projectName, line)
    }
  }

  async #onMetrics (line: Line<'metrics'>): Promise<void> {
    await appendFile(this.metricsLog, metricsLogLine(line))
    // every step, for GET …/metrics (one upsert: cheap next to a step, and off the trainer's path)
    await recordStepMetrics(this.ctx.db, this.job.id, {
      step: line.step,
      epoch: line.epoch ?? null,
      train_loss: line.train_loss,
      train_mean_token_accuracy: line.train_mean_token_accuracy,
      learning_rate: line.learning_rate ?? null,
      grad_norm: line.grad_norm ?? null,
      tokens: line.tokens ?? null,
      step_time_s: line.step_time_s ?? null,
      extra: extraStepMetrics(line),
    })
    this.trackers?.step(line) // queued, never waited for
    if (this.quiet || line.step <= this.lastStep) return // cancelled, or already reported before an interruption
    this.lastStep = line.step
    this.#tokens += line.tokens ?? 0
    const every = Math.max(1, Math.ceil(line.total_steps / MAX_METRIC_EVENTS))
    const reported = line.step === 1 || line.step % every === 0 || line.step === line.total_steps
    // The job row at most once a second, but always with an event: both in one transaction, so
    // trained_steps is never behind a reported step, and a resumed job (which skips steps up to
    // trained_steps) reports no step twice.
    const now = Date.now()
    if (!reported && now - this.#lastWrite < 1000) return
    this.#lastWrite = now
    const perStep = (now - this.#startedAt) / Math.max(1, line.step - this.#firstStep)
    await this.ctx.db.transaction().execute(async (trx) => {
      if (reported) {
        await appendEvent(trx, this.job.id, {
          type: 'metrics',
          message: `Step ${line.step}/${line.total_steps}: training loss=${fixed(line.train_loss)}, token accuracy=${fixed(line.train_mean_token_accuracy)}`,
          data: {
            step: line.step,
            total_steps: line.total_steps,
            train_loss: line.train_loss,
            train_mean_token_accuracy: line.train_mean_token_accuracy,
            ...extraStepMetrics(line), // a method's own (a drafter's train_acceptance_rate_1)
          },
        })
      }
      await updateJob(trx, this.job.id, {
        trained_steps: line.step,
        trained_tokens: this.#tokens,
        estimated_finish: Math.round((now + perStep * (line.total_steps - line.step)) / 1000),
      })
    })
  }
}

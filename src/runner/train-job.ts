// queued → running → succeeded | failed (| cancelled by the user): runs the trainer for one
// claimed job and turns its protocol lines into status, events, checkpoints and result files.
import { appendFile, mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import type { JobRow } from '../db/database.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import type { Hyperparameters } from '../fine-tuning/hyperparameters.js'
import { getJobById, updateJob } from '../fine-tuning/jobs.store.js'
import { nowSeconds } from '../ids.js'
import { classifyExit } from './exit.js'
import { failJob, moveJob } from './job-state.js'
import { modelDirForTraining } from './model-weights.js'
import type { TrainerLine } from './protocol.js'
import { heartbeat, releaseJob } from './queue.js'
import { metricsLogLine, publishMetricsCsv, registerCheckpoint, truncateMetricsLog } from './results.js'
import { startTrainer } from './trainer-process.js'
import { trainerEnv } from './trainer-env.js'
import { jobDir } from './validate-files.js'

export interface TrainOptions {
  runnerId: string
  leaseMs: number
  log: FastifyBaseLogger
  /** Replaces `python -m opentune_trainer` (tests use a scripted fake trainer). */
  trainerCommand?: readonly string[]
  stopGraceMs?: number
  pollMs?: number
}

const MAX_ATTEMPTS = 5
const MAX_METRIC_EVENTS = 100 // per job, besides the first and last step: long jobs stay readable

type StopReason = 'cancelled' | 'shutdown' | 'lost'

export async function trainJob (ctx: AppContext, claimed: JobRow, opts: TrainOptions, shutdown: AbortSignal): Promise<void> {
  const job = claimed
  if (job.attempts > MAX_ATTEMPTS) {
    await failJob(ctx.db, job.id, { code: 'internal_error', message: `Training was interrupted ${MAX_ATTEMPTS} times; giving up.`, param: null })
    return
  }
  const model = ctx.models.find(job.model)
  if (!model) {
    await failJob(ctx.db, job.id, { code: 'model_not_available', message: `Model '${job.model}' is no longer in the models directory.`, param: 'model' })
    return
  }
  let modelDir: string
  try {
    modelDir = await modelDirForTraining(ctx.config, model)
  } catch (err) {
    await failJob(ctx.db, job.id, { code: 'trainer_unavailable', message: `Could not prepare the built-in model with ${ctx.config.python}: ${String((err as Error).message).slice(-500)}. Run "npm run setup" (Debian: python3-torch) or set OPENTUNE_PYTHON.`, param: null })
    return
  }
  const dir = jobDir(ctx, job.id)
  const specPath = join(dir, 'spec.json')
  const metricsLog = join(dir, 'metrics.jsonl')
  await mkdir(dir, { recursive: true })
  await writeFile(specPath, JSON.stringify(trainerSpec(ctx, job, modelDir, dir), null, 2))
  const project = await ctx.db.selectFrom('projects').select('name').where('id', '=', job.project_id).executeTakeFirstOrThrow()
  const log = opts.log.child({ jobId: job.id })

  const progress = { lastStep: job.trained_steps ?? 0, tokens: job.trained_tokens ?? 0, totalSteps: job.total_steps ?? 0, lastWrite: 0, startedAt: Date.now(), firstStep: 0 }
  let errorLine: Extract<TrainerLine, { type: 'error' }> | null = null
  let stopReason: StopReason | null = null

  const handle = async (line: TrainerLine): Promise<void> => {
    switch (line.type) {
      case 'started': {
        progress.totalSteps = line.total_steps
        progress.firstStep = line.start_step
        progress.startedAt = Date.now()
        await truncateMetricsLog(metricsLog, line.start_step)
        const resumed = line.start_step > 0 || job.status === 'running'
        const message = resumed ? `Fine-tuning job resumed from step ${line.start_step}/${line.total_steps}` : 'Fine-tuning job started'
        if (!(await moveJob(ctx.db, job.id, 'running', { total_steps: line.total_steps }, { message }))) {
          await updateJob(ctx.db, job.id, { total_steps: line.total_steps })
          if (resumed) await appendEvent(ctx.db, job.id, { message })
        }
        return
      }
      case 'metrics': return await onMetrics(line)
      case 'checkpoint':
        await registerCheckpoint(ctx, job, project.name, line)
        return
      case 'log':
        await appendEvent(ctx.db, job.id, { level: line.level, message: line.message })
        return
      case 'error':
        errorLine = line
        return
      case 'state_saved':
      case 'finished':
        log.info({ line }, 'trainer')
    }
  }

  const onMetrics = async (line: Extract<TrainerLine, { type: 'metrics' }>) => {
    await appendFile(metricsLog, metricsLogLine(line))
    if (line.step <= progress.lastStep) return // already reported before an interruption
    progress.lastStep = line.step
    progress.tokens += line.tokens ?? 0
    const every = Math.max(1, Math.ceil(line.total_steps / MAX_METRIC_EVENTS))
    if (line.step === 1 || line.step % every === 0 || line.step === line.total_steps) {
      await appendEvent(ctx.db, job.id, {
        type: 'metrics',
        message: `Step ${line.step}/${line.total_steps}: training loss=${line.train_loss.toFixed(4)}, token accuracy=${line.train_mean_token_accuracy.toFixed(4)}`,
        data: { step: line.step, total_steps: line.total_steps, train_loss: line.train_loss, train_mean_token_accuracy: line.train_mean_token_accuracy },
      })
    }
    const now = Date.now()
    if (now - progress.lastWrite >= 1000 || line.step === line.total_steps) {
      progress.lastWrite = now
      const perStep = (now - progress.startedAt) / Math.max(1, line.step - progress.firstStep)
      await updateJob(ctx.db, job.id, {
        trained_steps: line.step,
        trained_tokens: progress.tokens,
        estimated_finish: Math.round((now + perStep * (line.total_steps - line.step)) / 1000),
      })
    }
  }

  let chain = Promise.resolve()
  const argv = [...(opts.trainerCommand ?? [ctx.config.python, '-m', 'opentune_trainer']), 'train', '--spec', specPath]
  const trainer = startTrainer(argv, {
    env: trainerEnv(ctx.config),
    onLine: (line) => { chain = chain.then(() => handle(line)).catch((err: unknown) => log.error({ err }, 'handling a trainer line failed')) },
    onOther: (text, stream) => log.debug({ stream }, text),
  })
  const stop = (reason: StopReason, graceMs: number) => { stopReason ??= reason; trainer.stop(graceMs) }
  const grace = opts.stopGraceMs ?? 10_000
  const onShutdown = () => stop('shutdown', grace)
  shutdown.addEventListener('abort', onShutdown)
  if (shutdown.aborted) onShutdown()

  // Every poll: has the user cancelled? Every third of a lease: extend it, or learn it is lost.
  let polls = 0
  const pollMs = opts.pollMs ?? 1000
  const heartbeatEvery = Math.max(1, Math.floor(opts.leaseMs / 3 / pollMs))
  const monitor = setInterval(() => {
    void (async () => {
      polls++
      const now = await getJobById(ctx.db, job.id)
      if (!now || now.status === 'cancelled') return stop('cancelled', Math.min(grace, 5000))
      if (polls % heartbeatEvery === 0 && !(await heartbeat(ctx.db, job.id, opts.runnerId, opts.leaseMs))) stop('lost', 0)
    })().catch((err: unknown) => log.warn({ err }, 'job monitor failed'))
  }, pollMs)

  const exit = await trainer.exited
  clearInterval(monitor)
  shutdown.removeEventListener('abort', onShutdown)
  await chain
  await finish(ctx, job, { exit, stopReason, errorLine, metricsLog, dir, lastStep: progress.lastStep, runnerId: opts.runnerId, log })
}

interface FinishInput {
  exit: Awaited<ReturnType<typeof startTrainer>['exited']>
  stopReason: StopReason | null
  errorLine: Extract<TrainerLine, { type: 'error' }> | null
  metricsLog: string
  dir: string
  lastStep: number
  runnerId: string
  log: FastifyBaseLogger
}

async function finish (ctx: AppContext, job: JobRow, f: FinishInput): Promise<void> {
  if (f.stopReason === 'lost') return // another runner holds the job now
  if (f.stopReason === 'cancelled') {
    await appendEvent(ctx.db, job.id, { message: `Training stopped at step ${f.lastStep} after cancellation; checkpoints so far remain available.` })
    await releaseJob(ctx.db, job.id, f.runnerId)
    await rm(f.dir, { recursive: true, force: true })
    return
  }
  if (f.stopReason === 'shutdown') {
    // Back to the queue: the next start (this machine or another) resumes from the saved state.
    await moveJob(ctx.db, job.id, 'queued', { locked_by: null, locked_until: null }, {
      message: `Training paused at step ${f.lastStep}: the service is shutting down. It resumes from its saved state when a runner is available.`,
    })
    await releaseJob(ctx.db, job.id, f.runnerId) // also when it was still queued
    return
  }
  const outcome = classifyExit(f.exit, f.errorLine, ctx.config.python)
  if (outcome.ok) {
    const last = await ctx.db.selectFrom('checkpoints').select('fine_tuned_model_checkpoint').where('job_id', '=', job.id)
      .orderBy('step_number', 'desc').executeTakeFirst()
    const csvId = await publishMetricsCsv(ctx, job, f.metricsLog)
    const done = await moveJob(ctx.db, job.id, 'succeeded', {
      finished_at: nowSeconds(),
      fine_tuned_model: last?.fine_tuned_model_checkpoint ?? null,
      result_files: JSON.stringify([csvId]),
      estimated_finish: null,
      locked_by: null,
      locked_until: null,
    }, { message: `New fine-tuned model created: ${last?.fine_tuned_model_checkpoint ?? '(no checkpoint)'}` })
    if (done) await appendEvent(ctx.db, job.id, { message: 'The job has successfully completed' })
  } else {
    f.log.warn({ exit: { code: f.exit.code, signal: f.exit.signal }, stderr: f.exit.stderrTail.slice(-2000) }, 'trainer failed')
    await failJob(ctx.db, job.id, outcome.error)
  }
  await rm(f.dir, { recursive: true, force: true })
}

function trainerSpec (ctx: AppContext, job: JobRow, modelDir: string, dir: string) {
  const hp = JSON.parse(job.hyperparameters) as Hyperparameters
  return {
    version: 1,
    job_id: job.id,
    base_model: job.model,
    model_dir: modelDir,
    train_data: join(dir, 'data', 'train'),
    valid_data: job.validation_file ? join(dir, 'data', 'valid') : null,
    output_dir: join(dir, 'out'),
    resume: true,
    seed: job.seed,
    device: ctx.config.trainerDevice,
    hyperparameters: {
      batch_size: hp.batch_size,
      learning_rate: hp.learning_rate,
      n_epochs: hp.n_epochs,
      warmup_ratio: hp.warmup_ratio,
      weight_decay: hp.weight_decay,
      max_grad_norm: hp.max_grad_norm,
      lora: hp.lora,
      lora_r: hp.lora_r,
      lora_alpha: hp.lora_alpha,
      lora_dropout: hp.lora_dropout,
    },
    valid_sample_rows: 32,
  }
}

// queued → running → succeeded | failed (| cancelled by the user): runs the trainer for one
// claimed job and turns its protocol lines into status, events, checkpoints and result files.
import { existsSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { deleteFile } from '../files/files.store.js'
import { isCheckpointModel, rootBaseId } from '../fine-tuning/continue-from.js'
import { jobDir, sourceDirs } from '../fine-tuning/job-dir.js'
import { lastCheckpointName } from '../fine-tuning/checkpoints.store.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import { failJob, moveJob } from '../fine-tuning/jobs.service.js'
import { getJobById, updateJobIf, type JobRow } from '../fine-tuning/jobs.store.js'
import type { Hyperparameters } from '../fine-tuning/hyperparameters.js'
import { specDraftHyperparameters, supervisedHyperparameters } from '../fine-tuning/job-method.js'
import type { SpecDraftHyperparameters } from '../fine-tuning/spec-draft-hyperparameters.js'
import { nowSeconds } from '../ids.js'
import { projectName } from '../projects/keys.store.js'
import { classifyExit, type ExitFacts } from './exit.js'
import { AttemptRefused, executorFor, type Attempt, type AttemptEnd, type AttemptEvents } from './executor.js'
import { modelDirForTraining } from './model-weights.js'
import { diskIsFull } from '../files/storage-full.js'
import type { TrainerLine } from './protocol.js'
import { TrainerLines } from './trainer-lines.js'
import { heartbeat, releaseJob } from './queue.js'
import { publishMetricsCsv } from './results.js'
import { pushResults } from '../hub/push.js'
import { watchSilence, type SilenceWatch } from './trainer-silence.js'
import { trainerEnv } from './trainer-env.js'
import { startTrackers } from '../trackers/trackers.js'

export interface TrainOptions {
  runnerId: string
  leaseMs: number
  log: FastifyBaseLogger
  /** Replaces `python -m opentune_trainer` (tests use a scripted fake trainer). */
  trainerCommand?: readonly string[]
  stopGraceMs?: number
  pollMs?: number
}

// Claims in a row that did not end the job and saved no new state (lease takeovers after a crash,
// retries, hung trainers; not shutdowns): an attempt that saves state resets the count
// (trainer-lines.ts), so a long job survives any number of crashes as long as each one progressed.
const MAX_ATTEMPTS = 5

// cancelled: by the user · shutdown: this runner is stopping · lost: another runner took the job ·
// retry: what the trainer reported could not be stored (disk, database): resume later from state ·
// silent: the trainer printed nothing for too long (trainer-silence.ts): killed, resumed from state
type StopReason = 'cancelled' | 'shutdown' | 'lost' | 'retry' | 'silent'

export async function trainJob (
  ctx: AppContext,
  job: JobRow,
  opts: TrainOptions,
  shutdown: AbortSignal
): Promise<void> {
  const log = opts.log.child({ jobId: job.id })
  let attempt: Attempt | null = null
  let stopReason: StopReason | null = null
  let lines: TrainerLines | null = null
  let silence: SilenceWatch | null = null
  let silentMs: number | null = null // how long it had been silent when it was killed as hung
  const grace = opts.stopGraceMs ?? 10_000
  // cancelled or hung: the attempt ends; otherwise this runner goes away and the attempt ends
  // with it (local) or goes on for the next runner to follow (Slurm)
  const act = (a: Attempt, reason: StopReason) => {
    if (reason === 'cancelled') a.stop(Math.min(grace, 5000))
    else if (reason === 'silent') a.stop(0) // SIGKILL at once: a stopped process acts on no SIGTERM until SIGCONT
    else a.leave(reason === 'lost' ? 0 : grace)
  }
  const stop = (reason: StopReason) => {
    stopReason ??= reason
    if (attempt) act(attempt, reason)
  }
  const onShutdown = () => stop('shutdown')
  shutdown.addEventListener('abort', onShutdown)
  if (shutdown.aborted) onShutdown()
  // Watched from the claim to the last write: the lease must not run out while the model is
  // prepared or results are published, or a second runner could start on the same job.
  const unwatch = watchJob(ctx, job, opts, log, {
    cancelled: () => { if (lines) lines.quiet = true; stop('cancelled') },
    lost: () => stop('lost'),
  })
  try {
    const model = await modelDirOrFail(ctx, job)
    if (model === null) return
    const dir = jobDir(ctx, job.id)
    const specPath = join(dir, 'spec.json')
    await mkdir(dir, { recursive: true })
    await writeFile(specPath, JSON.stringify(trainerSpec(ctx, job, model, dir), null, 2))
    lines = new TrainerLines(ctx, job, await projectName(ctx.db, job.project_id), join(dir, 'metrics.jsonl'), join(dir, 'out', 'checkpoints'), log, () => stop('retry'))
    lines.trackers = startTrackers(ctx, job, log) // the job's W&B / MLflow runs, fed beside training
    const handler = lines
    // from when the trainer runs (not while Slurm keeps it pending) to its end
    const silentAfter = ctx.config.trainerSilenceSeconds * 1000
    const watchLines = () => watchSilence(silentAfter, (ms) => {
      log.warn({ silentMs: ms }, 'trainer silent: killing it')
      silentMs = ms
      stop('silent')
    })
    const events: AttemptEvents = {
      line: async (line) => {
        silence?.heard(line)
        handler.push(line)
        await handler.drained()
        return handler.failure === null
      },
      other: (text, stream) => log.debug({ stream }, text),
      waiting: async (note) => {
        silence?.stop()
        silence = null
        if (note.requeued) await moveJob(ctx.db, job.id, 'queued', {}, { message: note.message })
        else await appendEvent(ctx.db, job.id, { message: note.message, data: note.data })
      },
      running: async (note) => {
        silence?.stop()
        silence = watchLines()
        if (note) await appendEvent(ctx.db, job.id, { message: note.message, data: note.data })
      },
    }
    const command = opts.trainerCommand ?? [ctx.config.python, '-m', 'opentune_trainer']
    try {
      const input = { job, dir, specPath, trainerCommand: command, env: trainerEnv(ctx.config), log }
      attempt = await executorFor(ctx).start(input, events)
    } catch (err) {
      if (!(err instanceof AttemptRefused)) throw err
      await failJob(ctx.db, job.id, err.error)
      return
    }
    if (stopReason) act(attempt, stopReason) // asked for before it started
    const exit = await attempt.exited
    // facts.lora silences "or LoRA" in out-of-memory advice: no advice for a drafter either
    const lora = supervisedHyperparameters(job)?.lora ?? true
    const diskFull = await diskIsFull(dir)
    const facts: ExitFacts = { oomKilled: exit.oomKilled, lora, diskFull, dataDir: ctx.config.dataDir }
    await handler.drained()
    await finish(ctx, job, {
      savedNewState: handler.savedNewState,
      silentMs,
      exit,
      facts,
      stopReason,
      errorLine: handler.errorLine,
      metricsLog: handler.metricsLog,
      dir,
      lastStep: handler.lastStep,
      runnerId: opts.runnerId,
      log,
    })
  } finally {
    (silence as SilenceWatch | null)?.stop()
    unwatch()
    shutdown.removeEventListener('abort', onShutdown)
    await lines?.trackers?.end(shutdown) // flushed (bounded), finished with the job's outcome
  }
}

/** What the trainer is handed: the folders it loads and the name the new adapter records. */
interface ModelFolders {
  /** The folder the trainer loads weights from. */
  dir: string
  /** A LoRA checkpoint whose adapter the job keeps training. */
  adapterDir?: string
  /** The model the weights are, for adapter_config.json's base_model_name_or_path. */
  name: string
}

/** What the trainer loads, or null once the job has been failed with a reason a user can act on. */
async function modelDirOrFail (ctx: AppContext, job: JobRow): Promise<ModelFolders | null> {
  if (job.attempts > MAX_ATTEMPTS) {
    const message = `Training was interrupted ${MAX_ATTEMPTS} times in a row without saving new progress ` +
      '(the service restarted or lost the job, or the trainer hung; the events say more); giving up.'
    await failJob(ctx.db, job.id, { code: 'internal_error', message, param: null })
    return null
  }
  const base = ctx.models.find(rootBaseId(job.model))
  if (!base) {
    await failJob(ctx.db, job.id, { code: 'model_not_available', message: `Model '${rootBaseId(job.model)}' is no longer in the models directory.`, param: 'model' })
    return null
  }
  // a continued checkpoint's files were linked into the job's folder when it was created
  // (continue-from.ts): the job trains from those whatever has happened to the checkpoint since
  const from = sourceDirs(ctx, job.id)
  const weights = existsSync(join(from.weights, '.complete')) ? from.weights : undefined
  const adapterDir = existsSync(join(from.adapter, '.complete')) ? from.adapter : undefined
  if (isCheckpointModel(job.model) && !weights && !adapterDir) {
    await failJob(ctx.db, job.id, { code: 'model_not_available', message: `The files of checkpoint '${job.model}' are missing from the job's folder.`, param: 'model' })
    return null
  }
  const name = adapterDir ? await adapterBaseName(adapterDir, job.model) : job.model
  if (weights) return { dir: weights, name, ...(adapterDir ? { adapterDir } : {}) }
  try {
    const dir = await modelDirForTraining(ctx.config, base)
    return { dir, name, ...(adapterDir ? { adapterDir } : {}) }
  } catch (err) {
    await failJob(ctx.db, job.id, { code: 'trainer_unavailable', message: `Could not prepare the built-in model with ${ctx.config.python}: ${String((err as Error).message).slice(-500)}. Run "npm run setup" (Debian: python3-torch) or set OPENTUNE_PYTHON.`, param: null })
    return null
  }
}

/** What a continued adapter applies to, as its adapter_config.json says (the new one says the same). */
async function adapterBaseName (adapterDir: string, fallback: string): Promise<string> {
  const cfg = JSON.parse(await readFile(join(adapterDir, 'adapter_config.json'), 'utf8')) as { base_model_name_or_path?: unknown }
  return typeof cfg.base_model_name_or_path === 'string' ? cfg.base_model_name_or_path : rootBaseId(fallback)
}

/** Every poll: has the user cancelled? Every third of a lease: extend it, or learn it is lost. */
function watchJob (
  ctx: AppContext,
  job: JobRow,
  opts: TrainOptions,
  log: FastifyBaseLogger,
  on: { cancelled: () => void, lost: () => void }
): () => void {
  let polls = 0
  const pollMs = opts.pollMs ?? 1000
  const heartbeatEvery = Math.max(1, Math.floor(opts.leaseMs / 3 / pollMs))
  const timer = setInterval(() => {
    void (async () => {
      polls++
      const now = await getJobById(ctx.db, job.id)
      if (!now || now.status === 'cancelled') return on.cancelled()
      if (polls % heartbeatEvery === 0 && !(await heartbeat(ctx.db, job.id, opts.runnerId, opts.leaseMs))) on.lost()
    })().catch((err: unknown) => log.warn({ err }, 'job monitor failed'))
  }, pollMs)
  return () => clearInterval(timer)
}

interface FinishInput {
  exit: AttemptEnd
  facts: ExitFacts
  stopReason: StopReason | null
  errorLine: Extract<TrainerLine, { type: 'error' }> | null
  metricsLog: string
  dir: string
  lastStep: number
  savedNewState: boolean // this attempt saved state past where it started
  silentMs: number | null // how long the trainer had printed nothing when it was killed as hung
  runnerId: string
  log: FastifyBaseLogger
}

async function finish (ctx: AppContext, job: JobRow, f: FinishInput): Promise<void> {
  if (f.stopReason === 'lost') return // another runner holds the job now
  // the attempt goes on without us (a Slurm job): the next runner to claim the job follows it
  if (f.exit.detached) return await releaseJob(ctx.db, job.id, f.runnerId)
  if (f.stopReason === 'cancelled') {
    // Lines read after the cancel may have refreshed the estimate; a cancelled job has none.
    await updateJobIf(ctx.db, job.id, ['cancelled'], { estimated_finish: null })
    await appendEvent(ctx.db, job.id, { message: `Training stopped at step ${f.lastStep} after cancellation; checkpoints so far remain available.` })
    await releaseJob(ctx.db, job.id, f.runnerId)
    await rm(f.dir, { recursive: true, force: true })
    return
  }
  if (f.stopReason === 'shutdown' || f.stopReason === 'retry' || f.stopReason === 'silent') {
    return await requeue(ctx, job, f, f.stopReason)
  }
  const { verdict } = f.exit
  if (verdict && 'requeue' in verdict) return await requeue(ctx, job, f, verdict.requeue)
  const outcome = verdict
    ? { ok: false as const, error: verdict.failed }
    : classifyExit(f.exit, f.errorLine, ctx.config.python, f.facts)
  let ended: boolean // moved to succeeded or failed
  if (outcome.ok) {
    const last = await lastCheckpointName(ctx.db, job.id)
    await pushResults(ctx, job, f.log) // the hf integration's push: before the status, never failing it
    const csvId = await publishMetricsCsv(ctx, job, f.metricsLog)
    const done = await moveJob(ctx.db, job.id, 'succeeded', {
      finished_at: nowSeconds(),
      fine_tuned_model: last ?? null,
      result_files: [csvId],
      estimated_finish: null,
      locked_by: null,
      locked_until: null,
    }, [ // with the status, in one transaction: an event stream ends after both
      { message: `New fine-tuned model created: ${last ?? '(no checkpoint)'}` },
      { message: 'The job has successfully completed' },
    ])
    if (!done) {
      // Not running any more: the job lists no result file, so none is left behind in /v1/files.
      await deleteFile(ctx.db, job.project_id, csvId)
      await ctx.blobs.remove(csvId)
    }
    ended = done
  } else {
    f.log.warn({ exit: { code: f.exit.code, signal: f.exit.signal }, stderr: f.exit.stderrTail.slice(-2000) }, 'trainer failed')
    // the job's own partial files go first: on a full disk, recording the failure needs the space
    if (outcome.error.code === 'storage_full') await rm(f.dir, { recursive: true, force: true })
    ended = await failJob(ctx.db, job.id, outcome.error)
  }
  // Cancelled as the trainer ended, before the job's watcher saw it: it ends as any cancel does
  // (its event, the lease let go), whatever the trainer's exit.
  if (!ended && (await getJobById(ctx.db, job.id))?.status === 'cancelled') return await finish(ctx, job, { ...f, stopReason: 'cancelled' })
  await rm(f.dir, { recursive: true, force: true })
}

/** Back to the queue: the next runner (this machine or another) resumes from the saved state. */
// `reason`, when not one of ours: the executor's (Slurm preempted the job, or forgot it)
async function requeue (ctx: AppContext, job: JobRow, f: FinishInput, reason: 'shutdown' | 'retry' | 'silent' | string) {
  const ours: Record<string, string> = {
    shutdown: 'the service is shutting down',
    retry: 'storing its progress failed (the service log has details)',
    silent: `the trainer printed nothing for ${Math.round((f.silentMs ?? 0) / 1000)} s (hung or stopped), ` +
      'so it was killed',
  }
  const why = ours[reason] ?? reason
  if (reason === 'silent' && !f.savedNewState && job.attempts >= MAX_ATTEMPTS) {
    // the last attempt the limit allows: fail now, saying why, rather than at the next claim
    const message = `Training stopped at step ${f.lastStep}: ${why}, ${MAX_ATTEMPTS} attempts in a row without ` +
      'saving new progress; giving up. The service log has details.'
    await failJob(ctx.db, job.id, { code: 'internal_error', message, param: null })
    await releaseJob(ctx.db, job.id, f.runnerId)
    await rm(f.dir, { recursive: true, force: true })
    return
  }
  // A shutdown is not the job's doing, so it does not count as an attempt (nor does one that
  // saved new state: the count was reset to 0 then).
  const attempts = reason === 'shutdown' ? { attempts: f.savedNewState ? 0 : Math.max(0, job.attempts - 1) } : {}
  // the next attempt is a new one (a new Slurm job), resuming from the state this one saved
  const fresh = { executor_attempt: null, executor_job_id: null, protocol_offset: 0 }
  await moveJob(ctx.db, job.id, 'queued', { locked_by: null, locked_until: null, ...fresh, ...attempts }, {
    level: reason === 'silent' ? 'warn' : 'info',
    message: `Training paused at step ${f.lastStep}: ${why}. ` +
      'It resumes from its saved state when a runner is available.',
  })
  await releaseJob(ctx.db, job.id, f.runnerId) // also when it was still queued
}

function trainerSpec (ctx: AppContext, job: JobRow, model: ModelFolders, dir: string) {
  const draft = specDraftHyperparameters(job)
  return {
    version: 1,
    job_id: job.id,
    method: draft ? 'spec-draft' : 'supervised',
    // what adapter_config.json names as the base: the model the adapter's weights apply to
    base_model: model.name,
    model_dir: model.dir,
    init_adapter: model.adapterDir ?? null,
    train_data: join(dir, 'data', 'train'),
    valid_data: job.validation_file ? join(dir, 'data', 'valid') : null,
    output_dir: join(dir, 'out'),
    resume: true,
    seed: job.seed,
    device: ctx.config.trainerDevice,
    // packing and context_length are the data pipeline's (validate-files.ts), for either method
    hyperparameters: draft ? drafterHyperparameters(draft) : supervisedSpec(job.hyperparameters as Hyperparameters),
    valid_sample_rows: 32,
  }
}

// what both methods' optimizers take (AdamW, warmup then decay, clipping: train.py)
const optimizerSpec = (hp: Hyperparameters | SpecDraftHyperparameters) => ({
  batch_size: hp.batch_size,
  learning_rate: hp.learning_rate,
  n_epochs: hp.n_epochs,
  warmup_ratio: hp.warmup_ratio,
  weight_decay: hp.weight_decay,
  max_grad_norm: hp.max_grad_norm,
})

const supervisedSpec = (hp: Hyperparameters) => ({
  ...optimizerSpec(hp),
  lora: hp.lora,
  lora_r: hp.lora_r,
  lora_alpha: hp.lora_alpha,
  lora_dropout: hp.lora_dropout,
})

// the drafter's target is model_dir (+ init_adapter, which the trainer merges into it)
const drafterHyperparameters = (hp: SpecDraftHyperparameters) => ({
  ...optimizerSpec(hp),
  architecture: hp.architecture,
  num_decoding_heads: hp.num_decoding_heads,
  loss: { type: hp.loss.type },
  draft_vocab_size: hp.draft_vocab_size,
  regenerate_responses: hp.regenerate_responses,
})

// The job state machine and job creation: the only fine-tuning logic beyond single store calls.
// Every status move (the API's cancel, the runner's validating → queued → running → …) is made here.
import { rm } from 'node:fs/promises'
import type { Kysely } from 'kysely'
import type { AppContext } from '../context.js'
import type { Database } from '../db/database.js'
import { errors } from '../errors.js'
import { getFile } from '../files/files.store.js'
import { newJobId, nowSeconds } from '../ids.js'
import { isCheckpointModel, linkTrainingSources, resolveStartingPoint, rootBaseId, type StartingPoint } from './continue-from.js'
import { jobDir } from './job-dir.js'
import { appendEvent, type NewEvent } from './events.store.js'
import { enqueueJobWebhooks } from '../webhooks/webhooks.service.js'
import { acceptHubCheckpoint, acceptHubModel } from '../hub/accept.js'
import { parseHubCheckpoint, publicHubCheckpoint, type HubCheckpoint } from '../hub/hub-checkpoint.js'
import { sealToken } from '../hub/sealed-token.js'
import { resolveHyperparameters, type Hyperparameters } from './hyperparameters.js'
import { methodToApi, requestedMethod, type JobHyperparameters, type MethodType } from './job-method.js'
import { publicIntegrations, validateIntegrations } from './integrations.js'
import { getJobById, insertJob, updateJobIf, type JobChanges, type JobRow } from './jobs.store.js'
import { isTerminal, type FineTuningJob, type JobCreateBody, type JobError, type JobStatus } from './jobs.schemas.js'

// The single source of legal status moves.
export const JOB_TRANSITIONS: Record<JobStatus, readonly JobStatus[]> = {
  validating_files: ['queued', 'failed', 'cancelled'],
  queued: ['running', 'failed', 'cancelled'],
  running: ['queued', 'succeeded', 'failed', 'cancelled'], // → queued: handed back to be resumed
  succeeded: [],
  failed: [],
  cancelled: [],
}
export const statusesThatMayBecome = (to: JobStatus) =>
  (Object.keys(JOB_TRANSITIONS) as JobStatus[]).filter(from => JOB_TRANSITIONS[from].includes(to))

const KNOWN_REQUEST_KEYS = new Set(['model', 'training_file', 'validation_file', 'hyperparameters', 'method',
  'integrations', 'from_checkpoint', 'seed', 'suffix', 'tags', 'extra_body'])

export async function createJob (ctx: AppContext, projectId: string, body: JobCreateBody): Promise<JobRow> {
  const requested = requestedMethod(body)
  const fromCheckpoint = (body.from_checkpoint as { type?: unknown } | null | undefined) ?? null
  // HFCheckpointParametersRequest: downloaded from the Hub while the job validates (src/hub/job-sources.ts)
  const fromHub = fromCheckpoint?.type === 'hf' ? parseHubCheckpoint(fromCheckpoint) : null
  if (fromHub && isCheckpointModel(body.model)) {
    throw errors.unsupportedParameter('from_checkpoint', 'a Hub checkpoint continues on a base model: pass that base as model.')
  }
  // FTCheckpointParameters: `type` defaults to 'ft' in the spec, so {} means this server's checkpoint
  if (fromCheckpoint !== null && !fromHub && !((fromCheckpoint.type ?? 'ft') === 'ft' && isCheckpointModel(body.model))) {
    throw errors.unsupportedParameter('from_checkpoint', 'this server cannot download checkpoints. To continue from one of its own, pass the checkpoint\'s fine_tuned_model_checkpoint as model (GET /v1/models lists them).')
  }
  if (fromHub && requested.type === 'spec-draft') {
    throw errors.unsupportedParameter('from_checkpoint', 'a spec-draft job trains a drafter for its model; to draft for a Hub fine-tune, pass its repository as model.')
  }
  const startingPoint = await resolveStartingPoint(ctx, projectId, body.model)
  // not on disk but a Hub repository's name: downloaded while the job validates its files
  const onHub = !startingPoint && await acceptHubModel(ctx, body.model, fromHub?.token ?? null)
  if (!startingPoint && !onHub) throw errors.unknownBaseModel(body.model)
  if (fromHub) await acceptHubCheckpoint(ctx, fromHub.repo, fromHub.token)
  const { hyperparameters, unknown } = requested.type === 'spec-draft'
    ? requested // a drafter for that model: a LoRA checkpoint is merged into it, never trained on
    : resolveSupervised(requested.given, requested.at, startingPoint)
  const integrations = body.integrations ? validateIntegrations(body.integrations) : null
  const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !KNOWN_REQUEST_KEYS.has(k)))
  const id = newJobId()
  if (startingPoint) await linkTrainingSources(ctx, id, startingPoint)
  const hub: HubCheckpoint | null = fromHub && {
    type: 'hf',
    repo: fromHub.repo,
    revision: fromHub.revision,
    ...(fromHub.token ? { sealed_token: await sealToken(ctx.config.dataDir, fromHub.token) } : {}),
  }
  try {
    return await insertNewJob(ctx, projectId, id, body, {
      method: requested.type, hyperparameters, unknown, integrations, extra, startingPoint, hub,
    })
  } catch (err) {
    await rm(jobDir(ctx, id), { recursive: true, force: true }) // no row: nothing else would remove it
    throw err
  }
}

interface Resolved {
  method: MethodType
  hyperparameters: JobHyperparameters
  unknown: string[]
  integrations: ReturnType<typeof validateIntegrations> | null
  extra: Record<string, unknown>
  startingPoint: StartingPoint | undefined // undefined: a Hub model, downloaded while validating
  hub: HubCheckpoint | null
}

async function insertNewJob (
  ctx: AppContext,
  projectId: string,
  id: string,
  body: JobCreateBody,
  r: Resolved
): Promise<JobRow> {
  const { method, hyperparameters, unknown, integrations, extra, startingPoint, hub } = r
  return await ctx.db.transaction().execute(async (trx) => {
    await checkTrainingFile(trx, projectId, 'training_file', body.training_file)
    if (body.validation_file) await checkTrainingFile(trx, projectId, 'validation_file', body.validation_file)
    const job = await insertJob(trx, {
      id,
      project_id: projectId,
      model: body.model,
      status: 'validating_files',
      training_file: body.training_file,
      validation_file: body.validation_file ?? null,
      hyperparameters,
      method: { type: method },
      integrations,
      seed: body.seed ?? 0,
      suffix: body.suffix ?? null,
      tags: body.tags ?? null,
      extra_body: body.extra_body ?? null,
      extra_fields: Object.keys(extra).length > 0 ? extra : null,
      created_at: nowSeconds(),
      finished_at: null,
      error: null,
      result_files: [],
      trained_tokens: 0,
      trained_steps: 0,
      total_steps: null,
      estimated_finish: null,
      fine_tuned_model: null,
      locked_by: null,
      locked_until: null,
      from_checkpoint: hub,
    })
    await appendEvent(trx, job.id, { message: `Created fine-tuning job: ${job.id}` })
    if (!startingPoint) {
      await appendEvent(trx, job.id, { message: `Model ${body.model} is not in the models directory: it is downloaded from the Hugging Face Hub while the job validates its files` })
    }
    if (hub) {
      await appendEvent(trx, job.id, { message: `Continuing from ${hub.repo}${hub.revision ? `@${hub.revision}` : ''} on the Hugging Face Hub: downloaded while the job validates its files` })
    }
    const { adapter, weights } = startingPoint ?? {}
    if (method === 'spec-draft') {
      if (startingPoint?.weights || adapter) await appendEvent(trx, job.id, { message: `Training a drafter for checkpoint ${body.model}${adapter ? ': its LoRA adapter is merged into the target model' : ''}` })
    } else if (adapter) {
      await appendEvent(trx, job.id, { message: `Continuing from checkpoint ${adapter.id}: its LoRA adapter (r=${adapter.lora.r}, alpha=${adapter.lora.alpha}) keeps training on ${adapter.appliesTo}` })
    } else if (weights) {
      await appendEvent(trx, job.id, { message: `Continuing from checkpoint ${weights.id}: its weights are the starting point` })
    }
    if (unknown.length > 0) {
      await appendEvent(trx, job.id, { level: 'warn', message: `Ignored unknown hyperparameters: ${unknown.join(', ')}` })
    }
    if (Object.keys(extra).length > 0) {
      await appendEvent(trx, job.id, { level: 'warn', message: `Ignored unknown request fields: ${Object.keys(extra).join(', ')}` })
    }
    // hf pushes the final checkpoint to the Hub (src/hub/push.ts)
    const notRun = (integrations ?? []).map(i => i.type).filter(t => !['hf', 'wandb', 'mlflow'].includes(t ?? ''))
    if (notRun.length > 0) {
      await appendEvent(trx, job.id, { level: 'warn', message: `Integrations are stored but not run (${notRun.join(', ')}): this server sends nothing to those services.` })
    }
    return job
  })
}

/** A supervised job's hyperparameters resolved; a LoRA checkpoint continued sets the adapter's. */
function resolveSupervised (given: JobCreateBody['hyperparameters'], at: string, from: StartingPoint | undefined) {
  const lora = from?.adapter?.lora
  const resolved = resolveHyperparameters(given, lora ? { lora: true, lora_r: lora.r, lora_alpha: lora.alpha } : {})
  if (lora) checkLoraContinuation(lora, resolved.hyperparameters, at)
  return resolved
}

/** A LoRA checkpoint keeps training its adapter: same rank and scale, on the same base. */
function checkLoraContinuation (lora: { r: number, alpha: number }, hp: Hyperparameters, at: string): void {
  if (!hp.lora) throw errors.unsupportedParameter(`${at}.lora`, 'this checkpoint is a LoRA adapter and continues as one; to fine-tune fully, start from its base model.')
  if (hp.lora_r !== lora.r) throw errors.unsupportedParameter(`${at}.lora_r`, `the checkpoint's adapter has lora_r ${lora.r}; leave lora_r out or set it to ${lora.r}.`)
  if (hp.lora_alpha !== lora.alpha) throw errors.unsupportedParameter(`${at}.lora_alpha`, `the checkpoint's adapter has lora_alpha ${lora.alpha}; leave lora_alpha out or set it to ${lora.alpha}.`)
}

async function checkTrainingFile (db: Kysely<Database>, projectId: string, param: 'training_file' | 'validation_file', id: string) {
  const file = await getFile(db, projectId, id)
  if (!file) throw errors.trainingFileNotFound(param, id)
  if (file.purpose !== 'fine-tune') throw errors.fileWrongPurpose(param, id, file.purpose)
}

/** Cancel: idempotent on a cancelled job, 409 on one that succeeded or failed. */
export async function cancelJob (db: Kysely<Database>, job: JobRow): Promise<JobRow> {
  if (job.status === 'cancelled') return job
  if (isTerminal(job.status)) throw errors.jobNotCancellable(job.id, job.status)
  // the event in the same transaction: a stream sees the job ended only with its last event there
  const updated = await db.transaction().execute(async (trx) => {
    const row = await updateJobIf(trx, job.id, statusesThatMayBecome('cancelled'), { status: 'cancelled', finished_at: nowSeconds(), estimated_finish: null })
    if (row) {
      await appendEvent(trx, job.id, { message: 'Fine-tuning job cancelled' })
      await enqueueJobWebhooks(trx, row, 'cancelled') // the outbox row commits with the status, or neither does
    }
    return row
  })
  if (!updated) {
    // The runner moved it meanwhile (to a terminal state, or cancelled already): answer from what is there now.
    const now = await getJobById(db, job.id)
    if (!now) throw errors.jobNotFound(job.id)
    if (now.status === 'cancelled') return now
    throw errors.jobNotCancellable(job.id, now.status)
  }
  return updated
}

/**
 * The runner's moves: a compare-and-set on the status (JOB_TRANSITIONS), with the event the user
 * reads, in one transaction. A job cancelled meanwhile is never overwritten; false then.
 */
type MoveEvent = Omit<NewEvent, 'type' | 'data'>
export async function moveJob (db: Kysely<Database>, jobId: string, to: JobStatus, set: Omit<JobChanges, 'status'> = {}, event?: MoveEvent | MoveEvent[]): Promise<boolean> {
  return await db.transaction().execute(async (trx) => {
    const row = await updateJobIf(trx, jobId, statusesThatMayBecome(to), { ...set, status: to })
    if (row && event) for (const e of [event].flat()) await appendEvent(trx, jobId, e)
    // a final status writes its webhooks' outbox rows in this transaction (src/webhooks/): none is lost
    if (row && isTerminal(to)) await enqueueJobWebhooks(trx, row, to)
    return row !== undefined
  })
}

/** Fails the job with a reason the user can act on, and lets go of its lease. */
export async function failJob (db: Kysely<Database>, jobId: string, error: JobError): Promise<boolean> {
  const message = error.message.length > 4000 ? `${error.message.slice(0, 4000)}…` : error.message
  return await moveJob(db, jobId, 'failed', {
    error: { ...error, message },
    finished_at: nowSeconds(),
    estimated_finish: null,
    locked_by: null,
    locked_until: null,
  }, { level: 'error', message: `Fine-tuning job failed: ${message}` })
}

export function jobRowToApi (row: JobRow): FineTuningJob {
  const method = methodToApi(row)
  return {
    ...row.extra_fields, // unknown request keys first, so they can never shadow a field of ours
    id: row.id,
    object: 'fine_tuning.job',
    created_at: row.created_at,
    model: row.model,
    status: row.status,
    training_file: row.training_file,
    validation_file: row.validation_file,
    hyperparameters: method.type === 'supervised' ? row.hyperparameters : null, // FineTuningJob: SupervisedHParameters | null
    method,
    integrations: row.integrations ? publicIntegrations(row.integrations) : null,
    from_checkpoint: row.from_checkpoint
      ? publicHubCheckpoint(row.from_checkpoint)
      : isCheckpointModel(row.model) ? { type: 'ft' as const } : null,
    organization_id: '',
    result_files: row.result_files,
    seed: row.seed,
    suffix: row.suffix ?? '',
    error: row.error,
    finished_at: row.finished_at,
    trained_tokens: row.trained_tokens,
    trained_steps: row.trained_steps,
    total_steps: row.total_steps,
    estimated_finish: row.estimated_finish,
    fine_tuned_model: row.fine_tuned_model,
    tags: row.tags,
    extra_body: row.extra_body,
  }
}

/** ft:<base>:<project>:<suffix>:<job>:ckpt-step-<N>, the last checkpoint's name being the job's
 *  model. <base> is the catalogue model at the root, also for a job that continued a checkpoint. */
export function checkpointModelName (job: Pick<JobRow, 'model' | 'suffix' | 'id'>, projectName: string, step: number): string {
  return `ft:${rootBaseId(job.model)}:${projectName}:${job.suffix ?? ''}:${job.id}:ckpt-step-${step}`
}

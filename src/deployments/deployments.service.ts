// Deployments (/v0/models, Nebius' custom models): a checkpoint of the project made a named model
// that inference requests can use. Created `validating`; validation (resolving the checkpoint to
// the folders that serve it, then the inference backend's own check) runs in the background and
// ends `active` or `error` with a reason. Deleted ones keep their row, so a name is never reused.
import { randomInt } from 'node:crypto'
import type { AppContext } from '../context.js'
import { ApiError, errors } from '../errors.js'
import { getCheckpoint } from '../fine-tuning/checkpoints.store.js'
import { isCheckpointModel, rootBaseId } from '../fine-tuning/continue-from.js'
import { isSpecDraft } from '../fine-tuning/job-method.js'
import { getJob } from '../fine-tuning/jobs.store.js'
import { nowSeconds } from '../ids.js'
import { resolveServedModel } from '../inference/resolve-model.js'
import type { DeployCheck } from '../inference/served-model.js'
import type { CustomModelInfo, DeploymentCreateBody, DeploymentKind } from './deployments.schemas.js'
import {
  type DeploymentRow, deploymentNameTaken, finishValidation, getDeployment, insertDeployment, markDeleted,
} from './deployments.store.js'

const SUFFIX_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
const randomSuffix = () => Array.from({ length: 4 }, () => SUFFIX_CHARS[randomInt(SUFFIX_CHARS.length)]).join('')

/** Nebius' shape, `<base>-LoRa:<name>-<4 chars>`; `-Full:` for full weights is ours (Nebius deploys LoRA only). */
export const deploymentName = (base: string, kind: DeploymentKind, name: string, suffix: string) =>
  `${base}-${kind === 'lora' ? 'LoRa' : 'Full'}:${name}-${suffix}`

/** A base id never holds ':' (catalog.ts SAFE_ID) and a checkpoint name starts with `ft:`: any other
 *  name with a ':' can only be a deployment's, so only those cost a lookup. */
export const isDeploymentName = (model: string) => model.includes(':') && !isCheckpointModel(model)

const SUPPORTED_SOURCE = "what can be deployed here is '<job_id>:<checkpoint_id>', a checkpoint of your project"

function parseSource (source: string): { jobId: string, checkpointId: string } {
  if (source.startsWith('file-')) {
    throw errors.unsupportedParameter('source', `a file uploaded to /v0/models/upload cannot be deployed; ${SUPPORTED_SOURCE}.`)
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source) || /^(www\.)?huggingface\.co\//i.test(source)) {
    throw errors.unsupportedParameter('source', `this server downloads nothing, so a URL (Hugging Face or other) cannot be deployed; ${SUPPORTED_SOURCE}.`)
  }
  const m = /^([^:]+):([^:]+)$/.exec(source)
  if (!m?.[1] || !m[2]) throw errors.deploymentSourceNotFound(source)
  return { jobId: m[1], checkpointId: m[2] }
}

/** A full name no deployment has had (62⁴ suffixes per short name, so a retry is all but never needed). */
async function freshName (ctx: AppContext, base: string, kind: DeploymentKind, name: string): Promise<string> {
  for (;;) {
    const full = deploymentName(base, kind, name, randomSuffix())
    if (!await deploymentNameTaken(ctx.db, full)) return full
  }
}

/** Stores the deployment as `validating`; the caller starts validateDeployment. 400s name the field. */
export async function createDeployment (
  ctx: AppContext,
  projectId: string,
  body: DeploymentCreateBody
): Promise<DeploymentRow> {
  const { jobId, checkpointId } = parseSource(body.source)
  const checkpoint = await getCheckpoint(ctx.db, projectId, jobId, checkpointId)
  const job = checkpoint && await getJob(ctx.db, projectId, jobId)
  if (!checkpoint || !job) throw errors.deploymentSourceNotFound(body.source)
  if (isSpecDraft(job.method)) throw errors.deploymentOfDrafter(body.source)
  const trainedOn = rootBaseId(checkpoint.fine_tuned_model_checkpoint)
  if (body.base_model !== trainedOn) throw errors.deploymentBaseMismatch(body.base_model, body.source, trainedOn)
  // a LoRA job's checkpoints are adapters (on a base or on a full checkpoint), a full job's are weights
  const kind: DeploymentKind = job.hyperparameters.lora === true ? 'lora' : 'full'
  return await insertDeployment(ctx.db, {
    name: await freshName(ctx, trainedOn, kind, body.name),
    project_id: projectId,
    base_model: trainedOn,
    source: body.source,
    description: body.description ?? null,
    job_id: jobId,
    checkpoint_id: checkpointId,
    checkpoint_model: checkpoint.fine_tuned_model_checkpoint,
    kind,
    status: 'validating',
    status_reason: null,
    context_length: null,
    created_at: nowSeconds(),
    deleted_at: null,
  })
}

/**
 * Resolves the checkpoint to the folders that serve it (linking them under the data dir), then asks
 * the inference backend's check, if there is one; stores `active` or `error` with the reason. Never
 * throws for a checkpoint that cannot be served; undefined when it was deleted meanwhile.
 * `onUnexpected` hears of errors that are not the API's own (their reason then names only the code).
 */
export async function validateDeployment (
  ctx: AppContext,
  row: DeploymentRow,
  check?: DeployCheck,
  onUnexpected?: (err: unknown) => void
): Promise<DeploymentRow | undefined> {
  let reason: string | null
  let contextLength: number | null = null
  try {
    const served = await resolveServedModel(ctx, row.project_id, row.checkpoint_model)
    if (served === undefined) {
      reason = `the base model '${row.base_model}' of its checkpoint is no longer available on this server`
    } else {
      reason = check ? await check(served) : null
      contextLength = served.contextLength
    }
  } catch (err) {
    if (err instanceof ApiError) {
      reason = err.message
    } else {
      onUnexpected?.(err)
      const code = (err as { code?: unknown }).code
      reason = `the checkpoint's files could not be loaded${typeof code === 'string' ? ` (${code})` : ''}`
    }
  }
  return await finishValidation(ctx.db, row.name, {
    status: reason === null ? 'active' : 'error',
    reason,
    contextLength: reason === null ? contextLength : null,
  })
}

/** The deployment, as deleted; a 404 when the project has none of that name (or it was deleted). */
export async function deleteDeployment (ctx: AppContext, projectId: string, name: string): Promise<DeploymentRow> {
  const row = await markDeleted(ctx.db, projectId, name)
  if (!row) throw errors.deploymentNotFound(name)
  return row
}

/** An inference request's `model` as a deployment: the active one of that name in the project;
 *  a 400 while it validates; undefined (a 404) when unknown, another project's, failed or deleted. */
export async function activeDeployment (
  ctx: AppContext,
  projectId: string,
  name: string
): Promise<DeploymentRow | undefined> {
  const row = await getDeployment(ctx.db, projectId, name)
  if (row?.status === 'validating') throw errors.modelStillValidating(name)
  return row?.status === 'active' ? row : undefined
}

export function deploymentRowToApi (row: DeploymentRow): CustomModelInfo {
  return {
    name: row.name,
    base_model: row.base_model,
    source: row.source,
    description: row.description,
    created_at: row.created_at,
    status: row.status,
    status_reason: row.status_reason,
    checkpoint_id: row.checkpoint_id,
    job_id: row.job_id,
    file_id: null,
    url: null,
    type: 'text2text',
    tags: [row.kind],
    use_cases: [],
    context_window_k: row.context_length === null ? null : Math.max(1, Math.round(row.context_length / 1024)),
  }
}

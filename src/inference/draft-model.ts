// `draft_model` of an inference request (the openai clients send it in extra_body): a checkpoint of
// one of the project's spec-draft jobs, an EAGLE-3 drafter the embedded engine decodes with
// speculatively. Its folder is hard-linked into <data>/served/<checkpoint_id>/ as any served
// checkpoint. It must have been trained for the model the request names: the drafter job's `model`
// must serve from the same folders (the same weights, and for a LoRA target the same adapter).
import { basename, join } from 'node:path'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { getFiles } from '../files/files.store.js'
import { checkpointNamed } from '../fine-tuning/checkpoints.store.js'
import { linkFolder } from '../fine-tuning/continue-from.js'
import { getJobById } from '../fine-tuning/jobs.store.js'
import { resolveServedModel, servedRoot } from './resolve-model.js'
import type { ServedModel } from './served-model.js'

export interface DraftModel {
  /** The drafter folder (config.json + model.safetensors) the worker loads. */
  dir: string
  /** Drafts per verify step; null: what the drafter was trained for (its config), else 3. */
  numSpeculativeTokens: number | null
}

export async function resolveDraftModel (
  ctx: AppContext,
  projectId: string,
  served: ServedModel,
  name: string,
  numSpeculativeTokens: number | null
): Promise<DraftModel> {
  const row = await checkpointNamed(ctx.db, projectId, name)
  if (!row) throw errors.draftModelNotFound(name)
  if (!row.drafter) throw errors.draftModelUnusable(name, 'it is not a drafter (a checkpoint of a spec-draft job)')
  const job = await getJobById(ctx.db, row.job_id)
  if (!job) throw errors.draftModelNotFound(name)
  const target = await resolveServedModel(ctx, projectId, job.model).catch(() => undefined)
  if (!target) throw errors.draftModelUnusable(name, `the model it was trained for (${job.model}) is no longer available`)
  if (target.weightsDir !== served.weightsDir || target.adapter?.dir !== served.adapter?.dir) {
    throw errors.draftModelUnusable(name, `it was trained for ${job.model}, not for ${served.name}`)
  }
  const files = await getFiles(ctx.db, projectId, row.result_files)
  if (files.length !== row.result_files.length) throw errors.draftModelUnusable(name, 'some of its result files were deleted')
  const named = files.map(f => ({ id: f.id, name: basename(f.filename.slice(f.filename.indexOf('/') + 1)) }))
  const dir = join(servedRoot(ctx), row.id)
  await linkFolder(ctx, { id: row.id, name, files: named }, dir, 'serve')
  return { dir, numSpeculativeTokens }
}

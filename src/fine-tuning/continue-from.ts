// Continuing from a checkpoint: a job whose `model` is one of this project's fine-tuned model
// names (a checkpoint's `fine_tuned_model_checkpoint`, or a job's `fine_tuned_model`), as OpenAI
// fine-tunes a fine-tuned model. A full fine-tune's checkpoint is a Hugging Face folder and becomes
// the weights to start from; a LoRA checkpoint's adapter keeps training on its base model.
import { readFile } from 'node:fs/promises'
import type { Kysely } from 'kysely'
import type { AppContext } from '../context.js'
import type { Database } from '../db/database.js'
import { errors } from '../errors.js'
import type { BaseModel } from '../models/catalog.js'

export interface CheckpointSource {
  id: string
  name: string
  kind: 'lora' | 'full'
  /** Result files as the trainer wrote them: `name` without the `<checkpoint_id>/` prefix. */
  files: Array<{ id: string, name: string }>
  lora?: { r: number, alpha: number }
}

export interface TrainingModel {
  /** The catalogue model at the root of the chain: tokenizer, chat template, and (unless a full
   *  checkpoint replaces them) the weights. */
  base: BaseModel
  checkpoint?: CheckpointSource
}

export const isCheckpointModel = (model: string) => model.startsWith('ft:')

/** `ft:<base>:…`: base ids never hold a ':' (catalog.ts SAFE_ID), so the base is the 2nd field. */
export const rootBaseId = (model: string) => (isCheckpointModel(model) ? model.split(':')[1] ?? '' : model)

/**
 * What `model` names for this project: a base model, or a checkpoint of one of its jobs. Undefined
 * when it names nothing the project may use (another project's checkpoint answers like an unknown
 * name). Throws a 400 when the checkpoint exists but cannot be trained from (files deleted).
 */
export async function resolveTrainingModel (ctx: AppContext, projectId: string, model: string): Promise<TrainingModel | undefined> {
  const base = ctx.models.find(rootBaseId(model))
  if (!base) return undefined
  if (!isCheckpointModel(model)) return { base }
  const row = await checkpointNamed(ctx.db, projectId, model)
  if (!row) return undefined
  const fileIds = JSON.parse(row.result_files) as string[]
  const files = await ctx.db.selectFrom('files').select(['id', 'filename'])
    .where('project_id', '=', projectId).where('id', 'in', fileIds.length > 0 ? fileIds : ['']).execute()
  if (files.length !== fileIds.length) throw errors.checkpointUnusable(model, 'some of its result files were deleted')
  const named = files.map(f => ({ id: f.id, name: f.filename.slice(f.filename.indexOf('/') + 1) }))
  const adapterConfig = named.find(f => f.name === 'adapter_config.json')
  if (!adapterConfig) return { base, checkpoint: { id: row.id, name: model, kind: 'full', files: named } }
  const cfg = JSON.parse(await readFile(ctx.blobs.pathOf(adapterConfig.id), 'utf8')) as { r?: unknown, lora_alpha?: unknown }
  if (typeof cfg.r !== 'number' || typeof cfg.lora_alpha !== 'number') throw errors.checkpointUnusable(model, 'its adapter_config.json has no r or lora_alpha')
  return { base, checkpoint: { id: row.id, name: model, kind: 'lora', files: named, lora: { r: cfg.r, alpha: cfg.lora_alpha } } }
}

async function checkpointNamed (db: Kysely<Database>, projectId: string, name: string) {
  // a job's fine_tuned_model is its last checkpoint's name, so one lookup serves both
  return await db.selectFrom('checkpoints')
    .innerJoin('fine_tuning_jobs', 'fine_tuning_jobs.id', 'checkpoints.job_id')
    .select(['checkpoints.id', 'checkpoints.result_files'])
    .where('checkpoints.fine_tuned_model_checkpoint', '=', name)
    .where('fine_tuning_jobs.project_id', '=', projectId)
    .executeTakeFirst()
}

// Continuing from a checkpoint: a job whose `model` is one of this project's fine-tuned model
// names (a checkpoint's `fine_tuned_model_checkpoint`, or a job's `fine_tuned_model`), as OpenAI
// fine-tunes a fine-tuned model. A full fine-tune's checkpoint is a Hugging Face folder and becomes
// the weights to start from; a LoRA checkpoint's adapter keeps training on the weights it was
// trained on (a base model, or a full checkpoint: its adapter_config.json names which).
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { copyFile, link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { basename } from 'node:path'
import type { AppContext } from '../context.js'
import { errors, type ModelUse } from '../errors.js'
import { getFiles } from '../files/files.store.js'
import type { BaseModel } from '../models/catalog.js'
import { checkpointNamed } from './checkpoints.store.js'
import { sourceDirs } from './job-dir.js'

export interface CheckpointSource {
  id: string
  name: string
  /** Result files as the trainer wrote them: `name` without the `<checkpoint_id>/` prefix. */
  files: Array<{ id: string, name: string }>
}

export interface AdapterSource extends CheckpointSource {
  lora: { r: number, alpha: number }
  /** What its adapter_config.json names as the base: a catalogue model or a full checkpoint. */
  appliesTo: string
}

/** What a new job trains from, resolved from its `model` (the runner hands the trainer folders:
 *  train-job.ts's ModelFolders). */
export interface StartingPoint {
  /** The catalogue model at the root of the chain: tokenizer and chat template, and the weights
   *  unless a full checkpoint replaces them. */
  base: BaseModel
  /** A full fine-tune's checkpoint whose folder replaces the base's weights. */
  weights?: CheckpointSource
  /** A LoRA checkpoint whose adapter keeps training. */
  adapter?: AdapterSource
}

export const isCheckpointModel = (model: string) => model.startsWith('ft:')

/** `ft:<base>:…`: base ids never hold a ':' (catalog.ts SAFE_ID), so the base is the 2nd field. */
export const rootBaseId = (model: string) => (isCheckpointModel(model) ? model.split(':')[1] ?? '' : model)

/**
 * What `model` names for this project: a base model, or a checkpoint of one of its jobs. Undefined
 * when it names nothing the project may use (another project's checkpoint answers like an unknown
 * name). Throws a 400 when the base model's architecture cannot be trained, or when the checkpoint
 * exists but cannot be trained from (files deleted), or is a drafter (a spec-draft job's: trained
 * from, served or drafted for, never).
 */
export async function resolveStartingPoint (
  ctx: AppContext,
  projectId: string,
  model: string,
  use: ModelUse = 'train',
  nested = false
): Promise<StartingPoint | undefined> {
  const base = ctx.models.find(rootBaseId(model))
  if (!base) return undefined
  // a folder the trainer would refuse: said now, not after the files have been tokenized
  if (base.unsupported) throw errors.unsupportedModel(base.id, base.unsupported, ctx.models.support.summary, use)
  if (!isCheckpointModel(model)) return { base }
  const ckpt = await checkpointSource(ctx, projectId, model, use)
  if (!ckpt) return undefined
  if (!('lora' in ckpt)) return { base, weights: ckpt }
  if (!isCheckpointModel(ckpt.appliesTo)) return { base, adapter: ckpt }
  // LoRA trained on a full checkpoint: that checkpoint's weights are what the adapter applies to
  const under = nested ? undefined : await resolveStartingPoint(ctx, projectId, ckpt.appliesTo, use, true)
  if (!under?.weights || under.adapter) throw errors.checkpointUnusable(model, `the model its adapter applies to (${ckpt.appliesTo}) is not available`, use)
  return { base, weights: under.weights, adapter: ckpt }
}

async function checkpointSource (
  ctx: AppContext,
  projectId: string,
  name: string,
  use: ModelUse
): Promise<CheckpointSource | AdapterSource | undefined> {
  const row = await checkpointNamed(ctx.db, projectId, name)
  if (!row) return undefined
  if (row.drafter) throw errors.drafterAsModel(name, use)
  const files = await getFiles(ctx.db, projectId, row.result_files)
  if (files.length !== row.result_files.length) throw errors.checkpointUnusable(name, 'some of its result files were deleted', use)
  const named = files.map(f => ({ id: f.id, name: basename(f.filename.slice(f.filename.indexOf('/') + 1)) }))
  const adapterConfig = named.find(f => f.name === 'adapter_config.json')
  if (!adapterConfig) return { id: row.id, name, files: named }
  let cfg: { r?: unknown, lora_alpha?: unknown, base_model_name_or_path?: unknown }
  try {
    cfg = JSON.parse(await readFile(ctx.blobs.pathOf(adapterConfig.id), 'utf8'))
  } catch (err) {
    throw errors.checkpointUnusable(name, `its adapter_config.json cannot be read (${(err as Error).message})`, use)
  }
  if (typeof cfg.r !== 'number' || typeof cfg.lora_alpha !== 'number') throw errors.checkpointUnusable(name, 'its adapter_config.json has no r or lora_alpha', use)
  const appliesTo = typeof cfg.base_model_name_or_path === 'string' ? cfg.base_model_name_or_path : rootBaseId(name)
  return { id: row.id, name, files: named, lora: { r: cfg.r, alpha: cfg.lora_alpha }, appliesTo }
}

/**
 * Links the checkpoint files a new job continues from into its own folder (sourceDirs), at
 * creation: blobs never change, so hard links cost nothing, and the job keeps its copy even if the
 * user deletes the checkpoint's result files meanwhile (the space is freed when the job's folder
 * is swept after it ends). A 400 if a file is already gone.
 */
export async function linkTrainingSources (ctx: AppContext, jobId: string, model: StartingPoint): Promise<void> {
  const dirs = sourceDirs(ctx, jobId)
  if (model.weights) await linkFolder(ctx, model.weights, dirs.weights)
  if (model.adapter) await linkFolder(ctx, model.adapter, dirs.adapter)
}

/** The checkpoint's result files hard-linked into `dir` (complete once it exists); a 400 if one is gone. */
export async function linkFolder (ctx: AppContext, source: CheckpointSource, dir: string, use: ModelUse = 'train'): Promise<void> {
  if (existsSync(dir)) return
  const tmp = `${dir}.tmp-${randomUUID()}`
  try {
    await mkdir(tmp, { recursive: true })
    for (const f of source.files) {
      const from = ctx.blobs.pathOf(f.id)
      const to = `${tmp}/${f.name}`
      await link(from, to).catch(async () => { await copyFile(from, to) }) // a copy across devices
    }
    await writeFile(`${tmp}/.complete`, '')
    await rename(tmp, dir)
  } catch (err) {
    const code = (err as { code?: string }).code
    // concurrent first uses (several requests for one checkpoint, or two API processes) each build
    // a copy: the first rename wins, and the others find the folder already whole
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && existsSync(`${dir}/.complete`)) return
    if (code === 'ENOENT') throw errors.checkpointUnusable(source.name, 'some of its result files were deleted', use)
    throw err
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

// `model` of an inference request → the folders that serve it (ServedModel). A base model serves
// from its own folder; a checkpoint (a job's fine_tuned_model or any fine_tuned_model_checkpoint)
// from its result files, hard-linked once into <data>/served/<checkpoint_id>/ (blobs never
// change, so the link costs nothing and survives a later delete of the result files). A deployment's
// name (/v0/models) serves its checkpoint once the deployment is active.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { AppContext } from '../context.js'
import { activeDeployment, isDeploymentName } from '../deployments/deployments.service.js'
import { linkFolder, resolveStartingPoint, type StartingPoint } from '../fine-tuning/continue-from.js'
import { modelDirForTraining } from '../runner/model-weights.js'
import type { ServedModel } from './served-model.js'

export const servedRoot = (ctx: Pick<AppContext, 'config'>) => join(ctx.config.dataDir, 'served')

/** The model a request names, or undefined when the project may not use it (unknown or another
 *  project's: the route answers both with the same 404). A 400 when it exists but cannot be served. */
export async function resolveServedModel (
  ctx: AppContext,
  projectId: string,
  name: string
): Promise<ServedModel | undefined> {
  if (isDeploymentName(name)) {
    // an active deployment (/v0/models) serves its checkpoint under the deployment's name
    const deployment = await activeDeployment(ctx, projectId, name)
    const served = deployment && await resolveServedModel(ctx, projectId, deployment.checkpoint_model)
    return served && { ...served, name }
  }
  const point = await resolveStartingPoint(ctx, projectId, name, 'serve')
  if (!point) return undefined
  return await servedFrom(ctx, name, point)
}

async function servedFrom (ctx: AppContext, name: string, point: StartingPoint): Promise<ServedModel> {
  let weightsDir: string
  let tokenizerDir = point.base.dir
  if (point.weights) {
    weightsDir = join(servedRoot(ctx), point.weights.id)
    await linkFolder(ctx, point.weights, weightsDir, 'serve')
    tokenizerDir = weightsDir // a full checkpoint carries the base's tokenizer and template (save_full)
  } else {
    weightsDir = await modelDirForTraining(ctx.config, point.base)
  }
  let adapter: ServedModel['adapter']
  if (point.adapter) {
    const dir = join(servedRoot(ctx), point.adapter.id)
    await linkFolder(ctx, point.adapter, dir, 'serve')
    adapter = { dir, r: point.adapter.lora.r, alpha: point.adapter.lora.alpha, checkpointId: point.adapter.id }
  }
  return {
    name,
    base: point.base,
    tokenizerDir,
    weightsDir,
    ...(adapter ? { adapter } : {}),
    ...(point.weights ? { fullCheckpointId: point.weights.id } : {}),
    contextLength: await contextLengthOf(weightsDir),
  }
}

async function contextLengthOf (weightsDir: string): Promise<number> {
  const config = JSON.parse(await readFile(join(weightsDir, 'config.json'), 'utf8')) as { max_position_embeddings?: unknown }
  const n = config.max_position_embeddings
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? n : 2048
}

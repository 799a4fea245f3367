// POST /v1/files/{file_id}/check: the dataset checked against a model exactly as a job would check
// it (the same pipeline as `opentune data check` and a job's validating_files), before any job
// exists — what the dashboard's New job page shows. Nothing is written.
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { datasetReport } from '../data/check-command.js'
import { prepareDataset } from '../data/index.js'
import { rootBaseId } from '../fine-tuning/continue-from.js'
import { HYPERPARAMETER_DEFAULTS } from '../fine-tuning/hyperparameters.js'
import type { FileRow } from './files.store.js'

export interface CheckRequest { model: string, context_length?: number, packing?: boolean, batch_size?: number }

export async function checkDataset (
  ctx: AppContext,
  file: FileRow,
  body: CheckRequest
): Promise<Record<string, unknown>> {
  const base = ctx.models.find(rootBaseId(body.model))
  if (!base) throw errors.unknownBaseModel(body.model)
  const batchSize = body.batch_size ?? HYPERPARAMETER_DEFAULTS.batch_size
  const result = await prepareDataset({
    path: ctx.blobs.pathOf(file.id),
    split: 'train',
    modelDir: base.dir, // the tokenizer and chat template; a checkpoint trains with its root base's
    contextLength: body.context_length ?? HYPERPARAMETER_DEFAULTS.context_length,
    packing: body.packing ?? HYPERPARAMETER_DEFAULTS.packing,
    batchSize,
  })
  return { object: 'file.check', file_id: file.id, model: body.model, ...datasetReport(result, batchSize) }
}

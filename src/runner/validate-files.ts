// validating_files → queued: the job's files go through the dataset pipeline (src/data), which
// writes the token shards the trainer reads; a bad file fails the job with line numbers.
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { AppContext } from '../context.js'
import { formatProblems, loadModelTokenizer, ModelFolderError, prepareDataset, type DatasetStats, type Split } from '../data/index.js'
import { rootBaseId } from '../fine-tuning/continue-from.js'
import { jobDir } from '../fine-tuning/job-dir.js'
import { failJob, moveJob } from '../fine-tuning/jobs.service.js'
import { getJobById, type JobRow } from '../fine-tuning/jobs.store.js'
import { prepareHubSources } from '../hub/job-sources.js'

export async function validateJobFiles (ctx: AppContext, job: JobRow, signal: AbortSignal): Promise<void> {
  // a Hub model not on disk, or from_checkpoint of type hf: downloaded first, with progress events
  if (!(await prepareHubSources(ctx, job, signal))) return
  job = (await getJobById(ctx.db, job.id)) ?? job // a Hub adapter set lora_r and lora_alpha to its own
  // either method's: supervised and spec-draft jobs both shape rows with context_length, packing,
  // batch_size and count total_steps with n_epochs
  const hp = job.hyperparameters
  const model = ctx.models.find(rootBaseId(job.model)) // a checkpoint continued has its base's tokenizer
  if (!model) {
    await failJob(ctx.db, job.id, { code: 'model_not_available', message: `Model '${job.model}' is no longer in the models directory.`, param: 'model' })
    return
  }
  let tokenizer
  try {
    tokenizer = await loadModelTokenizer(model.dir)
  } catch (err) {
    if (!(err instanceof ModelFolderError)) throw err
    await failJob(ctx.db, job.id, { code: 'invalid_model', message: `Model '${job.model}' cannot be used: ${err.message}`, param: 'model' })
    return
  }
  const dir = join(jobDir(ctx, job.id), 'data')
  await mkdir(dir, { recursive: true })
  const prepare = async (split: Split, fileId: string) => await prepareDataset({
    path: ctx.blobs.pathOf(fileId),
    split,
    modelDir: model.dir,
    model: tokenizer,
    contextLength: hp.context_length,
    packing: hp.packing,
    batchSize: hp.batch_size,
    outDir: join(dir, split),
    signal,
  })
  const train = await prepare('train', job.training_file)
  if (!train.ok) {
    await failJob(ctx.db, job.id, { code: 'invalid_training_file', message: formatProblems(train), param: 'training_file' })
    return
  }
  let valid: DatasetStats | null = null
  if (job.validation_file) {
    const result = await prepare('valid', job.validation_file)
    if (!result.ok) {
      await failJob(ctx.db, job.id, { code: 'invalid_validation_file', message: formatProblems(result), param: 'validation_file' })
      return
    }
    valid = result.stats
  }
  const t = train.stats
  const note = t.seqLen < hp.context_length ? ` (context_length ${hp.context_length} is capped at the model's ${t.seqLen} positions)` : ''
  const validNote = valid ? `; validation file: ${valid.examples} examples, ${valid.tokens} tokens` : ''
  await moveJob(ctx.db, job.id, 'queued', { total_steps: t.stepsPerEpoch * hp.n_epochs, locked_by: null, locked_until: null }, {
    message: `Files validated, moving job to queued state. Training file: ${t.examples} examples, ${t.tokens} tokens (${t.lossTokens} trained) in ${t.rows} rows of up to ${t.seqLen} tokens${note}${validNote}`,
  })
}

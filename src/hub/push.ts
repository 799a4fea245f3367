// The hf integration: once training has succeeded, the job's final checkpoint (its adapter, its full
// weights, or a spec-draft job's drafter folder) and a model card go to `output_repo_name` with the
// integration's token, in one commit through @huggingface/hub (createRepo, then uploadFiles:
// preupload, LFS batch + PUT for large files, commit).
// A push that fails fails neither the job nor its checkpoints: an error-level event says why.
import { openAsBlob } from 'node:fs'
import { createRepo, HubApiError, uploadFiles } from '@huggingface/hub'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { getFile, getFiles } from '../files/files.store.js'
import { listCheckpoints, type CheckpointRow } from '../fine-tuning/checkpoints.store.js'
import { rootBaseId } from '../fine-tuning/continue-from.js'
import { appendEvent } from '../fine-tuning/events.store.js'
import { isSpecDraft } from '../fine-tuning/job-method.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
import { modelCard } from './model-card.js'

interface HfExport { output_repo_name: string, api_token: string }

/** Never throws: whatever happens here, the job goes on to succeed. */
export async function pushResults (ctx: AppContext, job: JobRow, log: FastifyBaseLogger): Promise<void> {
  const targets = (job.integrations ?? []).filter(i => i.type === 'hf').map(i => i.hf as HfExport)
  if (targets.length === 0) return
  for (const target of targets) {
    try {
      await pushOne(ctx, job, target)
    } catch (err) {
      const why = pushFailure(err)
      log.warn({ repo: target.output_repo_name, why }, 'push to the Hub failed') // never the token
      await appendEvent(ctx.db, job.id, {
        level: 'error',
        message: `Pushing to the Hugging Face Hub repository ${target.output_repo_name} failed: ${why}. ` +
          'The job and its checkpoints are not affected; download them with GET /v1/files/{file_id}/content.',
        data: { repo: target.output_repo_name },
      }).catch(() => {})
    }
  }
}

async function pushOne (ctx: AppContext, job: JobRow, target: HfExport): Promise<void> {
  const checkpoint = await lastCheckpoint(ctx, job.id)
  if (!checkpoint) throw new Error('the job saved no checkpoint')
  const files = await getFiles(ctx.db, job.project_id, checkpoint.result_files)
  if (files.length !== checkpoint.result_files.length) throw new Error('some of the checkpoint\'s result files were deleted')
  const named = files.map(f => ({ path: f.filename.slice(f.filename.indexOf('/') + 1), blobPath: ctx.blobs.pathOf(f.id) }))
    .sort((a, b) => a.path.localeCompare(b.path))
  const card = modelCard({
    repo: target.output_repo_name,
    baseModel: rootBaseId(job.model),
    jobId: job.id,
    checkpoint: checkpoint.fine_tuned_model_checkpoint,
    step: checkpoint.step_number,
    kind: isSpecDraft(job.method) ? 'drafter' : named.some(f => f.path === 'adapter_config.json') ? 'lora' : 'full',
    target: job.model,
    trainingFile: (await getFile(ctx.db, job.project_id, job.training_file))?.filename ?? job.training_file,
    validationFile: job.validation_file
      ? (await getFile(ctx.db, job.project_id, job.validation_file))?.filename ?? job.validation_file
      : null,
    hyperparameters: job.hyperparameters,
    metrics: checkpoint.metrics,
  })
  const access = { hubUrl: ctx.config.hub.endpoint, accessToken: target.api_token }
  try {
    await createRepo({ repo: target.output_repo_name, ...access })
  } catch (err) {
    if (!(err instanceof HubApiError && err.statusCode === 409)) throw err // 409: it exists, so a new commit
  }
  const upload = [
    ...await Promise.all(named.map(async f => ({ path: f.path, content: await openAsBlob(f.blobPath) }))),
    { path: 'README.md', content: new Blob([card]) },
  ]
  const out = await uploadFiles({
    repo: target.output_repo_name,
    files: upload,
    commitTitle: `opentune ${job.id}: ${checkpoint.fine_tuned_model_checkpoint}`,
    useXet: false, // plain LFS (a PUT per large file), which every Hub and mirror takes
    ...access,
  })
  const paths = upload.map(f => f.path)
  await appendEvent(ctx.db, job.id, {
    message: `Pushed checkpoint ${checkpoint.fine_tuned_model_checkpoint} (step ${checkpoint.step_number}) to the ` +
      `Hugging Face Hub repository ${target.output_repo_name}: ${paths.join(', ')}` +
      (out?.commit.oid ? ` (commit ${out.commit.oid.slice(0, 12)})` : ''),
    data: { repo: target.output_repo_name, files: paths, commit: out?.commit.oid ?? null, checkpoint: checkpoint.id },
  })
}

async function lastCheckpoint (ctx: AppContext, jobId: string): Promise<CheckpointRow | undefined> {
  let last: CheckpointRow | undefined
  for (let after: string | undefined; ;) {
    const page = await listCheckpoints(ctx.db, jobId, { limit: 100, after })
    last = page.data.at(-1) ?? last
    if (!page.hasMore) return last
    after = last?.id
  }
}

function pushFailure (err: unknown): string {
  if (err instanceof HubApiError) {
    const said = err.message.split('. URL:')[0] ?? ''
    const hint = err.statusCode === 401 || err.statusCode === 403 ? ' (the integration\'s api_token cannot write there)' : ''
    return `HTTP ${err.statusCode}${hint}: ${said}`.slice(0, 500)
  }
  const cause = (err as { cause?: { code?: string } }).cause?.code
  return `${(err as Error).message}${cause ? ` (${cause})` : ''}`.slice(0, 500)
}

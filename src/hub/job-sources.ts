// validating_files, before the data pipeline: what a job needs from the Hugging Face Hub is
// downloaded — its base model when `model` names a Hub repository not on disk, and the repository
// of `from_checkpoint: {type: "hf"}` — with progress events; a failure fails the job naming its cause.
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { copyFile, link, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { modelInfo } from '@huggingface/hub'
import type { AppContext } from '../context.js'
import { rootBaseId } from '../fine-tuning/continue-from.js'
import { appendEvent, type NewEvent } from '../fine-tuning/events.store.js'
import { sourceDirs } from '../fine-tuning/job-dir.js'
import { failJob } from '../fine-tuning/jobs.service.js'
import { getJobById, updateJob, type JobRow } from '../fine-tuning/jobs.store.js'
import { downloadRepo, type DownloadProgress, type DownloadRequest } from './download.js'
import { HubError, hubAccess, hubFailure, type HubAccess } from './hub-access.js'
import { isHubRepoName, publicHubCheckpoint } from './hub-checkpoint.js'
import { unsealToken } from './sealed-token.js'

export const hubWorkDir = (ctx: Pick<AppContext, 'config'>) => join(ctx.config.modelsDir, '.hub')

const PROGRESS_EVERY_MS = 5_000
const CANCEL_POLL_MS = 1_000

/** True when the job can go on to its data; false once it has been failed. Throws when aborted. */
export async function prepareHubSources (ctx: AppContext, job: JobRow, shutdown: AbortSignal): Promise<boolean> {
  const base = rootBaseId(job.model)
  const needsBase = !ctx.models.find(base) && isHubRepoName(base)
  const from = job.from_checkpoint
  if (!needsBase && !from) return true
  // a download can take hours: a user's cancel stops it (what is on disk stays for the next job)
  const cancel = new AbortController()
  const watch = setInterval(() => {
    getJobById(ctx.db, job.id).then(now => { if (now?.status === 'cancelled') cancel.abort() }, () => {})
  }, CANCEL_POLL_MS)
  const signal = AbortSignal.any([shutdown, cancel.signal])
  const sealed = from?.sealed_token
  const token = sealed ? await unsealToken(ctx.config.dataDir, sealed) : null
  let repo = needsBase ? base : from?.repo ?? base
  try {
    if (ctx.config.hub.offline) {
      throw new HubError('hub_offline', `${repo} is not on disk, and HF_HUB_OFFLINE is set: nothing is downloaded from the Hugging Face Hub. Put the model under OPENTUNE_MODELS_DIR, or unset HF_HUB_OFFLINE.`)
    }
    const access = hubAccess(ctx.config.hub, token, signal)
    if (needsBase) {
      const dest = join(ctx.config.modelsDir, base) // where the catalogue finds it from now on
      const refuseConfig = ctx.models.support.unsupportedReason
      await download(ctx, job, { access, signal }, { repo: base, revision: null, dest, refuseConfig })
    }
    if (from) {
      repo = from.repo
      await continueFromHub(ctx, job, { access, signal }, from.repo, from.revision)
    }
    return true
  } catch (err) {
    shutdown.throwIfAborted() // shutting down: the job is validated again later, resuming the files
    if (cancel.signal.aborted) return false // cancelled: it has its status and event already
    const failure = hubFailure(err, repo, ctx.config.hub, ctx.config.modelsDir)
    if (!failure) throw err // ours: the runner fails the job as internal_error and logs it
    const param = failure.code === 'storage_full' || failure.code === 'hub_unreachable' ? null : repo === base ? 'model' : 'from_checkpoint'
    await failJob(ctx.db, job.id, { code: failure.code, message: failure.message, param })
    return false
  } finally {
    clearInterval(watch)
    // the token served this download only; it is not kept, sealed or not
    const used = from && sealed && !shutdown.aborted
    if (used) await updateJob(ctx.db, job.id, { from_checkpoint: publicHubCheckpoint(from) })
  }
}

type Wanted = Pick<DownloadRequest, 'repo' | 'revision' | 'dest' | 'refuseConfig'>

interface Via { access: HubAccess, signal: AbortSignal }

async function download (ctx: AppContext, job: JobRow, { access, signal }: Via, want: Wanted): Promise<string> {
  const events = eventQueue(ctx, job.id)
  let last = 0
  const progress = (p: DownloadProgress, force = false) => {
    if (!force && Date.now() - last < PROGRESS_EVERY_MS) return
    last = Date.now()
    events.add({
      message: `Downloaded ${p.files}/${p.totalFiles} files, ${mb(p.bytes)} of ${mb(p.totalBytes)} (${want.repo})`,
      data: { repo: want.repo, files: p.files, total_files: p.totalFiles, bytes: p.bytes, total_bytes: p.totalBytes },
    })
  }
  let files = 0
  try {
    const done = await downloadRepo({
      ...want,
      workDir: hubWorkDir(ctx),
      access,
      signal,
      onPlan: (plan) => {
        last = Date.now()
        events.add({
          message: `Downloading ${plan.repo}@${plan.commit.slice(0, 12)} from the Hugging Face Hub: ${plan.files} files, ${mb(plan.bytes)}`,
          data: { repo: plan.repo, commit: plan.commit, total_files: plan.files, total_bytes: plan.bytes },
        })
      },
      onProgress: (p) => { progress(p, p.files !== files); files = p.files },
      onWait: () => events.add({ message: `Waiting for the download of ${want.repo} that another job started` }),
    })
    events.add({ message: done.fetched ? `Downloaded ${want.repo} from the Hugging Face Hub` : `Using ${want.repo}, downloaded by another job` })
    return done.dir
  } finally {
    await events.flushed()
  }
}

/** The repo's files as the job's starting point: a PEFT adapter keeps training, full weights replace the base's. */
async function continueFromHub (ctx: AppContext, job: JobRow, via: Via, repo: string, revision: string | null) {
  const { access } = via
  // cached by commit: a later job asking for the branch gets what it points to then
  const info = await modelInfo({ name: repo, additionalFields: ['sha'], ...access, ...(revision ? { revision } : {}) })
  const commit = typeof info.sha === 'string' ? info.sha : (revision ?? 'main')
  const dest = join(hubWorkDir(ctx), 'checkpoints', `${repo.replace('/', '--')}@${commit}`)
  const dir = await download(ctx, job, via, { repo, revision: commit, dest })
  const dirs = sourceDirs(ctx, job.id)
  const base = rootBaseId(job.model)
  if (existsSync(join(dir, 'adapter_config.json'))) {
    const config = await readJson(join(dir, 'adapter_config.json'), repo)
    const { r, lora_alpha: alpha, base_model_name_or_path: on } = config
    if (typeof r !== 'number' || typeof alpha !== 'number') throw new HubError('invalid_model', `${repo}'s adapter_config.json has no r or lora_alpha.`)
    if (typeof on === 'string' && isHubRepoName(on) && on !== base) {
      throw new HubError('invalid_model', `${repo} is a LoRA adapter of ${on}, not of the job's model ${base}: create the job with model '${on}'.`)
    }
    if (!job.hyperparameters.lora) throw new HubError('invalid_model', `${repo} is a LoRA adapter and continues as one: create the job with hyperparameters.lora true.`)
    // the job's copy names its base as this server does, which is what its own checkpoints will say
    await placeFolder(dir, dirs.adapter, { 'adapter_config.json': JSON.stringify({ ...config, base_model_name_or_path: base }, null, 2) })
    await updateJob(ctx.db, job.id, { hyperparameters: { ...job.hyperparameters, lora_r: r, lora_alpha: alpha } })
    await appendEvent(ctx.db, job.id, { message: `Continuing from ${repo}@${commit.slice(0, 12)}: its LoRA adapter (r=${r}, alpha=${alpha}) keeps training on ${base}` })
  } else if (existsSync(join(dir, 'config.json'))) {
    const why = ctx.models.support.unsupportedReason(await readJson(join(dir, 'config.json'), repo))
    if (why) throw new HubError('unsupported_model', `${repo} cannot be fine-tuned here: ${why}`)
    await placeFolder(dir, dirs.weights, {})
    await appendEvent(ctx.db, job.id, { message: `Continuing from ${repo}@${commit.slice(0, 12)}: its weights are the starting point` })
  } else {
    throw new HubError('invalid_model', `${repo} holds neither a PEFT adapter (adapter_config.json) nor a model (config.json).`)
  }
}

async function readJson (path: string, repo: string): Promise<Record<string, unknown>> {
  try {
    const value: unknown = JSON.parse(await readFile(path, 'utf8'))
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>
  } catch {}
  throw new HubError('invalid_model', `${repo}'s ${basename(path)} is not a JSON object.`)
}

/** `from`'s files hard-linked into `to` (train-job.ts reads it once it holds .complete); `replace` written anew. */
async function placeFolder (from: string, to: string, replace: Record<string, string>): Promise<void> {
  if (existsSync(join(to, '.complete'))) return
  const tmp = `${to}.tmp-${randomUUID()}`
  try {
    await mkdir(tmp, { recursive: true })
    for (const name of await readdir(from)) {
      if (name.startsWith('.')) continue
      if (Object.hasOwn(replace, name)) continue
      const [src, dst] = [join(from, name), join(tmp, name)]
      await link(src, dst).catch(async () => { await copyFile(src, dst) }) // a copy across devices
    }
    for (const [name, text] of Object.entries(replace)) await writeFile(join(tmp, name), text)
    await writeFile(join(tmp, '.complete'), '')
    await rm(to, { recursive: true, force: true })
    await rename(tmp, to)
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

/** Events appended in order from synchronous callbacks; a failing append is logged by nobody, only lost. */
function eventQueue (ctx: AppContext, jobId: string) {
  let chain = Promise.resolve()
  return {
    add: (e: NewEvent) => { chain = chain.then(async () => { await appendEvent(ctx.db, jobId, e) }).catch(() => {}) },
    flushed: async () => { await chain },
  }
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 0)} MB`

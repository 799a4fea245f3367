// OPENTUNE_EXECUTOR=slurm against a real single-node Slurm (Debian's slurm-wlm and munge, started
// in a temporary folder by scripts/slurm/local-slurm.sh, CPU only), through the openai client and
// a listening service process: a job waits PENDING while the node is busy and ends like the local
// executor's; cancel leaves no Slurm job; a SIGKILLed runner's successor follows the same Slurm job;
// `scontrol requeue` resumes from saved state; a time limit fails the job; a job cancelled while
// no runner follows it has its Slurm job scancelled by the next runner's sweep. Skipped, saying why,
// where Slurm or PyTorch is missing. SQLite only: the executor's SQL is the job row's (both
// dialects' runner tests cover it), and a second pass on PostgreSQL would double the minutes.
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import OpenAI, { toFile } from 'openai'
import { loadConfig } from '../../src/config.js'
import { trainerEnv } from '../../src/runner/trainer-env.js'
import { createKeyWithCli, startServiceProcess, type ServiceProcess } from '../durability/service-process.js'

const ROOT = join(import.meta.dirname, '..', '..')
const SCRIPT = join(ROOT, 'scripts', 'slurm', 'local-slurm.sh')
const EXAMPLES = join(ROOT, 'examples', 'data')
// 4 steps an epoch, 3 epochs: long enough to act between the first checkpoint and the end
const HP = { n_epochs: 3, batch_size: 4, learning_rate: 3e-3, packing: false, lora: true, lora_r: 8, lora_alpha: 16 }
const TRAIN_ROWS = 16
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
const run = promisify(execFile)

interface Checkpoint { step_number: number, metrics: Record<string, number | null> }
interface Event { message: string, data: Record<string, unknown> | null }

let skip: string | null = null
let slurmDir = ''
let dataDir = ''
let service: ServiceProcess | undefined
let reference: ServiceProcess | undefined
let env: Record<string, string> = {}
let client: OpenAI
let localClient: OpenAI
let trainingFile = ''
let localTrainingFile = ''

const slurm = async (cmd: string, ...args: string[]) =>
  (await run(cmd, args, { env: { ...process.env, ...env } })).stdout

function missing (): string | null {
  const python = loadConfig({ ...process.env }).python
  try {
    execFileSync(python, ['-c', 'import torch'], { stdio: 'ignore' })
  } catch {
    return `no PyTorch for ${python} (npm run setup, or OPENTUNE_PYTHON)`
  }
  return null
}

async function startService (extra: Record<string, string> = {}): Promise<ServiceProcess> {
  return await startServiceProcess({ ...env, ...extra })
}

async function sdk (svc: ServiceProcess, e: Record<string, string>, project: string): Promise<OpenAI> {
  return new OpenAI({ apiKey: await createKeyWithCli(e, project), baseURL: `${svc.url}/v1`, maxRetries: 0 })
}

async function upload (api: OpenAI): Promise<string> {
  const rows = readFileSync(join(EXAMPLES, 'train.jsonl'), 'utf8').split('\n').slice(0, TRAIN_ROWS).join('\n') + '\n'
  return (await api.files.create({ file: await toFile(Buffer.from(rows), 'train.jsonl'), purpose: 'fine-tune' })).id
}

const createJob = async (api: OpenAI, file: string) =>
  (await api.fineTuning.jobs.create({ model: 'opentune/tiny-llama', training_file: file, seed: 7, hyperparameters: HP } as never)).id

async function events (api: OpenAI, id: string): Promise<Event[]> {
  return (await api.fineTuning.jobs.listEvents(id, { limit: 100 })).data as unknown as Event[] // oldest first
}

async function checkpoints (api: OpenAI, id: string): Promise<Checkpoint[]> {
  return (await api.fineTuning.jobs.checkpoints.list(id, { limit: 100 })).data as unknown as Checkpoint[]
}

/** Polls the job until `done`; a hang guard, not a speed bound (CPU training on a loaded machine). */
type Done = (job: Record<string, any>, ckpts: Checkpoint[]) => boolean
async function waitFor (api: OpenAI, id: string, done: Done, seen?: string[]) {
  const until = Date.now() + 900_000
  for (;;) {
    const job = await api.fineTuning.jobs.retrieve(id).catch(() => null) as Record<string, any> | null
    const ckpts = job ? await checkpoints(api, id).catch(() => []) : []
    if (job && seen && seen.at(-1) !== job.status) seen.push(job.status)
    if (job && done(job, ckpts)) return { job, ckpts }
    if (Date.now() > until) throw new Error(`timed out; job: ${JSON.stringify(job)}\n${service?.output() ?? ''}`)
    await sleep(150)
  }
}

const ended = (j: Record<string, any>) => ['succeeded', 'failed', 'cancelled'].includes(j.status)

/** The Slurm job ids (any state the controller still knows) of our attempts of `jobId`. */
async function slurmJobsOf (jobId: string): Promise<string[]> {
  const out = await slurm('squeue', '--noheader', '--states=all', '--format=%i %j')
  return out.split('\n').filter(l => l.includes(jobId)).map(l => l.split(' ')[0]!)
}

/** The one Slurm job id of the job once it runs (from the event the runner wrote). */
async function runningSlurmId (api: OpenAI, id: string): Promise<string> {
  await waitFor(api, id, (j, c) => j.status === 'running' && c.length >= 1)
  const ids = (await slurmJobsOf(id))
  assert.equal(ids.length, 1, `one Slurm job: ${ids.join(', ')}`)
  return ids[0]!
}

function assertSameRun (a: Checkpoint[], b: Checkpoint[]) {
  assert.deepEqual(b.map(c => c.step_number), a.map(c => c.step_number))
  for (const [i, c] of b.entries()) {
    for (const [k, v] of Object.entries(a[i]!.metrics)) {
      if (typeof v !== 'number') {
        assert.equal(c.metrics[k], v)
        continue
      }
      const close = Math.abs((c.metrics[k] as number) - v) <= 1e-4 * Math.max(1, Math.abs(v))
      assert.ok(close, `${k} at step ${c.step_number}: ${c.metrics[k]} vs ${v}`)
    }
  }
}

let referenceRun: Promise<Checkpoint[]>

describe('the Slurm executor on a real single-node Slurm', () => {
  before(async () => {
    skip = missing()
    if (skip) return
    slurmDir = await mkdtemp(join(tmpdir(), 'opentune-slurm-'))
    dataDir = await mkdtemp(join(tmpdir(), 'opentune-slurm-data-'))
    try {
      execFileSync('bash', [SCRIPT, 'start', slurmDir], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 })
    } catch (err) {
      skip = `a local Slurm could not be installed or started (${String((err as { stderr?: Buffer }).stderr ?? err).trim().slice(-300)})`
      return
    }
    const base = { OPENTUNE_DEVICE: 'cpu', SLURM_CONF: join(slurmDir, 'slurm.conf'), OPENTUNE_LEASE_SECONDS: '4' }
    env = {
      ...base,
      OPENTUNE_DATA_DIR: join(dataDir, 'slurm'),
      OPENTUNE_MODELS_DIR: join(dataDir, 'models'),
      OPENTUNE_EXECUTOR: 'slurm',
      OPENTUNE_SLURM_POLL_MS: '250',
      OPENTUNE_SLURM_TIME_LIMIT: '30',
      OPENTUNE_MAX_CONCURRENT_JOBS: '4',
    }
    // the same job on the local executor, for the figures the Slurm runs must match
    const localEnv = { ...base, OPENTUNE_DATA_DIR: join(dataDir, 'local'), OPENTUNE_MODELS_DIR: join(dataDir, 'models') }
    // the built-in model's weights, made once (deterministic) for both data dirs, outside the services
    const tiny = join('builtin-models', 'opentune', 'tiny-llama')
    const made = loadConfig({ ...process.env, ...env })
    await run(made.python, ['-m', 'opentune_trainer', 'init-tiny', '--out', join(made.dataDir, tiny)], { env: trainerEnv(made) })
    await cp(join(made.dataDir, tiny), join(dataDir, 'local', tiny), { recursive: true })
    reference = await startServiceProcess(localEnv)
    localClient = await sdk(reference, localEnv, 'local')
    localTrainingFile = await upload(localClient)
    service = await startService()
    client = await sdk(service, env, 'slurm')
    trainingFile = await upload(client)
  })

  after(async () => {
    await service?.kill('SIGKILL')
    await reference?.kill('SIGKILL')
    if (slurmDir) execFileSync('bash', [SCRIPT, 'stop', slurmDir], { stdio: 'ignore' })
    await rm(slurmDir, { recursive: true, force: true })
    await rm(dataDir, { recursive: true, force: true })
  })

  const guard = (t: TestContext) => { if (skip) t.skip(skip); return skip !== null }

  it('waits PENDING while the node is busy, runs, and ends as the local executor does', async (t) => {
    if (guard(t)) return
    // the runner's shared-storage check job first, then a job that keeps the one node busy
    while ((await slurm('squeue', '--noheader')).trim() !== '') await sleep(200)
    const busy = (await slurm('sbatch', '--parsable', '--job-name=busy', '--output=/dev/null', '--wrap=sleep 600')).trim()
    const statuses: string[] = []
    const id = await createJob(client, trainingFile)
    referenceRun = (async () => {
      const ref = await createJob(localClient, localTrainingFile)
      const { job, ckpts } = await waitFor(localClient, ref, ended)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
      return ckpts
    })()
    let pending: Event | undefined
    try {
      await waitFor(client, id, () => {
        void events(client, id).then(list => { pending ??= list.find(e => e.data?.slurm_state === 'PENDING') })
        return pending !== undefined
      }, statuses)
    } finally {
      await slurm('scancel', busy) // the node is free: the job starts
    }
    const event = pending!
    assert.equal(statuses.at(-1), 'queued', 'queued while Slurm keeps it pending')
    assert.match(event.message, /Slurm job \d+ is PENDING \((Resources|Priority)\)/)
    assert.notEqual(event.data?.slurm_job_id, busy)
    const { job, ckpts } = await waitFor(client, id, ended, statuses)
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    assert.deepEqual(statuses.filter(s => s !== 'validating_files'), ['queued', 'running', 'succeeded'])
    assert.equal((await slurmJobsOf(id)).length, 1)
    assertSameRun(await referenceRun, ckpts)
  })

  it('cancel scancels the Slurm job and keeps the checkpoints so far', async (t) => {
    if (guard(t)) return
    const id = await createJob(client, trainingFile)
    await runningSlurmId(client, id)
    await client.fineTuning.jobs.cancel(id)
    for (;;) {
      if ((await events(client, id)).some(e => e.message.startsWith('Training stopped at step'))) break
      await sleep(150)
    }
    assert.equal((await slurm('squeue', '--noheader')).trim(), '', 'no Slurm job left')
    const job = await client.fineTuning.jobs.retrieve(id)
    assert.equal(job.status, 'cancelled')
    assert.ok((await checkpoints(client, id)).length >= 1)
  })

  it('a runner SIGKILLed mid-job: the next one follows the same Slurm job to the end', async (t) => {
    if (guard(t)) return
    const id = await createJob(client, trainingFile)
    const slurmId = await runningSlurmId(client, id)
    await service!.kill('SIGKILL')
    service = await startService()
    client = new OpenAI({ apiKey: client.apiKey, baseURL: `${service.url}/v1`, maxRetries: 0 }) // its new port
    const { job, ckpts } = await waitFor(client, id, ended)
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    assert.deepEqual(await slurmJobsOf(id), [slurmId], 'not submitted again')
    assertSameRun(await referenceRun, ckpts)
    const metricSteps = (await events(client, id)).filter(e => e.data && 'train_loss' in e.data).map(e => e.data!.step)
    assert.equal(new Set(metricSteps).size, metricSteps.length, 'no step reported twice')
  })

  it('scontrol requeue: the job resumes from its saved state', async (t) => {
    if (guard(t)) return
    const id = await createJob(client, trainingFile)
    const slurmId = await runningSlurmId(client, id)
    await slurm('scontrol', 'requeue', slurmId)
    // Slurm holds a requeued job back (BeginTime) for a while; let it start again at once
    for (;;) {
      const state = (await slurm('squeue', '--noheader', '--states=all', `--jobs=${slurmId}`, '--format=%T')).trim()
      if (state === 'PENDING') break
      await sleep(200)
    }
    await slurm('scontrol', 'update', `JobId=${slurmId}`, 'StartTime=now')
    const { job, ckpts } = await waitFor(client, id, ended)
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    const messages = (await events(client, id)).map(e => e.message)
    assert.ok(messages.some(m => m.startsWith(`Slurm requeued job ${slurmId}`)), messages.join('\n'))
    assert.ok(messages.some(m => /^Fine-tuning job resumed from step [1-9]/.test(m)), messages.join('\n'))
    assert.deepEqual(await slurmJobsOf(id), [slurmId])
    assertSameRun(await referenceRun, ckpts)
  })

  it('a Slurm job that reaches its time limit fails the job with a TIMEOUT error', async (t) => {
    if (guard(t)) return
    const id = await createJob(client, trainingFile)
    const slurmId = await runningSlurmId(client, id)
    // the limit brought forward to now: Slurm ends the job as at the end of OPENTUNE_SLURM_TIME_LIMIT
    await slurm('scontrol', 'update', `JobId=${slurmId}`, 'EndTime=now')
    const { job } = await waitFor(client, id, ended)
    assert.equal(job.status, 'failed')
    assert.equal(job.error?.code, 'slurm_time_limit')
    assert.match(job.error?.message ?? '', new RegExp(`Slurm job ${slurmId} reached its time limit .*TIMEOUT`))
  })

  it('a job cancelled while no runner follows it: the next runner scancels its Slurm job', async (t) => {
    if (guard(t)) return
    const id = await createJob(client, trainingFile)
    const slurmId = await runningSlurmId(client, id)
    const saved = (await checkpoints(client, id)).length
    await service!.kill('SIGKILL')
    // held where it is: it cannot run to its end on its own, only the runner's scancel ends it
    await slurm('scontrol', 'suspend', slurmId)
    const stateOf = async () => (await slurm('squeue', '--noheader', '--states=all', `--jobs=${slurmId}`, '--format=%T')).trim()
    // the API alone (OPENTUNE_RUNNER=0): the cancel is stored, and nothing follows the Slurm job to stop it
    const api = await startService({ OPENTUNE_RUNNER: '0' })
    try {
      const apiClient = new OpenAI({ apiKey: client.apiKey, baseURL: `${api.url}/v1`, maxRetries: 0 })
      assert.equal((await apiClient.fineTuning.jobs.cancel(id)).status, 'cancelled')
      assert.equal(await stateOf(), 'SUSPENDED', 'the Slurm job outlives the cancel')
    } finally {
      await api.kill('SIGKILL')
    }
    service = await startService()
    client = new OpenAI({ apiKey: client.apiKey, baseURL: `${service.url}/v1`, maxRetries: 0 })
    const until = Date.now() + 300_000 // a hang guard: the runner's first sweep, then Slurm's KillWait
    while ((await slurm('squeue', '--noheader')).trim() !== '') {
      if (Date.now() > until) throw new Error(`the Slurm job is still there: ${await stateOf()}\n${service.output()}`)
      await sleep(250)
    }
    assert.equal(await stateOf(), 'CANCELLED')
    const job = await client.fineTuning.jobs.retrieve(id)
    assert.equal(job.status, 'cancelled')
    assert.ok((await checkpoints(client, id)).length >= saved, 'the checkpoints so far remain')
  })
})

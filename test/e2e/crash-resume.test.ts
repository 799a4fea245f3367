// Crashes with the real trainer: the service is SIGKILLed mid-training and restarted (the job
// resumes from saved state and ends exactly like an uninterrupted run); on PostgreSQL, one of two
// standalone runners is killed mid-job and the other takes the job over once the lease expires.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import { createKeyWithCli, startServiceProcess, type ServiceProcess } from '../durability/service-process.js'
import { DIALECTS, POSTGRES_URL, testConfig } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const EXAMPLES = join(ROOT, 'examples', 'data')
const HP = { n_epochs: 3, batch_size: 4, learning_rate: 3e-3, packing: false, lora: true, lora_r: 8, lora_alpha: 16 }
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))
// Short enough that a takeover comes soon, long enough that a heartbeat (every third of it) that is
// late on a loaded machine does not lose the job to the other runner before the test kills one.
const LEASE_SECONDS = '6'

interface Checkpoint { id: string, step_number: number, metrics: Record<string, number | null> }

function client (url: () => string, key: string) {
  const call = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${url()}/v1${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) } })
    const body = await res.json() as Record<string, any>
    if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`)
    return body
  }
  return {
    call,
    async upload (name: string) {
      const form = new FormData()
      form.set('purpose', 'fine-tune')
      form.set('file', new Blob([readFileSync(join(EXAMPLES, name))]), name)
      return (await call('/files', { method: 'POST', body: form })).id as string
    },
    async createJob (training: string, validation: string) {
      return (await call('/fine_tuning/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: training, validation_file: validation, seed: 7, hyperparameters: HP }) })).id as string
    },
    // A hang guard, not a speed bound: CPU training on a loaded machine takes minutes.
    async waitFor (
      jobId: string,
      done: (job: Record<string, any>, checkpoints: Checkpoint[]) => boolean,
      ms = 900_000
    ) {
      const until = Date.now() + ms
      for (;;) {
        const job = await call(`/fine_tuning/jobs/${jobId}`).catch(() => null)
        const checkpoints = job ? (await call(`/fine_tuning/jobs/${jobId}/checkpoints?limit=100`)).data as Checkpoint[] : []
        if (job && done(job, checkpoints)) return { job, checkpoints }
        if (Date.now() > until) throw new Error(`timed out; job: ${JSON.stringify(job)}`)
        await sleep(100)
      }
    },
  }
}

function assertSameRun (a: Checkpoint[], b: Checkpoint[]) {
  assert.deepEqual(b.map(c => c.step_number), a.map(c => c.step_number))
  for (const [i, c] of b.entries()) {
    for (const [k, v] of Object.entries(a[i]!.metrics)) {
      if (typeof v === 'number') assert.ok(Math.abs((c.metrics[k] as number) - v) <= 1e-4 * Math.max(1, Math.abs(v)), `${k} at step ${c.step_number}: ${c.metrics[k]} vs ${v}`)
      else assert.equal(c.metrics[k], v)
    }
  }
}

describe('sqlite: SIGKILL of the service while training', () => {
  let service: ServiceProcess | undefined
  let cleanup: (() => Promise<void>) | undefined
  after(async () => { await service?.kill('SIGKILL'); await cleanup?.() })

  it('resumes after a restart and ends with the same checkpoints as an uninterrupted run', async () => {
    const made = await testConfig('sqlite')
    cleanup = made.cleanup
    const env = { OPENTUNE_DATA_DIR: made.config.dataDir, OPENTUNE_MODELS_DIR: made.config.modelsDir, OPENTUNE_LEASE_SECONDS: LEASE_SECONDS, OPENTUNE_DEVICE: 'cpu' }
    const key = await createKeyWithCli(env, 'crash')
    service = await startServiceProcess(env)
    const api = client(() => service!.url, key)
    const training = await api.upload('train.jsonl')
    const validation = await api.upload('valid.jsonl')

    const reference = await api.createJob(training, validation)
    const uninterrupted = await api.waitFor(reference, j => j.status === 'succeeded' || j.status === 'failed')
    assert.equal(uninterrupted.job.status, 'succeeded', JSON.stringify(uninterrupted.job.error))

    const jobId = await api.createJob(training, validation)
    await api.waitFor(jobId, (_j, c) => c.length >= 1)
    await service.kill('SIGKILL')
    service = await startServiceProcess(env)
    const resumed = await api.waitFor(jobId, j => j.status === 'succeeded' || j.status === 'failed')
    assert.equal(resumed.job.status, 'succeeded', JSON.stringify(resumed.job.error))
    assertSameRun(uninterrupted.checkpoints, resumed.checkpoints)
    const events = (await api.call(`/fine_tuning/jobs/${jobId}/events?limit=100`)).data as Array<{ type: string, message: string, data: { step: number } }>
    const metricSteps = events.filter(e => e.type === 'metrics').map(e => e.data.step)
    assert.equal(new Set(metricSteps).size, metricSteps.length, 'no step reported twice')
    assert.equal(events.filter(e => e.message.startsWith('Checkpoint created')).length, 3, 'no checkpoint event twice')
  })
})

describe('postgres: two runners, one killed mid-job', { skip: !DIALECTS.includes('postgres') }, () => {
  const children: Array<ReturnType<typeof spawn>> = []
  let api: ServiceProcess | undefined
  let cleanup: (() => Promise<void>) | undefined
  after(async () => {
    for (const c of children) c.kill('SIGKILL')
    await api?.kill('SIGKILL')
    await cleanup?.()
  })

  it('hands the job to the other runner after the lease and finishes it', async () => {
    const made = await testConfig('postgres')
    cleanup = made.cleanup
    const env = {
      OPENTUNE_DATA_DIR: made.config.dataDir,
      OPENTUNE_MODELS_DIR: made.config.modelsDir,
      OPENTUNE_LEASE_SECONDS: LEASE_SECONDS,
      OPENTUNE_DEVICE: 'cpu',
      OPENTUNE_DATABASE_URL: POSTGRES_URL,
      OPENTUNE_DATABASE_SCHEMA: made.config.databaseSchema!,
    }
    const key = await createKeyWithCli(env, 'runners')
    api = await startServiceProcess({ ...env, OPENTUNE_RUNNER: '0' })
    for (let i = 0; i < 2; i++) {
      children.push(spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'runner'], { cwd: ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: 'ignore' }))
    }
    const http = client(() => api!.url, key)
    const jobId = await http.createJob(await http.upload('train.jsonl'), await http.upload('valid.jsonl'))
    await http.waitFor(jobId, (j, c) => j.status === 'running' && c.length >= 1)
    const db = new pg.Client({ connectionString: POSTGRES_URL })
    await db.connect()
    try {
      const { rows } = await db.query(`SELECT locked_by FROM "${env.OPENTUNE_DATABASE_SCHEMA}".fine_tuning_jobs WHERE id = $1`, [jobId])
      const pid = Number(/^runner-.+-(\d+)-[0-9a-f]+$/.exec(rows[0].locked_by)?.[1])
      const holder = children.find(c => c.pid === pid)
      assert.ok(holder, `a runner of ours holds the job (${rows[0].locked_by})`)
      holder.kill('SIGKILL')
      const done = await http.waitFor(jobId, j => j.status === 'succeeded' || j.status === 'failed')
      assert.equal(done.job.status, 'succeeded', JSON.stringify(done.job.error))
      assert.deepEqual(done.checkpoints.map(c => c.step_number), [24, 48, 72])
    } finally {
      await db.end()
    }
  })
})

// The runner with the real data pipeline and a scripted fake trainer (test/fixtures/fake-trainer.mjs):
// status moves, events, checkpoints with downloadable result files, failures, cancel, limits,
// shutdown-and-resume, and a crashed runner's job taken over after its lease.
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { sql } from 'kysely'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { claimJob } from '../../src/runner/queue.js'
import { Runner } from '../../src/runner/runner.js'
import { validateJobFiles } from '../../src/runner/validate-files.js'
import { createJob, DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')
const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const TRAIN = readFileSync(join(EXAMPLES, 'train.jsonl'), 'utf8')
const VALID = readFileSync(join(EXAMPLES, 'valid.jsonl'), 'utf8')
const JOBS = '/v1/fine_tuning/jobs'

function makeRunner (env: TestEnv, opts: { stopGraceMs?: number } = {}) {
  return new Runner(env.ctx, { log: env.app.log, pollMs: 50, trainerCommand: [process.execPath, join(FIXTURES, 'fake-trainer.mjs')], stopGraceMs: opts.stopGraceMs ?? 3000 })
}

async function waitFor<T> (what: string, fn: () => Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function newJob (env: TestEnv, hyperparameters: Record<string, unknown> = {}, withValidation = true) {
  const training = await uploadFile(env, { content: TRAIN })
  const validation = withValidation ? await uploadFile(env, { content: VALID }) : undefined
  const res = await createJob(env, { training_file: training, ...(validation ? { validation_file: validation } : {}), hyperparameters: { lora: true, n_epochs: 3, batch_size: 8, ...hyperparameters } })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().id as string
}

const get = async (env: TestEnv, url: string) => (await env.app.inject({ url, headers: env.auth() })).json()

/** A runner trains until the job has a checkpoint, then stops as a shutting-down service does. */
async function trainUntilFirstCheckpointThenStop (env: TestEnv, jobId: string): Promise<void> {
  const runner = makeRunner(env)
  runner.start()
  await waitFor('a checkpoint', async () => (await get(env, `${JOBS}/${jobId}/checkpoints`)).data.length > 0)
  await runner.stop()
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: runner`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'ok', OPENTUNE_LEASE_SECONDS: '2' }) })
    after(async () => { await env.close() })

    it('validates, trains and publishes checkpoints, events and result files', async () => {
      const jobId = await newJob(env)
      await makeRunner(env).drain()
      const job = await get(env, `${JOBS}/${jobId}`)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
      assert.ok(job.total_steps > 0)
      assert.equal(job.trained_steps, job.total_steps)
      assert.ok(job.trained_tokens > 0)
      assert.ok(job.finished_at >= job.created_at)
      assert.equal(job.result_files.length, 1)
      const checkpoints = (await get(env, `${JOBS}/${jobId}/checkpoints`)).data
      assert.equal(checkpoints.length, 3)
      assert.deepEqual(checkpoints.map((c: { step_number: number }) => c.step_number), [1, 2, 3].map(e => e * job.total_steps / 3))
      assert.equal(job.fine_tuned_model, checkpoints[2].fine_tuned_model_checkpoint)
      assert.match(job.fine_tuned_model, new RegExp(`^ft:opentune/tiny-llama:main::${jobId}:ckpt-step-\\d+$`))
      for (const c of checkpoints) {
        assert.notEqual(c.metrics.full_valid_loss, null)
        assert.equal(c.result_files.length, 2)
        const names = []
        for (const fileId of c.result_files) {
          const meta = await get(env, `/v1/files/${fileId}`)
          assert.equal(meta.purpose, 'fine-tune-results')
          names.push(meta.filename)
          const content = await env.app.inject({ url: `/v1/files/${fileId}/content`, headers: env.auth() })
          assert.match(content.body, new RegExp(`at step ${c.step_number}`))
        }
        assert.deepEqual(names.sort(), [`${c.id}/adapter_config.json`, `${c.id}/adapter_model.safetensors`])
      }
      const csv = await env.app.inject({ url: `/v1/files/${job.result_files[0]}/content`, headers: env.auth() })
      const rows = csv.body.trim().split('\n')
      assert.match(rows[0] ?? '', /^step,epoch,train_loss,train_mean_token_accuracy,valid_loss/)
      assert.equal(rows.length, job.total_steps + 1)
      const events = (await get(env, `${JOBS}/${jobId}/events?limit=100`)).data.map((e: { message: string }) => e.message)
      for (const expected of [/^Created fine-tuning job/, /^Files validated, moving job to queued state. Training file: 96 examples/, /^Fine-tuning job started$/,
        /^Step 1\/\d+: training loss=/, /^Checkpoint created at step \d+ with Snapshot ID: ft:/, /^New fine-tuned model created: ft:/, /^The job has successfully completed$/]) {
        assert.ok(events.some((m: string) => expected.test(m)), `an event matching ${expected}; got:\n${events.join('\n')}`)
      }
    })

    it('fails a job whose training file is bad, naming the lines', async () => {
      const bad = await uploadFile(env, { content: TRAIN.split('\n').slice(0, 3).join('\n') + '\nnot json\n{"messages": []}\n' })
      const res = await createJob(env, { training_file: bad })
      await makeRunner(env).drain()
      const job = await get(env, `${JOBS}/${res.json().id}`)
      assert.equal(job.status, 'failed')
      assert.equal(job.error.code, 'invalid_training_file')
      assert.equal(job.error.param, 'training_file')
      assert.match(job.error.message, /line 4/)
      assert.match(job.error.message, /line 5/)
    })

    it('fails with the trainer\'s own error, a missing PyTorch, or a crash — never hangs', async () => {
      const cases: Array<[Record<string, string>, string, RegExp]> = [
        [{ FAKE_TRAINER_MODE: 'error' }, 'invalid_model', /model.safetensors is missing/],
        [{ FAKE_TRAINER_MODE: 'notorch' }, 'trainer_unavailable', /PyTorch is not installed/],
        [{ FAKE_TRAINER_MODE: 'crash' }, 'internal_error', /RuntimeError: something broke/],
        [{ FAKE_TRAINER_MODE: 'oom' }, 'out_of_memory', /out of memory/],
        [{ OPENTUNE_PYTHON: '/nonexistent/python3' }, 'trainer_unavailable', /nonexistent\/python3/],
      ]
      for (const [envVars, code, message] of cases) {
        const mode = JSON.stringify(envVars)
        const scoped = await makeTestEnv(dialect, envVars)
        try {
          const jobId = await newJob(scoped, {}, false)
          await makeRunner(scoped).drain()
          const job = await get(scoped, `${JOBS}/${jobId}`)
          assert.equal(job.status, 'failed', mode)
          assert.equal(job.error.code, code)
          assert.match(job.error.message, message)
        } finally {
          await scoped.close()
        }
      }
    })

    it('cancels a running job within seconds and keeps its checkpoints', async () => {
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'slow' })
      try {
        const jobId = await newJob(scoped, { batch_size: 4 })
        const runner = makeRunner(scoped)
        const done = runner.drain()
        await waitFor('a checkpoint', async () => (await get(scoped, `${JOBS}/${jobId}/checkpoints`)).data.length > 0)
        const t0 = Date.now()
        const res = await scoped.app.inject({ method: 'POST', url: `${JOBS}/${jobId}/cancel`, headers: scoped.auth() })
        assert.equal(res.json().status, 'cancelled')
        await done
        assert.ok(Date.now() - t0 < 5000, 'trainer stopped within a few seconds')
        const job = await get(scoped, `${JOBS}/${jobId}`)
        assert.equal(job.status, 'cancelled')
        assert.equal(job.estimated_finish, null)
        const checkpoints = (await get(scoped, `${JOBS}/${jobId}/checkpoints`)).data
        assert.ok(checkpoints.length >= 1 && checkpoints.length < 3)
        const file = await scoped.app.inject({ url: `/v1/files/${checkpoints[0].result_files[0]}/content`, headers: scoped.auth() })
        assert.equal(file.statusCode, 200)
      } finally {
        await scoped.close()
      }
    })

    it('runs one job at a time with a limit of one: the second waits in queued', async () => {
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'slow', FAKE_TRAINER_STEP_MS: '30' })
      try {
        const first = await newJob(scoped, {}, false)
        const second = await newJob(scoped, {}, false)
        const runner = makeRunner(scoped)
        const done = runner.drain()
        await waitFor('first running', async () => (await getJobById(scoped.ctx.db, first))?.status === 'running')
        await waitFor('second queued', async () => (await getJobById(scoped.ctx.db, second))?.status === 'queued')
        assert.equal((await getJobById(scoped.ctx.db, second))?.status, 'queued')
        await done
        assert.equal((await getJobById(scoped.ctx.db, first))?.status, 'succeeded')
        assert.equal((await getJobById(scoped.ctx.db, second))?.status, 'succeeded')
      } finally {
        await scoped.close()
      }
    })

    it('pauses on shutdown and resumes without duplicating checkpoints or events', async () => {
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'slow' })
      try {
        const jobId = await newJob(scoped, { batch_size: 4 })
        await trainUntilFirstCheckpointThenStop(scoped, jobId)
        const paused = await get(scoped, `${JOBS}/${jobId}`)
        assert.equal(paused.status, 'queued')
        await makeRunner(scoped).drain()
        const job = await get(scoped, `${JOBS}/${jobId}`)
        assert.equal(job.status, 'succeeded')
        const steps = (await get(scoped, `${JOBS}/${jobId}/checkpoints`)).data.map((c: { step_number: number }) => c.step_number)
        assert.deepEqual(steps, [1, 2, 3].map(e => e * job.total_steps / 3))
        const events = (await get(scoped, `${JOBS}/${jobId}/events?limit=100`)).data
        const metricSteps = events.filter((e: { type: string }) => e.type === 'metrics').map((e: { data: { step: number } }) => e.data.step)
        assert.equal(new Set(metricSteps).size, metricSteps.length, 'no metrics event twice')
        assert.ok(events.some((e: { message: string }) => /resumed from step/.test(e.message)))
      } finally {
        await scoped.close()
      }
    })

    it('removes the token shards of a job cancelled while queued', async () => {
      const jobId = await newJob(env, {}, false)
      await validateJobFiles(env.ctx, (await getJobById(env.ctx.db, jobId))!, new AbortController().signal)
      const dir = join(env.config.dataDir, 'jobs', jobId)
      assert.ok(existsSync(join(dir, 'data', 'train', 'manifest.json')))
      const res = await env.app.inject({ method: 'POST', url: `${JOBS}/${jobId}/cancel`, headers: env.auth() })
      assert.equal(res.json().status, 'cancelled')
      const runner = makeRunner(env)
      runner.start()
      try {
        await waitFor('the job dir to go', async () => !existsSync(dir))
      } finally {
        await runner.stop()
      }
    })

    it('survives a database error during validation: no unhandled rejection, no hot retry loop', async () => {
      const scoped = await makeTestEnv(dialect)
      const unhandled: unknown[] = []
      const onUnhandled = (err: unknown) => { unhandled.push(err) }
      process.on('unhandledRejection', onUnhandled)
      try {
        const jobId = await newJob(scoped, {}, false)
        await sql`ALTER TABLE job_events RENAME TO job_events_gone`.execute(scoped.ctx.db) // a database that fails every write to events
        const runner = makeRunner(scoped)
        runner.start()
        await new Promise(resolve => setTimeout(resolve, 1000))
        await runner.stop()
        await sql`ALTER TABLE job_events_gone RENAME TO job_events`.execute(scoped.ctx.db)
        assert.deepEqual(unhandled, [])
        const job = await getJobById(scoped.ctx.db, jobId)
        assert.equal(job?.status, 'validating_files', 'left to be validated again')
        assert.ok((job?.locked_until ?? 0) > Date.now(), 'after its lease runs out, not in a hot loop')
      } finally {
        process.off('unhandledRejection', onUnhandled)
        await scoped.close()
      }
    })

    it('registers on resume a checkpoint whose line was never read', async () => {
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'slow' })
      try {
        const jobId = await newJob(scoped, { batch_size: 4 })
        await trainUntilFirstCheckpointThenStop(scoped, jobId)
        // As if the service had died between the trainer writing the checkpoint and reading its line.
        const [lost] = (await get(scoped, `${JOBS}/${jobId}/checkpoints`)).data
        await scoped.ctx.db.deleteFrom('checkpoints').where('id', '=', lost.id).execute()
        await makeRunner(scoped).drain()
        const job = await get(scoped, `${JOBS}/${jobId}`)
        assert.equal(job.status, 'succeeded')
        const steps = (await get(scoped, `${JOBS}/${jobId}/checkpoints`)).data.map((c: { step_number: number }) => c.step_number)
        assert.deepEqual(steps.sort((a: number, b: number) => a - b), [1, 2, 3].map(e => e * job.total_steps / 3))
      } finally {
        await scoped.close()
      }
    })

    it('keeps going when a step reports no loss (a diverged step), and counts no shutdown as an attempt', async () => {
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'slow', FAKE_TRAINER_STEP_MS: '40', FAKE_TRAINER_NULL_LOSS: '1' })
      try {
        const jobId = await newJob(scoped, { batch_size: 2 }, false)
        for (let i = 0; i < 7; i++) {
          const runner = makeRunner(scoped)
          runner.start()
          await waitFor('running', async () => (await getJobById(scoped.ctx.db, jobId))?.status === 'running')
          await runner.stop()
        }
        await makeRunner(scoped).drain()
        const job = await get(scoped, `${JOBS}/${jobId}`)
        assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
        assert.equal(job.trained_steps, job.total_steps)
        const events = (await get(scoped, `${JOBS}/${jobId}/events?limit=100`)).data.map((e: { message: string }) => e.message)
        assert.ok(events.some((m: string) => /training loss=n\/a/.test(m)))
      } finally {
        await scoped.close()
      }
    })

    it('takes over a job whose runner died, once the lease expires', async () => {
      const jobId = await newJob(env, {}, false)
      await validateJobFiles(env.ctx, (await getJobById(env.ctx.db, jobId))!, new AbortController().signal)
      assert.equal((await getJobById(env.ctx.db, jobId))?.status, 'queued')
      const dead = await claimJob(env.ctx.db, env.ctx.store.dialect, 'train', 'runner-that-died', 1500)
      assert.equal(dead?.id, jobId)
      const t0 = Date.now()
      await makeRunner(env).drain() // nothing to claim before the lease runs out…
      assert.equal((await getJobById(env.ctx.db, jobId))?.status, 'queued')
      await waitFor('lease expiry', async () => Date.now() - t0 > 1600)
      await makeRunner(env).drain() // …then it is taken over and finished
      assert.equal((await getJobById(env.ctx.db, jobId))?.status, 'succeeded')
    })
  })
}

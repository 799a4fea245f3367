// GET /v1/fine_tuning/jobs/{id}/metrics (docs/metrics.md): every optimizer step stored and listed,
// paged by after_step/limit, downsampled by max_points keeping the first, last and validation steps;
// another project's job is a 404. On both stores with the scripted fake trainer; the real trainer's
// 36-step run (SQLite only, as test/e2e/real-training.test.ts) checks each step against its metrics
// event and the job's metrics CSV.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { downsample } from '../../src/fine-tuning/metrics.routes.js'
import { dropMetricsAfter, listStepMetrics, recordStepMetrics } from '../../src/fine-tuning/metrics.store.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { startService, type Service } from '../../src/server.js'
import { createJob, DIALECTS, makeTestEnv, testConfig, uploadFile, type TestEnv } from '../helper.js'
import { get, JOBS, makeRunner, newGate, waitFor } from '../runner/helpers.js'

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const TRAIN = readFileSync(join(EXAMPLES, 'train.jsonl'), 'utf8') // 96 examples
const VALID = readFileSync(join(EXAMPLES, 'valid.jsonl'), 'utf8')
// 96 examples in batches of 8 for 3 epochs: 36 steps, a checkpoint (and validation) at 12, 24 and 36
const HP = { n_epochs: 3, batch_size: 8, learning_rate: 3e-3, packing: false }
const STEPS = 36
const VALIDATED = [12, 24, 36]

interface Point { step: number, train_loss: number | null, valid_loss: number | null, [k: string]: unknown }

describe('downsample', () => {
  const steps = Array.from({ length: 100 }, (_v, i) => i + 1)
  it('keeps everything when there are no more points than asked', () => {
    assert.deepEqual(downsample(steps.slice(0, 5), 5, () => false), [1, 2, 3, 4, 5])
  })
  it('keeps the first, the last and the marked ones, and spaces the rest evenly', () => {
    const picked = downsample(steps, 10, s => s === 50)
    assert.equal(picked.length, 10)
    assert.deepEqual([picked[0], picked.at(-1)], [1, 100])
    assert.ok(picked.includes(50))
    assert.deepEqual(picked, [...picked].sort((a, b) => a - b))
    const gaps = picked.slice(1).map((s, i) => s - (picked[i] as number))
    assert.ok(Math.max(...gaps) <= 20, `gaps ${gaps.join(',')}`)
  })
  it('keeps every marked point even when they alone are more than asked', () => {
    assert.deepEqual(downsample(steps, 2, s => s % 25 === 0), [1, 25, 50, 75, 100])
  })
})

for (const dialect of DIALECTS) {
  describe(`${dialect}: job metrics series`, () => {
    let env: TestEnv
    let jobId: string
    before(async () => {
      env = await makeTestEnv(dialect)
      const training = await uploadFile(env, { content: TRAIN })
      const validation = await uploadFile(env, { content: VALID })
      const res = await createJob(env, { training_file: training, validation_file: validation, hyperparameters: HP })
      assert.equal(res.statusCode, 200, res.body)
      jobId = res.json().id as string
      const runner = makeRunner(env)
      runner.start()
      try {
        await waitFor('the job to finish', async () => (await get(env, `${JOBS}/${jobId}`)).status === 'succeeded')
      } finally {
        await runner.stop()
      }
    })
    after(async () => { await env.close() })

    const metrics = async (query = '', key?: string) =>
      await env.app.inject({ url: `${JOBS}/${jobId}/metrics${query}`, headers: env.auth(key) })

    it('lists every step once, in order, with validation values at the checkpoints only', async () => {
      const res = await metrics()
      assert.equal(res.statusCode, 200, res.body)
      const body = res.json() as { object: string, data: Point[], has_more: boolean }
      assert.equal(body.object, 'list')
      assert.equal(body.has_more, false)
      assert.deepEqual(body.data.map(p => p.step), Array.from({ length: STEPS }, (_v, i) => i + 1))
      for (const p of body.data) {
        assert.equal(p.train_loss, 3 / p.step) // the fake trainer's loss
        assert.equal(p.tokens_per_second, null, 'the fake trainer reports 0 s steps')
        if (VALIDATED.includes(p.step)) assert.ok(Math.abs((p.valid_loss ?? 0) - 3.3 / p.step) < 1e-9, `step ${p.step}`)
        else assert.equal(p.valid_loss, null, `step ${p.step}`)
        assert.deepEqual(Object.keys(p).sort(), ['epoch', 'full_valid_loss', 'full_valid_mean_token_accuracy', 'grad_norm',
          'learning_rate', 'step', 'step_time_s', 'tokens', 'tokens_per_second', 'train_loss', 'train_mean_token_accuracy',
          'valid_loss', 'valid_mean_token_accuracy'])
      }
    })

    it('pages with after_step and limit: has_more until the last step', async () => {
      const seen: number[] = []
      for (let afterStep = 0, pages = 0; ; pages++) {
        assert.ok(pages < 10)
        const page = (await metrics(`?after_step=${afterStep}&limit=10`)).json() as { data: Point[], has_more: boolean }
        seen.push(...page.data.map(p => p.step))
        if (!page.has_more) break
        assert.equal(page.data.length, 10)
        afterStep = page.data.at(-1)?.step ?? 0
      }
      assert.deepEqual(seen, Array.from({ length: STEPS }, (_v, i) => i + 1))
      const tail = (await metrics(`?after_step=${STEPS}`)).json()
      assert.deepEqual([tail.data, tail.has_more], [[], false])
      const exact = (await metrics('?after_step=26&limit=10')).json()
      assert.deepEqual([exact.data.length, exact.has_more], [10, false])
    })

    it('max_points downsamples: first, last and every validated step kept, the rest evenly spaced', async () => {
      const body = (await metrics('?max_points=8')).json() as { data: Point[], has_more: boolean }
      const steps = body.data.map(p => p.step)
      assert.equal(steps.length, 8)
      for (const s of [1, ...VALIDATED]) assert.ok(steps.includes(s), `${s} in ${steps.join(',')}`)
      assert.deepEqual(steps, [...steps].sort((a, b) => a - b))
      assert.equal(body.has_more, false)
      const all = (await metrics('?max_points=1000')).json()
      assert.equal(all.data.length, STEPS)
      const cut = (await metrics('?max_points=8&limit=3')).json()
      assert.deepEqual([cut.data.map((p: Point) => p.step), cut.has_more], [steps.slice(0, 3), true])
      const rest = (await metrics('?after_step=30&max_points=3')).json()
      assert.deepEqual(rest.data.map((p: Point) => p.step), [31, 34, 36])
    })

    it('another project\'s job, or none, is a 404 job_not_found', async () => {
      for (const res of [await metrics('', env.otherKey),
        await env.app.inject({ url: `${JOBS}/ftjob-nope/metrics`, headers: env.auth() })]) {
        assert.equal(res.statusCode, 404, res.body)
        assert.equal(res.json().error.code, 'job_not_found')
        assert.equal(res.json().error.param, 'job_id')
      }
    })

    it('bad query values are 422s on their place', async () => {
      for (const [query, name] of [['limit=0', 'limit'], ['limit=10001', 'limit'], ['limit=x', 'limit'],
        ['after_step=-1', 'after_step'], ['after_step=1.5', 'after_step'], ['max_points=1', 'max_points'],
        ['limit=', 'limit'], ['after_step=x', 'after_step']]) {
        const res = await metrics(`?${query}`)
        assert.equal(res.statusCode, 422, `${query}: ${res.body}`)
        assert.deepEqual(res.json().detail[0].loc, ['query', name], query)
      }
    })

    it('a resumed trainer\'s steps replace those reported before, as the metrics log is truncated', async () => {
      const other = await createJob(env, {})
      const id = other.json().id as string
      const at = (step: number, loss: number) => ({
        step,
        epoch: 1,
        train_loss: loss,
        train_mean_token_accuracy: null,
        learning_rate: 1e-3,
        grad_norm: 0.5,
        tokens: 10,
        step_time_s: 2,
      })
      for (let s = 1; s <= 5; s++) await recordStepMetrics(env.ctx.db, id, at(s, s))
      await dropMetricsAfter(env.ctx.db, id, 3) // started again from step 3
      assert.deepEqual((await listStepMetrics(env.ctx.db, id, {})).map(r => r.step), [1, 2, 3])
      await recordStepMetrics(env.ctx.db, id, at(3, 30)) // a step reported again: the later one stays
      await recordStepMetrics(env.ctx.db, id, at(4, 40))
      const listed = (await env.app.inject({ url: `${JOBS}/${id}/metrics`, headers: env.auth() })).json()
      assert.deepEqual(listed.data.map((p: Point) => [p.step, p.train_loss]), [[1, 1], [2, 2], [3, 30], [4, 40]])
      assert.equal(listed.data[0].tokens_per_second, 5)
      assert.equal(listed.data[0].grad_norm, 0.5)
    })

    it('a job resumed after a shutdown lists each step once, as the resumed trainer reported it', async () => {
      const gate = newGate()
      const scoped = await makeTestEnv(dialect, { FAKE_TRAINER_GATE: gate.path, FAKE_TRAINER_GATE_STEP: 'epoch' })
      try {
        const training = await uploadFile(scoped, { content: TRAIN })
        const res = await createJob(scoped, { training_file: training, hyperparameters: HP })
        const id = res.json().id as string
        const runner = makeRunner(scoped)
        runner.start()
        await waitFor('the first checkpoint', async () => (await get(scoped, `${JOBS}/${id}/checkpoints`)).data.length > 0)
        await runner.stop() // the trainer waits after step 12: its state is at 12
        // rows beyond the saved state, as an interrupted trainer may have reported: gone on resume
        const stale = (step: number) => ({
          step,
          epoch: 9,
          train_loss: 999,
          train_mean_token_accuracy: 0,
          learning_rate: 0,
          grad_norm: 0,
          tokens: 1,
          step_time_s: 1,
        })
        for (const step of [13, 20, 99]) await recordStepMetrics(scoped.ctx.db, id, stale(step))
        gate.open()
        await makeRunner(scoped).drain()
        assert.equal((await get(scoped, `${JOBS}/${id}`)).status, 'succeeded')
        const listed = (await scoped.app.inject({ url: `${JOBS}/${id}/metrics`, headers: scoped.auth() })).json()
        assert.deepEqual(listed.data.map((p: Point) => p.step), Array.from({ length: STEPS }, (_v, i) => i + 1))
        for (const p of listed.data as Point[]) assert.equal(p.train_loss, 3 / p.step, `step ${p.step}`)
      } finally {
        gate.remove()
        await scoped.close()
      }
    })
  })
}

// The real trainer, as test/e2e/real-training.test.ts runs it (SQLite only, CPU, tiny-llama).
describe('real training: every step of a 36-step job', () => {
  let service: Service
  let cleanup: () => Promise<void>
  let key: string
  before(async () => {
    const made = await testConfig('sqlite', { OPENTUNE_DEVICE: 'cpu' })
    cleanup = made.cleanup
    service = await startService({ ...made.config, port: 0 })
    const project = await ensureProject(service.ctx.db, 'metrics')
    key = (await createKey(service.ctx.db, project.id)).key
  })
  after(async () => {
    await service.close()
    await cleanup()
  })

  const call = async (path: string, init: RequestInit = {}) =>
    await fetch(`${service.url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...init.headers } })
  const json = async (path: string, init: RequestInit = {}): Promise<any> => await (await call(path, init)).json()
  const upload = async (content: string) => {
    const form = new FormData()
    form.set('purpose', 'fine-tune')
    form.set('file', new Blob([content]), 'data.jsonl')
    return (await json('/v1/files', { method: 'POST', body: form })).id as string
  }

  it('the metrics endpoint has all 36 steps, each train_loss as in its metrics event and the CSV', async () => {
    const body = JSON.stringify({
      model: 'opentune/tiny-llama',
      training_file: await upload(TRAIN),
      validation_file: await upload(VALID),
      hyperparameters: { ...HP, lora: true, lora_r: 8, lora_alpha: 16 },
    })
    const created = await json(JOBS, { method: 'POST', body, headers: { 'content-type': 'application/json' } })
    const jobId = created.id as string
    let job: { status: string, result_files: string[], error: unknown }
    for (;;) {
      job = await json(`${JOBS}/${jobId}`)
      if (['succeeded', 'failed', 'cancelled'].includes(job.status)) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))

    const series = await json(`${JOBS}/${jobId}/metrics`) as { data: Point[], has_more: boolean }
    assert.deepEqual(series.data.map(p => p.step), Array.from({ length: STEPS }, (_v, i) => i + 1))
    assert.equal(series.has_more, false)
    for (const p of series.data) {
      assert.equal(typeof p.train_loss, 'number', `step ${p.step}`)
      assert.equal(typeof p.grad_norm, 'number', `step ${p.step}`)
      assert.equal(typeof p.tokens_per_second, 'number', `step ${p.step}`)
      assert.equal(p.valid_loss === null, !VALIDATED.includes(p.step), `validation at step ${p.step}`)
    }
    const byStep = new Map(series.data.map(p => [p.step, p]))

    // each metrics event (where there is one) says the same loss
    const events = (await allEventsOf(jobId)).filter(e => e.type === 'metrics')
    assert.ok(events.length > 0)
    for (const e of events) assert.equal(e.data.train_loss, byStep.get(e.data.step)?.train_loss, `event of step ${e.data.step}`)

    // and so does the job's metrics CSV, row by row
    const csv = await (await call(`/v1/files/${job.result_files[0] ?? ''}/content`)).text()
    const [header, ...rows] = csv.trim().split('\n')
    const columns = (header ?? '').split(',')
    const at = (row: string[], name: string) => row[columns.indexOf(name)] ?? ''
    assert.equal(rows.length, STEPS)
    for (const line of rows) {
      const row = line.split(',')
      const point = byStep.get(Number(at(row, 'step')))
      assert.ok(point, line)
      assert.equal(Number(at(row, 'train_loss')), point.train_loss, `CSV step ${point.step}`)
      if (point.valid_loss !== null) assert.equal(Number(at(row, 'valid_loss')), point.valid_loss)
    }
  })

  async function allEventsOf (jobId: string): Promise<Array<{ type: string, data: any }>> {
    const events = []
    for (let afterId = ''; ;) {
      const page = await json(`${JOBS}/${jobId}/events?limit=100${afterId ? `&after=${afterId}` : ''}`)
      events.push(...page.data)
      if (!page.has_more) return events
      afterId = page.data.at(-1).id
    }
  }
})

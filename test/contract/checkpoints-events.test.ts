// Events and checkpoints contract, the seed endpoint (GET …/checkpoints/{checkpoint_id}) included.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { appendEvent } from '../../src/fine-tuning/events.store.js'
import { expectErrorBody, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

const JOBS = '/v1/fine_tuning/jobs'

for (const dialect of DIALECTS) {
  describe(`${dialect}: events and checkpoints`, () => {
    let env: TestEnv
    let jobId: string
    const checkpointIds: string[] = []
    before(async () => {
      env = await makeTestEnv(dialect)
      jobId = (await createJob(env)).json().id
      for (let epoch = 1; epoch <= 3; epoch++) {
        const row = await insertCheckpoint(env.ctx.db, {
          jobId,
          stepNumber: epoch * 10,
          fineTunedModelCheckpoint: `ft:opentune/tiny-llama:main::${jobId}:ckpt-step-${epoch * 10}`,
          metrics: { step: epoch * 10, train_loss: 2 / epoch, train_mean_token_accuracy: 0.3 * epoch },
          resultFiles: [`file-${epoch}`],
        })
        checkpointIds.push(row.id)
      }
    })
    after(async () => { await env.close() })

    it('lists checkpoints oldest first with first_id, last_id, has_more and result_files', async () => {
      const all = await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints`, headers: env.auth() })
      assert.equal(all.statusCode, 200)
      expectSpec('GET', `${JOBS}/{job_id}/checkpoints`, all)
      const body = all.json()
      assert.deepEqual(body.data.map((c: { id: string }) => c.id), checkpointIds)
      assert.deepEqual(body.data.map((c: { step_number: number }) => c.step_number), [10, 20, 30])
      assert.equal(body.first_id, checkpointIds[0])
      assert.equal(body.last_id, checkpointIds[2])
      assert.equal(body.has_more, false)
      assert.deepEqual(body.data[0].result_files, ['file-1'])
      assert.deepEqual(body.data[0].metrics, {
        step: 10,
        train_loss: 2,
        train_mean_token_accuracy: 0.3,
        valid_loss: null,
        valid_mean_token_accuracy: null,
        full_valid_loss: null,
        full_valid_mean_token_accuracy: null,
      })
      const page = (await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints?limit=2&after=${checkpointIds[0]}`, headers: env.auth() })).json()
      assert.deepEqual(page.data.map((c: { id: string }) => c.id), checkpointIds.slice(1))
      assert.equal(page.has_more, false)
      const first = (await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints?limit=1`, headers: env.auth() })).json()
      assert.equal(first.has_more, true)
      assert.equal(first.first_id, first.last_id)
      const afterLast = (await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints?after=${checkpointIds[2]}`, headers: env.auth() })).json()
      assert.deepEqual(afterLast.data, [])
      assert.equal(afterLast.first_id, null)
    })

    it('gets one checkpoint (the seed endpoint)', async () => {
      const res = await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints/${checkpointIds[1]}`, headers: env.auth() })
      assert.equal(res.statusCode, 200)
      expectSpec('GET', `${JOBS}/{job_id}/checkpoints/{checkpoint_id}`, res, { seed: true })
      expectSpec('GET', `${JOBS}/{job_id}/checkpoints/{checkpoint_id}`, res)
      const c = res.json()
      assert.equal(c.id, checkpointIds[1])
      assert.equal(c.fine_tuning_job_id, jobId)
      assert.equal(c.object, 'fine_tuning.job.checkpoint')
      assert.equal(c.step_number, 20)
      assert.equal(c.metrics.train_loss, 1)
    })

    it('404s an unknown checkpoint, a checkpoint of another job, and an unknown job', async () => {
      const otherJob = (await createJob(env)).json().id
      const cases = [
        [`${JOBS}/${jobId}/checkpoints/ftckpt_00000000-0000-4000-8000-000000000000`, 'checkpoint_not_found'],
        [`${JOBS}/${otherJob}/checkpoints/${checkpointIds[0]}`, 'checkpoint_not_found'],
        [`${JOBS}/ftjob-00000000000000000000000000000000/checkpoints/${checkpointIds[0]}`, 'job_not_found'],
      ]
      for (const [url, code] of cases) {
        const res = await env.app.inject({ url, headers: env.auth() })
        assert.equal(res.statusCode, 404, url)
        expectErrorBody(res)
        assert.equal(res.json().error.code, code)
      }
      const foreign = await env.app.inject({ url: `${JOBS}/${jobId}/checkpoints/${checkpointIds[0]}`, headers: env.auth(env.otherKey) })
      assert.equal(foreign.statusCode, 404)
      assert.equal(foreign.json().error.code, 'job_not_found')
    })

    it('lists events oldest first; after = last seen id tails the log', async () => {
      for (let step = 1; step <= 3; step++) {
        await appendEvent(env.ctx.db, jobId, { type: 'metrics', message: `Step ${step}/3: training loss=1.00`, data: { step, total_steps: 3, train_loss: 1, train_mean_token_accuracy: 0.5 } })
      }
      const res = await env.app.inject({ url: `${JOBS}/${jobId}/events?limit=100`, headers: env.auth() })
      expectSpec('GET', `${JOBS}/{job_id}/events`, res)
      const events = res.json().data
      assert.match(events[0].message, /Created fine-tuning job/)
      assert.equal(events.at(-1).type, 'metrics')
      assert.deepEqual(events.at(-1).data, { step: 3, total_steps: 3, train_loss: 1, train_mean_token_accuracy: 0.5 })
      const times = events.map((e: { created_at: number }) => e.created_at)
      assert.deepEqual(times, [...times].sort((a: number, b: number) => a - b))
      const tail = (await env.app.inject({ url: `${JOBS}/${jobId}/events?after=${events.at(-2).id}`, headers: env.auth() })).json()
      assert.deepEqual(tail.data.map((e: { id: string }) => e.id), [events.at(-1).id])
      assert.equal(tail.has_more, false)
      const none = (await env.app.inject({ url: `${JOBS}/${jobId}/events?after=${events.at(-1).id}`, headers: env.auth() })).json()
      assert.deepEqual(none, { object: 'list', data: [], has_more: false })
      const page = (await env.app.inject({ url: `${JOBS}/${jobId}/events?limit=2`, headers: env.auth() })).json()
      assert.equal(page.data.length, 2)
      assert.equal(page.has_more, true)
      const bad = await env.app.inject({ url: `${JOBS}/${jobId}/events?after=ftevent-unknown`, headers: env.auth() })
      assert.equal(bad.statusCode, 422)
      expectSpec('GET', `${JOBS}/{job_id}/events`, bad)
      assert.deepEqual(bad.json().detail[0].loc, ['query', 'after'])
    })

    it('lists the project\'s fine-tuned checkpoints as models', async () => {
      const res = await env.app.inject({ url: '/v1/models', headers: env.auth() })
      const ids = res.json().data.map((m: { id: string }) => m.id)
      assert.equal(ids[0], 'opentune/tiny-llama')
      assert.ok(ids.includes(`ft:opentune/tiny-llama:main::${jobId}:ckpt-step-30`))
      const other = (await env.app.inject({ url: '/v1/models', headers: env.auth(env.otherKey) })).json()
      assert.deepEqual(other.data.map((m: { id: string }) => m.id), ['opentune/tiny-llama'])
      const one = await env.app.inject({ url: `/v1/models/${encodeURIComponent('opentune/tiny-llama')}`, headers: env.auth() })
      assert.equal(one.statusCode, 200)
      const missing = await env.app.inject({ url: '/v1/models/nope', headers: env.auth() })
      assert.equal(missing.statusCode, 404)
      expectErrorBody(missing)
      const percent = await env.app.inject({ url: '/v1/models/%25zz', headers: env.auth() })
      assert.equal(percent.statusCode, 404, 'a % in a model name is a name, not a broken escape')
    })
  })
}

// Webhooks end to end in one process: endpoints through /v1/webhooks, jobs that succeed (the runner on
// the scripted fake trainer), fail (a bad training file) and are cancelled, and a real HTTP receiver
// that checks every delivery with the openai SDK's webhooks.unwrap and the endpoint's secret.
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { InvalidWebhookSignatureError } from 'openai'
import { openContext } from '../../src/context.js'
import { retryDelayMs, WebhookDelivery } from '../../src/webhooks/delivery.js'
import { webhooksCommand } from '../../src/webhooks/webhooks-command.js'
import { enqueueJobWebhooks } from '../../src/webhooks/webhooks.service.js'
import { createJob, DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'
import { get, JOBS, makeRunner, newJob, waitFor } from '../runner/helpers.js'
import { assertJobEvent, startReceiver, unwrap, type Received, type Receiver } from './receiver.js'

const HOOKS = '/v1/webhooks'
const ALL = ['fine_tuning.job.succeeded', 'fine_tuning.job.failed', 'fine_tuning.job.cancelled']

describe('retry delays', () => {
  it('double from the base up to the cap, jittered to half of it at least', () => {
    const cfg = { retryBaseMs: 1000, retryMaxMs: 10_000 }
    const top = [1, 2, 3, 4, 5, 9].map(n => retryDelayMs(cfg, n, () => 1))
    assert.deepEqual(top, [1000, 2000, 4000, 8000, 10_000, 10_000])
    assert.deepEqual([1, 3].map(n => retryDelayMs(cfg, n, () => 0)), [500, 2000])
  })
})

for (const dialect of DIALECTS) {
  describe(`${dialect}: webhooks`, () => {
    let env: TestEnv
    let receiver: Receiver
    let worker: WebhookDelivery
    const secrets = new Map<string, string>() // path → secret
    const ids = new Map<string, string>() // path → endpoint id

    before(async () => {
      env = await makeTestEnv(dialect, {
        OPENTUNE_WEBHOOKS_POLL_MS: '50',
        OPENTUNE_WEBHOOKS_RETRY_BASE_MS: '50', // test-only: production's first retry waits 10 s
        OPENTUNE_WEBHOOKS_RETRY_MAX_MS: '200',
      })
      // The scripted trainer reads no weights: the built-in model's (made with PyTorch, seconds to
      // minutes on a loaded machine) are stood in for by an empty file, as the runner only checks it is there.
      const builtin = join(env.config.dataDir, 'builtin-models', 'opentune', 'tiny-llama')
      mkdirSync(builtin, { recursive: true })
      writeFileSync(join(builtin, 'model.safetensors'), '')
      receiver = await startReceiver()
      worker = new WebhookDelivery(env.ctx, { log: env.app.log })
      worker.start()
    })
    after(async () => {
      await worker?.stop()
      await receiver?.close()
      await env?.close()
    })

    const api = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object, key = env.key) =>
      await env.app.inject({ method, url, headers: env.auth(key), ...(payload ? { payload } : {}) })
    const addEndpoint = async (path: string, body: Record<string, unknown> = {}) => {
      const res = await api('POST', HOOKS, { url: `${receiver.url}${path}`, ...body })
      assert.equal(res.statusCode, 200, res.body)
      secrets.set(path, res.json().secret)
      ids.set(path, res.json().id)
      return res.json()
    }
    const cancelledJob = async () => {
      const id = await newJob(env)
      assert.equal((await api('POST', `${JOBS}/${id}/cancel`)).json().status, 'cancelled')
      return id
    }
    const deliveries = async (path: string) => (await api('GET', `${HOOKS}/${ids.get(path)}/deliveries`)).json()

    it('shows an endpoint\'s secret once, at creation; other projects see none of it', async () => {
      const created = await addEndpoint('/all')
      assert.match(created.secret, /^whsec_[A-Za-z0-9+/]{43}=$/)
      assert.deepEqual(created.events, ALL)
      assert.equal(created.last_delivery, null)
      await addEndpoint('/failed-only', { events: ['fine_tuning.job.failed'], description: 'pager' })

      const list = await api('GET', HOOKS)
      const one = await api('GET', `${HOOKS}/${created.id}`)
      for (const res of [list, one]) {
        assert.equal(res.statusCode, 200)
        assert.ok(!res.body.includes('secret') && !res.body.includes(created.secret.slice(6)), res.body)
      }
      assert.deepEqual(list.json().data.map((e: { url: string }) => e.url), [`${receiver.url}/all`, `${receiver.url}/failed-only`])

      assert.deepEqual((await api('GET', HOOKS, undefined, env.otherKey)).json().data, [])
      for (const [method, url] of [['GET', `${HOOKS}/${created.id}`], ['DELETE', `${HOOKS}/${created.id}`],
        ['GET', `${HOOKS}/${created.id}/deliveries`]] as const) {
        const res = await api(method, url, undefined, env.otherKey)
        assert.equal(res.statusCode, 404, `${method} ${url}`)
        assert.equal(res.json().error.code, 'webhook_not_found')
      }
      assert.equal((await env.app.inject({ url: HOOKS })).statusCode, 401)
      const badUrl = await api('POST', HOOKS, { url: 'ftp://example.com/hook' })
      assert.equal(badUrl.statusCode, 422)
      assert.deepEqual(badUrl.json().detail[0].loc, ['body', 'url'])
      assert.equal((await api('POST', HOOKS, { url: `${receiver.url}/x`, events: ['fine_tuning.job.paused'] })).statusCode, 422)
    })

    it('sends a signed webhook for a job that is cancelled, succeeds or fails, which the openai SDK verifies', async () => {
      const cancelled = await cancelledJob()
      const runner = makeRunner(env)
      runner.start()
      let succeeded: string, failed: string
      try {
        succeeded = await newJob(env, { hyperparameters: { n_epochs: 1, batch_size: 8 } })
        const res = await createJob(env, { training_file: await uploadFile(env, { content: 'not json\n' }) })
        failed = res.json().id
        for (const [id, status] of [[succeeded, 'succeeded'], [failed, 'failed']]) {
          const job = await waitFor(`${id} to end`, async () => {
            const j = await get(env, `${JOBS}/${id}`)
            return ['succeeded', 'failed', 'cancelled'].includes(j.status) && j
          })
          assert.equal(job.status, status, JSON.stringify(job.error))
        }
      } finally {
        await runner.stop()
      }
      const got = await receiver.waitFor('/all', 3)
      const jobOf = async (r: Received) => ((await unwrap(r, secrets.get('/all')!)).data as { id: string }).id
      const byJob = new Map(await Promise.all(got.map(async r => [await jobOf(r), r] as const)))
      await assertJobEvent(byJob.get(cancelled)!, secrets.get('/all')!, 'fine_tuning.job.cancelled', cancelled)
      await assertJobEvent(byJob.get(succeeded)!, secrets.get('/all')!, 'fine_tuning.job.succeeded', succeeded)
      await assertJobEvent(byJob.get(failed)!, secrets.get('/all')!, 'fine_tuning.job.failed', failed)
      const [onlyFailed] = await receiver.waitFor('/failed-only', 1)
      await assertJobEvent(onlyFailed!, secrets.get('/failed-only')!, 'fine_tuning.job.failed', failed)
      await assert.rejects(unwrap(got[0]!, secrets.get('/failed-only')!), InvalidWebhookSignatureError)

      const done = await waitFor('three delivered', async () => {
        const page = await deliveries('/all')
        return page.data.length === 3 && page.data.every((d: { status: string }) => d.status === 'succeeded') && page
      })
      const jobIds = new Set(done.data.map((d: { job_id: string }) => d.job_id))
      assert.deepEqual(jobIds, new Set([cancelled, succeeded, failed]))
      const endpoint = (await api('GET', `${HOOKS}/${ids.get('/all')}`)).json()
      assert.equal(endpoint.last_delivery.status, 'succeeded')
      assert.equal(endpoint.last_delivery.status_code, 200)
    })

    it('retries a receiver that fails twice, delivers the third attempt, and replays on request', async () => {
      await addEndpoint('/flaky', { events: ['fine_tuning.job.cancelled'] })
      receiver.failNext('/flaky', [500, 503])
      const job = await cancelledJob()
      const attempts = await receiver.waitFor('/flaky', 3)
      assert.equal(new Set(attempts.map(a => a.headers['webhook-id'])).size, 1, 'one webhook-id on every attempt')
      for (const a of attempts) await assertJobEvent(a, secrets.get('/flaky')!, 'fine_tuning.job.cancelled', job)

      const [delivery] = (await waitFor('the third attempt recorded', async () => {
        const page = await deliveries('/flaky')
        return page.data[0]?.status === 'succeeded' && page
      })).data
      assert.equal(delivery.attempts, 3)
      assert.equal(delivery.last_status_code, 200)
      assert.equal(delivery.next_attempt_at, null)
      assert.equal(delivery.id, attempts[0]!.headers['webhook-id'])

      const replayUrl = `${HOOKS}/${ids.get('/flaky')}/deliveries/${delivery.id}/replay`
      assert.equal((await api('POST', replayUrl, undefined, env.otherKey)).statusCode, 404)
      const replay = await api('POST', replayUrl)
      assert.equal(replay.statusCode, 200, replay.body)
      assert.equal(replay.json().status, 'pending')
      const again = (await receiver.waitFor('/flaky', 4))[3]!
      assert.equal(again.headers['webhook-id'], delivery.id)
      await assertJobEvent(again, secrets.get('/flaky')!, 'fine_tuning.job.cancelled', job)
    })

    it('gives up once retries pass the max age, and says so on the endpoint', async () => {
      await addEndpoint('/down', { events: ['fine_tuning.job.cancelled'] })
      receiver.failNext('/down', Array(1000).fill(500))
      await cancelledJob()
      await receiver.waitFor('/down', 1)
      // as if the event were older than OPENTUNE_WEBHOOKS_MAX_AGE_SECONDS (72 h)
      await env.ctx.db.updateTable('webhook_deliveries').set({ retry_from: 0 }).where('endpoint_id', '=', ids.get('/down')!).execute()
      const page = await waitFor('given up', async () => {
        const p = await deliveries('/down')
        return p.data[0]?.status === 'failed' && p
      })
      assert.equal(page.data[0].last_status_code, 500)
      assert.match(page.data[0].last_error, /^HTTP 500: receiver says no/)
      const endpoint = (await api('GET', `${HOOKS}/${ids.get('/down')}`)).json()
      assert.equal(endpoint.last_delivery.status, 'failed')
      assert.equal(endpoint.last_delivery.status_code, 500)
      assert.equal((await api('DELETE', `${HOOKS}/${ids.get('/down')}`)).statusCode, 200) // it would keep failing
    })

    it('sends each delivery once with several workers claiming side by side (two service processes)', async () => {
      await addEndpoint('/many', { events: ['fine_tuning.job.cancelled'] })
      const jobIds = Array.from({ length: 40 }, (_, i) => `ftjob-many${String(i).padStart(28, '0')}`)
      for (const id of jobIds) {
        await enqueueJobWebhooks(env.ctx.db, { id, project_id: env.projectId, finished_at: 1 }, 'cancelled')
      }
      const other = await openContext(env.config) // a second process's connections to the same database
      try {
        const workers = [other, env.ctx].map(ctx => new WebhookDelivery(ctx, { log: env.app.log }))
        await Promise.all([...workers, ...workers].map(async w => await w.runOnce()))
        const got = await receiver.waitFor('/many', jobIds.length)
        await new Promise(resolve => setTimeout(resolve, 300)) // a double send would have come by now
        const all = receiver.received.filter(r => r.path === '/many')
        assert.equal(new Set(all.map(r => r.headers['webhook-id'])).size, all.length, 'no webhook-id sent twice')
        assert.equal(got.length, jobIds.length)
      } finally {
        await other.store.close()
      }
    })

    it('opentune webhooks add, list and remove', async (t) => {
      const lines: string[] = []
      t.mock.method(console, 'log', (line: string) => { lines.push(line) })
      assert.equal(await webhooksCommand(env.config, 'add', ['--project', 'main', '--url', `${receiver.url}/cli`,
        '--events', 'fine_tuning.job.failed']), 0)
      const secret = lines.at(-1)!
      const id = /webhook (whep_\w+)/.exec(lines[0]!)?.[1]
      assert.match(secret, /^whsec_/)
      assert.deepEqual((await api('GET', `${HOOKS}/${id}`)).json().events, ['fine_tuning.job.failed'])
      lines.length = 0
      assert.equal(await webhooksCommand(env.config, 'list', ['--project', 'main']), 0)
      const expected = `${id}  ${receiver.url}/cli  events=fine_tuning.job.failed  last=none`
      assert.ok(lines.includes(expected), lines.join('\n'))
      assert.ok(!lines.join('\n').includes(secret.slice(6)))
      assert.equal(await webhooksCommand(env.config, 'remove', [id!, '--project', 'other']), 1, 'another project\'s')
      assert.equal(await webhooksCommand(env.config, 'remove', [id!, '--project', 'main']), 0)
      assert.equal((await api('GET', `${HOOKS}/${id}`)).statusCode, 404)
    })

    it('a removed endpoint gets no more deliveries', async () => {
      const id = ids.get('/flaky')!
      assert.deepEqual((await api('DELETE', `${HOOKS}/${id}`)).json(), { id, object: 'webhook_endpoint.deleted', deleted: true })
      assert.equal((await api('GET', `${HOOKS}/${id}`)).statusCode, 404)
      const job = await cancelledJob()
      const rows = await env.ctx.db.selectFrom('webhook_deliveries').select('endpoint_id').where('job_id', '=', job).execute()
      assert.deepEqual(rows.map(r => r.endpoint_id).sort(), [ids.get('/all'), ids.get('/many')].sort())
    })
  })
}

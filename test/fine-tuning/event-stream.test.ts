// GET …/events?stream=true: server-sent events over a real socket — replay, live events, [DONE],
// Last-Event-ID, another project's job, a slow client cut off, and another process's appends
// (PostgreSQL: heard through LISTEN/NOTIFY alone, the poll being off for the test).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { appendEvent } from '../../src/fine-tuning/events.store.js'
import { cancelJob } from '../../src/fine-tuning/jobs.service.js'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { expectErrorBody } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import { allEvents, JOBS, makeRunner, newGate, newJob } from '../runner/helpers.js'
import { connectSse, type SseClient } from './sse-client.js'

const BUFFER = 256 * 1024
const APPEND = join(import.meta.dirname, '..', 'fixtures', 'append-events.ts')

for (const dialect of DIALECTS) {
  describe(`${dialect}: streamed job events`, () => {
    let env: TestEnv
    let base: string
    const gate = newGate()
    const clients: SseClient[] = []
    type WatchOpts = { headers?: Record<string, string>, query?: string, read?: boolean }
    const watch = async (jobId: string, opts: WatchOpts = {}) => {
      const query = opts.query ?? 'stream=true'
      const c = await connectSse(`${base}${JOBS}/${jobId}/events?${query}`, { ...env.auth(), ...opts.headers }, opts)
      clients.push(c)
      assert.equal(c.status, 200)
      assert.match(String(c.headers['content-type']), /^text\/event-stream/)
      return c
    }
    const ids = (c: SseClient) => c.events.map(e => e.id)

    before(async () => {
      env = await makeTestEnv(dialect, {
        FAKE_TRAINER_MODE: 'ok',
        FAKE_TRAINER_GATE: gate.path,
        FAKE_TRAINER_GATE_STEP: '3',
        OPENTUNE_EVENTS_CLIENT_BUFFER_BYTES: String(BUFFER),
        OPENTUNE_EVENTS_PING_MS: '100',
        // PostgreSQL: only a NOTIFY can bring an event in time (no poll within the test)
        OPENTUNE_EVENTS_PG_POLL_MS: '600000',
      })
      base = await env.app.listen({ port: 0, host: '127.0.0.1' })
    })
    after(async () => {
      for (const c of clients) c.close()
      gate.remove()
      await env.close()
    })

    it('a client that joins mid-job gets every event once, in order, then [DONE]; Last-Event-ID resumes', async () => {
      const jobId = await newJob(env)
      const runner = makeRunner(env)
      runner.start()
      try {
        // joins at the gate (step 3 of the run): the replay first, then what the trainer does next
        const early = await watch(jobId)
        await early.until('a metrics event', c => c.events.some(e => e.data.type === 'metrics' && e.data.data.step === 3))
        const resumeAt = early.events.at(-1)!
        const mid = await watch(jobId, { headers: { accept: 'text/event-stream' }, query: '' })
        early.close()
        const resumed = await watch(jobId, { headers: { 'last-event-id': resumeAt.id! } })
        await mid.until('the events so far', c => c.events.length >= early.events.length)
        gate.open()
        for (const c of [mid, resumed]) await c.until('[DONE] and the end', c => c.done && c.closed)
        const listed = await allEvents(env, jobId)
        assert.equal((await getJobById(env.ctx.db, jobId))?.status, 'succeeded')
        assert.equal(listed.at(-1)?.message, 'The job has successfully completed')
        assert.deepEqual(mid.events.map(e => e.data), listed, 'the events exactly as the list returns them')
        assert.deepEqual(ids(mid), listed.map(e => e.id), 'each event id: its event id')
        const at = listed.findIndex(e => e.id === resumeAt.id)
        assert.deepEqual(resumed.events.map(e => e.data), listed.slice(at + 1), 'no gap, no repeat after Last-Event-ID')
        // after the end: the rest at once, from `after` as from Last-Event-ID, and [DONE]
        const late = await watch(jobId, { query: `stream=true&after=${listed[2]!.id}` })
        await late.until('[DONE]', c => c.done && c.closed)
        assert.deepEqual(ids(late), listed.slice(3).map(e => e.id))
      } finally {
        await runner.stop()
      }
    })

    it('404s another project\'s job and an unknown job; 422s an unknown Last-Event-ID', async () => {
      const jobId = (await createJob(env)).json().id
      const foreign = await env.app.inject({ url: `${JOBS}/${jobId}/events?stream=true`, headers: env.auth(env.otherKey) })
      assert.equal(foreign.statusCode, 404)
      expectErrorBody(foreign)
      assert.equal(foreign.json().error.code, 'job_not_found')
      const unknown = await env.app.inject({
        url: `${JOBS}/ftjob-00000000000000000000000000000000/events`,
        headers: { ...env.auth(), accept: 'text/event-stream' },
      })
      assert.equal(unknown.statusCode, 404)
      const badId = await env.app.inject({
        url: `${JOBS}/${jobId}/events?stream=true`,
        headers: { ...env.auth(), 'last-event-id': 'ftevent-nope' },
      })
      assert.equal(badId.statusCode, 422)
      assert.deepEqual(badId.json().detail[0].loc, ['header', 'last-event-id'])
      const noKey = await env.app.inject({ url: `${JOBS}/${jobId}/events?stream=true` })
      assert.equal(noKey.statusCode, 401)
      // stream=false is the list, whatever the Accept header
      const list = await env.app.inject({ url: `${JOBS}/${jobId}/events?stream=false`, headers: { ...env.auth(), accept: 'text/event-stream' } })
      assert.equal(list.json().object, 'list')
    })

    it('cuts off a client that never reads, without holding back one that does; pings a quiet stream', async () => {
      const jobId = (await createJob(env)).json().id
      const fast = await watch(jobId)
      const slow = await watch(jobId, { read: false })
      await fast.until('a ping', c => c.comments.includes('ping'))
      await fast.until('the replay', c => c.events.length >= 1)
      const before = fast.events.length
      const big = 'x'.repeat(64 * 1024)
      const n = 300 // ~19 MB: more than the kernel's socket buffers hold for the slow one
      for (let i = 0; i < n; i++) {
        await appendEvent(env.ctx.db, jobId, { message: `event ${i}`, data: { i, big } })
        await fast.until(`event ${i}`, c => c.events.length >= before + i + 1)
      }
      await cancelJob(env.ctx.db, (await getJobById(env.ctx.db, jobId))!)
      await fast.until('[DONE]', c => c.done && c.closed)
      const listed = await allEvents(env, jobId)
      assert.deepEqual(ids(fast), listed.map(e => e.id))
      slow.resume() // what reached its socket before it was cut off, then the end: no [DONE]
      await slow.until('the end', c => c.closed)
      assert.equal(slow.done, false)
      assert.ok(slow.events.length < listed.length, `${slow.events.length} of ${listed.length}`)
      assert.deepEqual(ids(slow), listed.slice(0, slow.events.length).map(e => e.id))
      const back = await watch(jobId, { headers: { 'last-event-id': slow.events.at(-1)!.id! } })
      await back.until('[DONE]', c => c.done && c.closed)
      assert.deepEqual([...ids(slow), ...ids(back)], listed.map(e => e.id))
    })

    it('hears the events another process appends (PostgreSQL: LISTEN/NOTIFY; SQLite: the poll)', async () => {
      const jobId = (await createJob(env)).json().id
      const c = await watch(jobId)
      await c.until('the replay', c => c.events.length >= 1)
      const first = c.events.length
      const { dataDir, databaseUrl, databaseSchema } = env.config
      await promisify(execFile)(process.execPath, ['--import', 'tsx', APPEND, jobId, '3'], {
        env: {
          ...process.env,
          OPENTUNE_DATA_DIR: dataDir,
          ...(databaseUrl ? { OPENTUNE_DATABASE_URL: databaseUrl, OPENTUNE_DATABASE_SCHEMA: databaseSchema ?? '' } : {}),
        },
      })
      await c.until('[DONE]', c => c.done && c.closed, 20_000)
      const listed = await allEvents(env, jobId)
      assert.deepEqual(c.events.map(e => e.data), listed)
      assert.deepEqual(listed.slice(first).map(e => e.message), [0, 1, 2].map(i => `from another process ${i}`)
        .concat('Fine-tuning job cancelled'))
    })
  })
}

// The embedded engine never hangs a client: a full batch and queue answer 429 with Retry-After, and
// a worker killed mid-request ends that request with engine_restarted (a 503 before the stream
// starts, an error event after) while the next request starts a new worker and is served.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import OpenAI, { APIError } from 'openai'
import { startService, type Service } from '../../src/server.js'
import { DIALECTS, sdkClient, testConfig } from '../helper.js'

const BASE = 'opentune/tiny-llama'
const long = { model: BASE, prompt: 'A long story', max_tokens: 1000, temperature: 0, stream: true as const }

/** The pid of this process's inference worker (a child running `opentune_trainer serve`). */
function workerPid (): number {
  const out = execFileSync('pgrep', ['-P', String(process.pid), '-f', 'opentune_trainer serve'], { encoding: 'utf8' })
  const pid = Number(out.trim().split('\n')[0])
  assert.ok(pid > 0, 'the worker is running')
  return pid
}

describe(`${DIALECTS[0]}: the embedded engine under overload and crashes`, () => {
  let service: Service
  let cleanup: () => Promise<void>
  let client: OpenAI

  before(async () => {
    const made = await testConfig(DIALECTS[0] ?? 'sqlite', {
      PORT: '0', OPENTUNE_RUNNER: '0', OPENTUNE_INFERENCE_MAX_BATCH: '1', OPENTUNE_INFERENCE_MAX_QUEUED: '0',
    })
    cleanup = made.cleanup
    service = await startService(made.config)
    client = await sdkClient(service)
  })
  after(async () => {
    await service?.close()
    await cleanup?.()
  })

  it('answers 429 with Retry-After when the batch and the queue are full', async () => {
    const controller = new AbortController()
    const stream = await client.completions.create(long, { signal: controller.signal })
    const iterator = stream[Symbol.asyncIterator]()
    await iterator.next() // it runs: the one slot is taken
    const res = await fetch(`${service.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: BASE, prompt: 'Hi', max_tokens: 2 }),
    })
    assert.equal(res.status, 429)
    assert.equal(res.headers.get('retry-after'), '1')
    const body = await res.json() as { error: { code: string } }
    assert.equal(body.error.code, 'engine_overloaded')
    controller.abort()
  })

  it('ends a request whose worker died with engine_restarted, and serves the next on a new worker', async () => {
    // the disconnect above may still be freeing its slot: one retry after Retry-After covers it
    const warm = await client.withOptions({ maxRetries: 2 }).completions.create({ model: BASE, prompt: 'Hi', max_tokens: 2 })
    assert.equal(warm.usage?.completion_tokens, 2)
    const stream = await client.completions.create(long)
    const iterator = stream[Symbol.asyncIterator]()
    await iterator.next()
    const pid = workerPid()
    process.kill(pid, 'SIGKILL')
    const failure = await (async () => {
      try {
        for (let r = await iterator.next(); !r.done; r = await iterator.next()) { /* the rest of the stream */ }
      } catch (err) {
        return err
      }
      return null
    })()
    assert.ok(failure instanceof APIError, `the stream ends with an error event, got ${String(failure)}`)
    assert.match(failure.message, /restarting; retry it/)
    const next = await client.completions.create({ model: BASE, prompt: 'Hi', max_tokens: 2 })
    assert.equal(next.usage?.completion_tokens, 2)
    assert.notEqual(workerPid(), pid, 'a new worker serves it')
  })
})

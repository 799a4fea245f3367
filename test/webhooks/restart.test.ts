// The outbox survives a crash: the service (a child process, `opentune serve`) writes a job's final
// status while its delivery worker is off (OPENTUNE_WEBHOOKS_DELIVER=0), is SIGKILLed before anything
// is sent, and the restarted service delivers the webhook. The endpoint is made with the CLI.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { openStore } from '../../src/db/connect.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { startServiceProcess, type ServiceProcess } from '../durability/service-process.js'
import { testConfig } from '../helper.js'
import { waitFor } from '../runner/helpers.js'
import { assertJobEvent, startReceiver, type Receiver } from './receiver.js'

const ROOT = join(import.meta.dirname, '..', '..')
const TRAIN = readFileSync(join(ROOT, 'examples', 'data', 'train.jsonl'))

async function cli (env: Record<string, string>, ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), ...args],
    { cwd: ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'warn' } })
  return stdout
}

describe('sqlite: the service SIGKILLed between a job\'s final status and its webhook', () => {
  let service: ServiceProcess | undefined
  let receiver: Receiver | undefined
  let cleanup: (() => Promise<void>) | undefined
  after(async () => {
    await service?.kill('SIGKILL')
    await receiver?.close()
    await cleanup?.()
  })

  it('delivers the webhook after the restart', async () => {
    const made = await testConfig('sqlite')
    cleanup = made.cleanup
    receiver = await startReceiver()
    const env = { OPENTUNE_DATA_DIR: made.config.dataDir, OPENTUNE_MODELS_DIR: made.config.modelsDir, OPENTUNE_RUNNER: '0' }
    const store = await openStore(made.config) // the key in-process: each CLI start costs seconds here
    const { key } = await createKey(store.db, (await ensureProject(store.db, 'hooks')).id)
    await store.close()
    const added = (await cli(env, 'webhooks', 'add', '--project', 'hooks', '--url', `${receiver.url}/hook`)).trim().split('\n')
    const secret = added.at(-1)!
    const endpointId = /webhook (whep_\w+)/.exec(added[0]!)?.[1]
    assert.match(secret, /^whsec_/)

    service = await startServiceProcess({ ...env, OPENTUNE_WEBHOOKS_DELIVER: '0' })
    const call = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(`${service!.url}/v1${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers as Record<string, string>) } })
      assert.ok(res.ok, `${path}: ${res.status}`)
      return await res.json() as Record<string, any>
    }
    const form = new FormData()
    form.set('purpose', 'fine-tune')
    form.set('file', new Blob([TRAIN]), 'train.jsonl')
    const file = await call('/files', { method: 'POST', body: form })
    const job = await call('/fine_tuning/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: file.id }) })
    assert.equal((await call(`/fine_tuning/jobs/${job.id}/cancel`, { method: 'POST' })).status, 'cancelled')
    const pending = await call(`/webhooks/${endpointId}/deliveries`)
    assert.deepEqual(pending.data.map((d: { status: string, attempts: number }) => [d.status, d.attempts]), [['pending', 0]])

    await service.kill('SIGKILL')
    assert.equal(receiver.received.length, 0)
    service = await startServiceProcess({ ...env, OPENTUNE_WEBHOOKS_POLL_MS: '50' })
    const [got] = await receiver.waitFor('/hook', 1)
    await assertJobEvent(got!, secret, 'fine_tuning.job.cancelled', job.id)
    await waitFor('delivery recorded', async () => (await call(`/webhooks/${endpointId}/deliveries`)).data[0].status === 'succeeded')
  })
})

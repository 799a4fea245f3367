// What survives a crash: the real service process is SIGKILLed mid-upload and right after creating
// a job, then restarted on the same data dir; SIGTERM shuts it down cleanly and promptly.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DIALECTS, testConfig } from '../helper.js'
import { createKeyWithCli, startServiceProcess, type ServiceProcess } from './service-process.js'

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

// A generous limit: a condition that holds is seen at once; the limit only bounds a broken run.
async function waitFor (what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: the service process survives SIGKILL and stops on SIGTERM`, () => {
    let env: Record<string, string>
    let dataDir: string
    let cleanup: () => Promise<void>
    let key: string
    let service: ServiceProcess | undefined

    const auth = () => ({ authorization: `Bearer ${key}` })
    const tmpDir = () => join(dataDir, 'files', '.tmp')
    const api = async (path: string, init: RequestInit = {}) =>
      await fetch(`${service?.url}/v1${path}`, { ...init, headers: { ...auth(), ...(init.headers as Record<string, string>) } })
    const upload = async (name: string, bytes: Buffer) => {
      const form = new FormData()
      form.set('purpose', 'fine-tune')
      form.set('file', new Blob([bytes]), name)
      const res = await api('/files', { method: 'POST', body: form })
      assert.equal(res.status, 200, await res.clone().text())
      return (await res.json() as { id: string }).id
    }

    before(async () => {
      const made = await testConfig(dialect)
      cleanup = made.cleanup
      dataDir = made.config.dataDir
      env = {
        OPENTUNE_DATA_DIR: dataDir,
        OPENTUNE_MODELS_DIR: made.config.modelsDir,
        OPENTUNE_RUNNER: '0', // the API's own durability; the runner's is test/runner's
        ...(made.config.databaseUrl ? { OPENTUNE_DATABASE_URL: made.config.databaseUrl } : {}),
        ...(made.config.databaseSchema ? { OPENTUNE_DATABASE_SCHEMA: made.config.databaseSchema } : {}),
      }
      key = await createKeyWithCli(env, 'main')
    })
    after(async () => {
      await service?.kill('SIGKILL')
      await cleanup()
    })

    it('keeps every committed file and no trace of an upload killed half-way', async () => {
      service = await startServiceProcess(env)
      const committed = new Map<string, Buffer>()
      for (let i = 0; i < 3; i++) {
        const bytes = randomBytes(50_000 + i)
        committed.set(await upload(`part-${i}.bin`, bytes), bytes)
      }

      // A 64 MB upload, of which 2 MB arrive before the process dies.
      const boundary = 'killboundary'
      const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n`)
      const req = httpRequest(`${service.url}/v1/files`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.length + 64 * 1024 ** 2) },
      })
      req.on('error', () => {}) // the server is about to vanish
      req.write(head)
      for (let i = 0; i < 32; i++) req.write(Buffer.alloc(64 * 1024, 'x'))
      const partial = async () => {
        for (const name of await readdir(tmpDir())) {
          if ((await stat(join(tmpDir(), name)).catch(() => null))?.size ?? 0) return true
        }
        return false
      }
      await waitFor('the upload to reach the disk', partial)
      const { signal } = await service.kill('SIGKILL')
      assert.equal(signal, 'SIGKILL')
      req.destroy()
      assert.ok((await readdir(tmpDir())).length > 0, 'the killed upload left a .part file behind')

      service = await startServiceProcess({ ...env, OPENTUNE_UPLOAD_STALE_SECONDS: '0' })
      assert.deepEqual(await readdir(tmpDir()), [], 'the startup sweep removed the abandoned .part file')
      const listed = await (await api('/files')).json() as { data: Array<{ id: string, bytes: number, filename: string }> }
      assert.deepEqual(listed.data.map(f => f.id).sort(), [...committed.keys()].sort(), 'exactly the committed files')
      for (const [id, bytes] of committed) {
        const res = await api(`/files/${id}/content`)
        assert.equal(res.status, 200)
        assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes, `${id} reads back byte for byte`)
      }
      const blobs = (await readdir(join(dataDir, 'files'))).filter(n => n !== '.tmp').sort()
      assert.deepEqual(blobs, [...committed.keys()].sort(), 'no stray blob in the data dir')
      await service.kill('SIGKILL')
    })

    it('keeps a job and its events when killed right after answering the create', async () => {
      service = await startServiceProcess(env)
      const file = await upload('train.jsonl', Buffer.from('{"text": "hello"}\n'))
      const res = await api('/fine_tuning/jobs', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: file, hyperparameters: { n_epochs: 2, surprise: 1 } }),
      })
      const body = await res.text()
      await service.kill('SIGKILL')
      assert.equal(res.status, 200, body)
      const job = JSON.parse(body) as { id: string }

      service = await startServiceProcess(env)
      const got = await api(`/fine_tuning/jobs/${job.id}`)
      assert.equal(got.status, 200)
      assert.deepEqual(await got.json(), job)
      const events = await (await api(`/fine_tuning/jobs/${job.id}/events`)).json() as { data: Array<{ message: string }> }
      assert.deepEqual(events.data.map(e => e.message), [
        `Created fine-tuning job: ${job.id}`,
        'Ignored unknown hyperparameters: surprise',
      ])
    })

    it('exits 0 promptly on SIGTERM, with a keep-alive client connected, and its last log lines written', async () => {
      await service?.kill('SIGKILL')
      // A long grace, so that "promptly" is told apart from "when the grace cut the idle connection":
      // held up by the client, it would take the whole minute; the bound below leaves room for a
      // loaded machine, where closing the store and flushing the log can take seconds.
      service = await startServiceProcess({ ...env, LOG_LEVEL: 'info', OPENTUNE_SHUTDOWN_GRACE_SECONDS: '60' })
      // An idle keep-alive connection (what every HTTP client library leaves open) must not hold it up.
      const agent = new (await import('node:http')).Agent({ keepAlive: true })
      await new Promise<void>((resolve, reject) => {
        httpRequest(`${service?.url}/v1/files`, { headers: auth(), agent }, res => { res.resume(); res.on('end', resolve) }).on('error', reject).end()
      })
      const stopped = await service.stopWithin('SIGTERM', 30_000)
      agent.destroy()
      assert.deepEqual(stopped, { code: 0, signal: null }, service.output())
      // Log lines are buffered (src/app.ts): the access line of the last request is still written.
      assert.match(service.output(), /"method":"GET","url":"\/v1\/files","status":200/)
      assert.match(service.output(), /"msg":"shutting down"/)
      service = undefined
    })

    it('on SIGTERM, cuts off an upload that stalls past the grace period, exits 0, and the upload is never listed', async () => {
      service = await startServiceProcess({ ...env, OPENTUNE_SHUTDOWN_GRACE_SECONDS: '1' })
      const req = httpRequest(`${service.url}/v1/files`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'multipart/form-data; boundary=b', 'content-length': '1000000' },
      })
      req.on('error', () => {})
      req.write('--b\r\nContent-Disposition: form-data; name="file"; filename="stalled.jsonl"\r\n\r\n{"text": "and then nothing more')
      await waitFor('the stalled upload to reach the disk', async () => (await readdir(tmpDir())).length > 0)
      // Never closed by the client: only the 1 s grace ends it. The bound leaves a loaded machine
      // seconds for the exit, and is still under the 10 s default: the setting is what cut it.
      const stopped = await service.stopWithin('SIGTERM', 9000)
      req.destroy()
      assert.deepEqual(stopped, { code: 0, signal: null }, service.output())
      // The cut-off upload may leave its .part (the process exits without waiting for the handler
      // to clean up); it is never listed, and the next start's sweep removes it.
      service = await startServiceProcess({ ...env, OPENTUNE_UPLOAD_STALE_SECONDS: '0' })
      assert.deepEqual(await readdir(tmpDir()), [])
      const listed = await (await api('/files')).json() as { data: Array<{ filename: string }> }
      assert.ok(!listed.data.some(f => f.filename === 'stalled.jsonl'), 'the stalled upload is not listed')
      await service.kill('SIGKILL')
      service = undefined
    })
  })
}

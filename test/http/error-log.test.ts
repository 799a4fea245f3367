// Class 6 of issue 10: what the error handler logs. A 500 is an error line with its stack and the
// request id, also on a POST whose body was read; a client that hangs up mid-upload is a disconnect.
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { buildApp } from '../../src/app.js'
import { openContext, type AppContext } from '../../src/context.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { DIALECTS, testConfig, uploadFile, type TestEnv } from '../helper.js'

interface LogLine { level: number, msg: string, reqId?: string, err?: { stack?: string, message?: string } }

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function waitFor<T> (what: string, find: () => T | undefined, ms = 30_000): Promise<T> {
  const started = Date.now()
  for (;;) {
    const found = find()
    if (found !== undefined) return found
    assert.ok(Date.now() - started < ms, `timed out waiting for ${what}`)
    await sleep(10)
  }
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: error logging`, () => {
    const lines: LogLine[] = []
    let app: FastifyInstance
    let ctx: AppContext
    let key: string
    let url: string
    let cleanup: () => Promise<void>

    before(async () => {
      const made = await testConfig(dialect)
      cleanup = made.cleanup
      ctx = await openContext(made.config)
      const stream = { write: (line: string) => { lines.push(JSON.parse(line) as LogLine) } }
      app = await buildApp(ctx, { logger: { level: 'info', stream } })
      const project = await ensureProject(ctx.db, 'main')
      key = (await createKey(ctx.db, project.id)).key
      url = await app.listen({ host: '127.0.0.1', port: 0 })
    })
    after(async () => { await app.close(); await ctx.store.close(); await cleanup() })

    it('class 6: a 500 on a POST with a JSON body is logged at error level with its stack and request id', async () => {
      const env = { app, auth: () => ({ authorization: `Bearer ${key}` }) } as unknown as TestEnv
      const trainingFile = await uploadFile(env)
      // A store call that fails after the body was read: job create appends its first event there.
      await sql`DROP TABLE job_events`.execute(ctx.db)
      const res = await fetch(`${url}/v1/fine_tuning/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': 'req-class-6' },
        body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: trainingFile }),
      })
      assert.equal(res.status, 500)
      const body = await res.json() as { error: { code: string, message: string } }
      assert.equal(body.error.code, 'internal_error')
      assert.match(body.error.message, /req-class-6/)
      const line = await waitFor('the error line', () => lines.find(l => l.reqId === 'req-class-6' && l.level >= 50))
      assert.equal(line.level, 50)
      assert.match(line.err?.stack ?? '', /job_events/, 'the line carries the error and its stack')
      assert.match(line.err?.stack ?? '', /\n\s+at /, 'a stack, not only the message')
      assert.ok(!lines.some(l => l.reqId === 'req-class-6' && l.msg === 'client disconnected'))
    })

    it('class 6: a client that disconnects mid-upload is logged as a disconnect, not as an error', async () => {
      const tmpDir = join(ctx.config.dataDir, 'files', '.tmp')
      const socket = connect(Number(new URL(url).port), '127.0.0.1')
      socket.on('error', () => {})
      await new Promise(resolve => socket.once('connect', resolve))
      const part = '--cut\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n' +
        '--cut\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n' +
        '{"text": "x"}\n'.repeat(1000)
      socket.write(`POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nX-Request-Id: req-cut\r\n` +
        `Content-Type: multipart/form-data; boundary=cut\r\nContent-Length: 90000\r\n\r\n${part}`)
      const started = Date.now()
      while ((await readdir(tmpDir).catch(() => [])).length === 0) {
        assert.ok(Date.now() - started < 30_000, 'the upload never reached the disk')
        await sleep(10)
      }
      socket.destroy()
      const line = await waitFor('the disconnect line',
        () => lines.find(l => l.reqId === 'req-cut' && l.msg === 'client disconnected'))
      assert.equal(line.level, 30)
      assert.ok(!lines.some(l => l.reqId === 'req-cut' && l.level >= 50), 'no error line for a disconnect')
    })
  })
}

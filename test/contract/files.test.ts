// Files API contract: every response validated against OpenAI's file schemas / our error body.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { expectErrorBody, expectOpenAI, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, multipartBody, uploadFile, type TestEnv } from '../helper.js'

for (const dialect of DIALECTS) {
  describe(`${dialect}: files`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect) })
    after(async () => { await env.close() })

    it('uploads, retrieves, lists, downloads and deletes a file', async () => {
      const content = '{"text": "héllo 👋"}\n'
      const { payload, headers } = multipartBody({ purpose: 'fine-tune' }, { name: 'données 🚀.jsonl', content })
      const up = await env.app.inject({ method: 'POST', url: '/v1/files', payload, headers: { ...headers, ...env.auth() } })
      assert.equal(up.statusCode, 200, up.body)
      expectOpenAI('OpenAIFile', up.json())
      const file = up.json()
      assert.match(file.id, /^file-[0-9a-f-]{36}$/)
      assert.equal(file.bytes, Buffer.byteLength(content))
      assert.equal(file.filename, 'données 🚀.jsonl')
      assert.equal(file.purpose, 'fine-tune')

      const got = await env.app.inject({ url: `/v1/files/${file.id}`, headers: env.auth() })
      assert.equal(got.statusCode, 200)
      expectOpenAI('OpenAIFile', got.json())
      assert.deepEqual(got.json(), file)

      const body = await env.app.inject({ url: `/v1/files/${file.id}/content`, headers: env.auth() })
      assert.equal(body.statusCode, 200)
      assert.equal(body.body, content)
      assert.equal(body.headers['content-length'], String(Buffer.byteLength(content)))

      const list = await env.app.inject({ url: '/v1/files', headers: env.auth() })
      expectOpenAI('ListFilesResponse', list.json())
      assert.ok(list.json().data.some((f: { id: string }) => f.id === file.id))

      const del = await env.app.inject({ method: 'DELETE', url: `/v1/files/${file.id}`, headers: env.auth() })
      assert.equal(del.statusCode, 200)
      expectOpenAI('DeleteFileResponse', del.json())
      assert.deepEqual(del.json(), { id: file.id, object: 'file', deleted: true })
      const gone = await env.app.inject({ url: `/v1/files/${file.id}`, headers: env.auth() })
      assert.equal(gone.statusCode, 404)
      expectErrorBody(gone)
    })

    it('rejects a missing or unknown purpose and a missing file with 422 naming the field', async () => {
      const cases: Array<[Record<string, string>, boolean, string[]]> = [
        [{}, true, ['body', 'purpose']],
        [{ purpose: 'assistants' }, true, ['body', 'purpose']],
        [{ purpose: 'fine-tune-results' }, true, ['body', 'purpose']],
        [{ purpose: 'fine-tune' }, false, ['body', 'file']],
      ]
      for (const [fields, withFile, loc] of cases) {
        const { payload, headers } = multipartBody(fields, withFile ? { name: 'a.jsonl', content: '{}\n' } : undefined)
        const res = await env.app.inject({ method: 'POST', url: '/v1/files', payload, headers: { ...headers, ...env.auth() } })
        assert.equal(res.statusCode, 422, res.body)
        expectSpec('POST', '/v1/fine_tuning/jobs', res) // the same HTTPValidationError shape
        assert.deepEqual(res.json().detail[0].loc, loc)
      }
      const list = await env.app.inject({ url: '/v1/files?purpose=batch', headers: env.auth() })
      assert.equal(list.json().data.length, 0, 'rejected uploads are not listed')
    })

    it('filters by purpose, orders newest first by default, and pages with after', async () => {
      const ids = []
      for (let i = 0; i < 3; i++) ids.push(await uploadFile(env, { purpose: 'batch', name: `b${i}.jsonl` }))
      const desc = (await env.app.inject({ url: '/v1/files?purpose=batch', headers: env.auth() })).json()
      assert.deepEqual(desc.data.map((f: { id: string }) => f.id), [...ids].reverse())
      const asc = (await env.app.inject({ url: '/v1/files?purpose=batch&order=asc&limit=2', headers: env.auth() })).json()
      expectOpenAI('ListFilesResponse', asc)
      assert.deepEqual(asc.data.map((f: { id: string }) => f.id), ids.slice(0, 2))
      assert.equal(asc.has_more, true)
      assert.equal(asc.first_id, ids[0])
      assert.equal(asc.last_id, ids[1])
      const next = (await env.app.inject({ url: `/v1/files?purpose=batch&order=asc&after=${asc.last_id}`, headers: env.auth() })).json()
      assert.deepEqual(next.data.map((f: { id: string }) => f.id), [ids[2]])
      assert.equal(next.has_more, false)
      const bad = await env.app.inject({ url: '/v1/files?purpose=nope', headers: env.auth() })
      assert.equal(bad.statusCode, 422)
      assert.deepEqual(bad.json().detail[0].loc, ['query', 'purpose'])
    })

    it('refuses to delete a file that an unfinished job uses (409), and keeps it', async () => {
      const fileId = await uploadFile(env)
      const job = await createJob(env, { training_file: fileId })
      assert.equal(job.statusCode, 200, job.body)
      const del = await env.app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: env.auth() })
      assert.equal(del.statusCode, 409)
      expectErrorBody(del)
      assert.equal(del.json().error.code, 'file_in_use')
      assert.match(del.json().error.message, new RegExp(job.json().id))
      const still = await env.app.inject({ url: `/v1/files/${fileId}/content`, headers: env.auth() })
      assert.equal(still.statusCode, 200)
      const cancelled = await env.app.inject({ method: 'POST', url: `/v1/fine_tuning/jobs/${job.json().id}/cancel`, headers: env.auth() })
      assert.equal(cancelled.statusCode, 200)
      const del2 = await env.app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: env.auth() })
      assert.equal(del2.statusCode, 200, 'deletable once the job has finished')
    })

    it('serves byte ranges', async () => {
      const fileId = await uploadFile(env, { content: '0123456789' })
      const part = await env.app.inject({ url: `/v1/files/${fileId}/content`, headers: { ...env.auth(), range: 'bytes=2-5' } })
      assert.equal(part.statusCode, 206)
      assert.equal(part.body, '2345')
      assert.equal(part.headers['content-range'], 'bytes 2-5/10')
      const tail = await env.app.inject({ url: `/v1/files/${fileId}/content`, headers: { ...env.auth(), range: 'bytes=-3' } })
      assert.equal(tail.body, '789')
      const outside = await env.app.inject({ url: `/v1/files/${fileId}/content`, headers: { ...env.auth(), range: 'bytes=50-60' } })
      assert.equal(outside.statusCode, 416)
      expectErrorBody(outside)
      assert.equal(outside.headers['content-range'], 'bytes */10')
    })

    it('answers another project\'s file exactly like an unknown one', async () => {
      const fileId = await uploadFile(env)
      const unknown = 'file-00000000-0000-4000-8000-000000000000'
      for (const [method, suffix] of [['GET', ''], ['GET', '/content'], ['DELETE', '']] as const) {
        const foreign = await env.app.inject({ method, url: `/v1/files/${fileId}${suffix}`, headers: env.auth(env.otherKey) })
        const missing = await env.app.inject({ method, url: `/v1/files/${unknown}${suffix}`, headers: env.auth(env.otherKey) })
        assert.equal(foreign.statusCode, 404)
        expectErrorBody(foreign)
        assert.equal(foreign.body.replaceAll(fileId, 'ID'), missing.body.replaceAll(unknown, 'ID'))
      }
      const list = (await env.app.inject({ url: '/v1/files', headers: env.auth(env.otherKey) })).json()
      assert.ok(!list.data.some((f: { id: string }) => f.id === fileId))
    })
  })
}

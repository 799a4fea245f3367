// POST /v1/files/{file_id}/check: a dataset checked against a model before any job exists, with the
// same report as `opentune data check --json` (the problems name the line and the field).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { CHAT_LINE, DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'

for (const dialect of DIALECTS) {
  describe(`${dialect}: POST /v1/files/{file_id}/check`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect) })
    after(async () => { await env.close() })

    const check = async (fileId: string, body: Record<string, unknown>, key?: string) =>
      await env.app.inject({ method: 'POST', url: `/v1/files/${fileId}/check`, headers: env.auth(key), payload: body })

    it('reports a valid file\'s examples, tokens and steps per epoch for the model', async () => {
      const fileId = await uploadFile(env, { content: CHAT_LINE.repeat(10) })
      const res = await check(fileId, { model: 'opentune/tiny-llama', batch_size: 4, packing: false })
      assert.equal(res.statusCode, 200, res.body)
      const report = res.json()
      assert.equal(report.object, 'file.check')
      assert.equal(report.file_id, fileId)
      assert.equal(report.ok, true)
      assert.equal(report.format, 'chat')
      assert.equal(report.examples, 10)
      assert.equal(report.steps_per_epoch, 3)
      assert.ok(report.loss_tokens > 0 && report.loss_tokens < report.tokens)
    })

    it('names the line and the field of each problem, and changes nothing', async () => {
      const bad = CHAT_LINE + '{"messages": [{"role": "user", "content": "Hi"}]}\n' + 'not json\n'
      const fileId = await uploadFile(env, { content: bad })
      const res = await check(fileId, { model: 'opentune/tiny-llama' })
      assert.equal(res.statusCode, 200)
      const report = res.json()
      assert.equal(report.ok, false)
      assert.equal(report.total_problems, 2)
      assert.deepEqual(report.problems.map((p: { line: number }) => p.line), [2, 3])
      const file = (await env.app.inject({ url: `/v1/files/${fileId}`, headers: env.auth() })).json()
      assert.equal(file.bytes, Buffer.byteLength(bad))
    })

    it('answers an unknown model 400, a bad body 422, another project\'s file 404', async () => {
      const fileId = await uploadFile(env)
      const unknown = await check(fileId, { model: 'no/such-model' })
      assert.equal(unknown.statusCode, 400)
      assert.equal(unknown.json().error.param, 'model')
      const invalid = await check(fileId, { model: 'opentune/tiny-llama', batch_size: 0 })
      assert.equal(invalid.statusCode, 422)
      assert.deepEqual(invalid.json().detail[0].loc, ['body', 'batch_size'])
      const foreign = await check(fileId, { model: 'opentune/tiny-llama' }, env.otherKey)
      assert.equal(foreign.statusCode, 404)
      assert.equal(foreign.json().error.code, 'file_not_found')
    })
  })
}

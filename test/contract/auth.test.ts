// Authentication: every /v1 route needs a live key of the project; 401 with WWW-Authenticate otherwise.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createKey, revokeKeys } from '../../src/projects/keys.store.js'
import { expectErrorBody } from '../contract.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

const ROUTES: Array<[string, string]> = [
  ['GET', '/v1/files'], ['POST', '/v1/files'], ['GET', '/v1/files/file-x'], ['GET', '/v1/files/file-x/content'],
  ['DELETE', '/v1/files/file-x'], ['GET', '/v1/fine_tuning/jobs'], ['POST', '/v1/fine_tuning/jobs'],
  ['GET', '/v1/fine_tuning/jobs/ftjob-x'], ['POST', '/v1/fine_tuning/jobs/ftjob-x/cancel'],
  ['GET', '/v1/fine_tuning/jobs/ftjob-x/events'], ['GET', '/v1/fine_tuning/jobs/ftjob-x/checkpoints'],
  ['GET', '/v1/fine_tuning/jobs/ftjob-x/checkpoints/ftckpt_x'], ['GET', '/v1/fine_tuning/jobs/ftjob-x/metrics'],
  ['GET', '/v1/models'],
  ['GET', '/v0/models'], ['POST', '/v0/models'], ['GET', '/v0/models/org/m-LoRa:x-abcd'],
  ['DELETE', '/v0/models/org/m-LoRa:x-abcd'],
]

for (const dialect of DIALECTS) {
  describe(`${dialect}: authentication`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect) })
    after(async () => { await env.close() })

    it('refuses missing, malformed and unknown keys on every route', async () => {
      const headerSets: Array<Record<string, string>> = [
        {},
        { authorization: 'Basic dXNlcjpwYXNz' },
        { authorization: 'Bearer' },
        { authorization: `Bearer ${env.key}x` },
        { authorization: 'Bearer sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' },
      ]
      for (const [method, url] of ROUTES) {
        for (const headers of headerSets) {
          const res = await env.app.inject({ method: method as 'GET', url, headers })
          assert.equal(res.statusCode, 401, `${method} ${url} ${JSON.stringify(headers)}`)
          assert.equal(res.headers['www-authenticate'], 'Bearer')
          expectErrorBody(res)
        }
      }
    })

    it('refuses a revoked key and accepts a new one', async () => {
      const { key, info } = await createKey(env.ctx.db, env.projectId)
      assert.equal((await env.app.inject({ url: '/v1/files', headers: env.auth(key) })).statusCode, 200)
      assert.equal(await revokeKeys(env.ctx.db, info.prefix), 1)
      const res = await env.app.inject({ url: '/v1/files', headers: env.auth(key) })
      assert.equal(res.statusCode, 401)
      assert.equal(res.json().error.code, 'invalid_api_key')
      assert.equal((await env.app.inject({ url: '/v1/files', headers: env.auth() })).statusCode, 200, 'other keys still work')
    })

    it('needs no key for /health and /openapi.json, and echoes x-request-id', async () => {
      const health = await env.app.inject({ url: '/health', headers: { 'x-request-id': 'abc-123' } })
      assert.equal(health.statusCode, 200)
      assert.equal(health.headers['x-request-id'], 'abc-123')
      const doc = await env.app.inject({ url: '/openapi.json' })
      assert.equal(doc.statusCode, 200)
      const spec = doc.json()
      assert.ok(spec.paths['/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}'].get)
      assert.ok(spec.paths['/v1/files'].post)
      const anyReq = await env.app.inject({ url: '/v1/files', headers: env.auth() })
      assert.match(String(anyReq.headers['x-request-id']), /^req_[0-9a-f]{24}$/)
    })

    it('accepts ai_project_id only for the key\'s own project', async () => {
      const own = await env.app.inject({ url: `/v1/fine_tuning/jobs?ai_project_id=${env.projectId}`, headers: env.auth() })
      assert.equal(own.statusCode, 200)
      const foreign = await env.app.inject({ url: `/v1/fine_tuning/jobs?ai_project_id=${env.otherProjectId}`, headers: env.auth() })
      assert.equal(foreign.statusCode, 404)
      expectErrorBody(foreign)
    })
  })
}

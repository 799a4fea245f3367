// Class 7 of issue 10: `?ai_project_id=` given twice skipped the project check on /v1/files and
// /v1/models (200), where the jobs routes' schemas answered 422. One rule now, in the auth hook that
// every /v1 route runs (docs/errors.md): repeated → 422 on ["query","ai_project_id"], whatever the
// values; another project's id, or none that exists → 404 project_not_found; the key's own, or an
// empty value → as if not given. Table-driven over test/routes.ts: a new route is covered by its row.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { InjectOptions } from 'fastify'
import { expectErrorBody } from '../contract.js'
import { CHAT_LINE, DIALECTS, makeTestEnv, multipartBody, type TestEnv } from '../helper.js'
import { type Fixtures, makeFixtures, type Route, routeName, ROUTES, routeUrl } from '../routes.js'

type Headers = Record<string, string>

function request (env: TestEnv, route: Route, f: Fixtures, query: string, auth: Headers = env.auth()): InjectOptions {
  const url = `${routeUrl(route, f)}?${query}`
  if (route.body === 'upload') {
    const form = multipartBody({ purpose: 'fine-tune' }, { name: 'train.jsonl', content: CHAT_LINE })
    return { method: route.method, url, payload: form.payload, headers: { ...auth, ...form.headers } }
  }
  return { method: route.method, url, headers: auth, ...(route.body ? { payload: route.body(f) } : {}) }
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: class 7, ?ai_project_id= on every route`, () => {
    let env: TestEnv
    let fixtures: Fixtures
    before(async () => {
      env = await makeTestEnv(dialect)
      fixtures = await makeFixtures(env)
    })
    after(async () => { await env.close() })

    it('class 7: repeated → 422 on every route, whatever the values; repeated without a key → 401', async () => {
      const own = env.projectId
      const other = env.otherProjectId
      for (const route of ROUTES) {
        for (const query of [`ai_project_id=${own}&ai_project_id=${own}`, `ai_project_id=${own}&ai_project_id=${other}`,
          `ai_project_id=${other}&ai_project_id=${own}`, `ai_project_id=&ai_project_id=${other}`]) {
          const what = `${routeName(route)}?${query}`
          const res = await env.app.inject(request(env, route, fixtures, query))
          assert.equal(res.statusCode, 422, `${what}: ${res.body}`)
          expectErrorBody(res)
          const values = new URLSearchParams(query).getAll('ai_project_id')
          const issue = { loc: ['query', 'ai_project_id'], msg: 'Input should be a valid string', type: 'string_type' }
          assert.deepEqual(res.json().detail, [{ ...issue, input: values }], what)
          assert.equal(res.json().error.param, 'ai_project_id', what)
        }
        const twice = `ai_project_id=${own}&ai_project_id=${own}`
        const anonymous = await env.app.inject(request(env, route, fixtures, twice, {}))
        assert.equal(anonymous.statusCode, 401, routeName(route))
      }
    })

    it('class 7: another project\'s id, or one that does not exist → 404 project_not_found on every route',
      async () => {
        for (const route of ROUTES) {
          for (const asked of [env.otherProjectId, 'proj_00000000000000000000000000000000', 'x']) {
            const what = `${routeName(route)}?ai_project_id=${asked}`
            const res = await env.app.inject(request(env, route, fixtures, `ai_project_id=${asked}`))
            assert.equal(res.statusCode, 404, `${what}: ${res.body}`)
            expectErrorBody(res)
            assert.equal(res.json().error.code, 'project_not_found', what)
            assert.equal(res.json().error.param, 'ai_project_id', what)
          }
        }
      })

    it('class 7: the key\'s own id once, or an empty one, is answered as if not given', async () => {
      for (const route of ROUTES) {
        for (const query of [`ai_project_id=${env.projectId}`, 'ai_project_id=']) {
          const res = await env.app.inject(request(env, route, fixtures, query))
          const what = `${routeName(route)}?${query}: ${res.statusCode} ${res.body.slice(0, 300)}`
          assert.ok(res.statusCode < 500, what)
          const error = res.statusCode >= 400 ? res.json().error : null
          assert.notEqual(error?.param, 'ai_project_id', what)
        }
      }
    })
  })
}

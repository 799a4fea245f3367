// Class 2 of issue 10: a number JSON.parse reads as ±Infinity (`1e309`) is refused with pydantic's 422
// on the field, for every numeric field of every JSON body; it was echoed as null and trained at the default.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { JobCreateBody } from '../../src/fine-tuning/jobs.schemas.js'
import { expectErrorBody } from '../contract.js'
import { DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'

type Path = Array<string | number>
interface Schema { type?: string, properties?: Record<string, Schema>, anyOf?: Schema[], items?: Schema }

/** Every number or integer field a schema declares, so a numeric field added later is tested too. */
function numericPaths (schema: Schema, path: Path = []): Path[] {
  if (schema.type === 'number' || schema.type === 'integer') return [path]
  const out: Path[] = []
  for (const branch of schema.anyOf ?? []) out.push(...numericPaths(branch, path))
  for (const [key, child] of Object.entries(schema.properties ?? {})) out.push(...numericPaths(child, [...path, key]))
  if (schema.items) out.push(...numericPaths(schema.items, [...path, 0]))
  return out
}

// The declared fields, and keys no schema names: those are stored and echoed, so they are refused too.
const DECLARED = numericPaths(JobCreateBody as unknown as Schema)
const UNDECLARED: Path[] = [['hyperparameters', 'not_a_known_key'], ['extra_body', 'x'],
  ['integrations', 0, 'wandb', 'n'], ['from_checkpoint', 'step'], ['tags_weight']]
const SPELLINGS = ['1e309', '-1e309', '1E400', `1${'0'.repeat(400)}`, '-1.5e99999']

/** The JSON text of a valid job create with `literal` (raw JSON text) at `path`. */
function bodyWith (trainingFile: string, path: Path, literal: string): string {
  const marker = '@@NUMBER@@'
  const body: Record<string, unknown> = { model: 'opentune/tiny-llama', training_file: trainingFile }
  let at: Record<string | number, unknown> = body
  path.forEach((key, i) => {
    if (i === path.length - 1) { at[key] = marker; return }
    at[key] ??= typeof path[i + 1] === 'number' ? [] : {}
    at = at[key] as Record<string | number, unknown>
  })
  if (path[0] === 'method') body.method = { type: 'supervised', ...(body.method as object) }
  if (path[0] === 'integrations') body.integrations = [{ type: 'wandb', wandb: { n: marker } }]
  return JSON.stringify(body).replace(`"${marker}"`, literal)
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: non-finite numbers`, () => {
    let env: TestEnv
    let trainingFile: string

    before(async () => {
      env = await makeTestEnv(dialect)
      trainingFile = await uploadFile(env)
    })
    after(async () => { await env.close() })

    const post = (payload: string) => env.app.inject({
      method: 'POST',
      url: '/v1/fine_tuning/jobs',
      payload,
      headers: { ...env.auth(), 'content-type': 'application/json' },
    })

    it('class 2: the schema walk finds every numeric hyperparameter, in both places, and the seed', () => {
      const names = DECLARED.map(p => p.join('.'))
      for (const f of ['learning_rate', 'weight_decay', 'max_grad_norm', 'lora_alpha', 'batch_size', 'lora_dropout']) {
        assert.ok(names.includes(`hyperparameters.${f}`), f)
        assert.ok(names.includes(`method.supervised.hyperparameters.${f}`), f)
      }
      assert.ok(names.includes('seed'))
    })

    it('class 2: every numeric field of a job create at ±1e309 (and other spellings): 422 naming it', async () => {
      for (const path of [...DECLARED, ...UNDECLARED]) {
        for (const literal of SPELLINGS) {
          const res = await post(bodyWith(trainingFile, path, literal))
          const what = `${path.join('.')} = ${literal.slice(0, 12)}`
          assert.equal(res.statusCode, 422, `${what}: ${res.body}`)
          expectErrorBody(res)
          const body = res.json()
          assert.equal(body.detail.length, 1, what)
          assert.deepEqual(body.detail[0].loc, ['body', ...path], what)
          assert.equal(body.detail[0].msg, 'Input should be a finite number', what)
          assert.equal(body.detail[0].type, 'finite_number', what)
          assert.equal(body.detail[0].input, literal.startsWith('-') ? '-Infinity' : 'Infinity', what)
          assert.equal(body.error.code, 'validation_error', what)
          assert.equal(body.error.param, path.join('.'), what)
        }
      }
      const list = await env.app.inject({ method: 'GET', url: '/v1/fine_tuning/jobs', headers: env.auth() })
      assert.deepEqual(list.json().data, [], 'no job was created')
    })

    it('class 2: several non-finite fields are each named, in order; a query\'s too; 1e308 is accepted', async () => {
      const body = `{"model":"opentune/tiny-llama","training_file":"${trainingFile}",` +
        '"hyperparameters":{"weight_decay":-1e309,"learning_rate":1e309},"seed":1e309}'
      const res = await post(body)
      assert.equal(res.statusCode, 422)
      assert.deepEqual(res.json().detail.map((d: { loc: Path }) => d.loc.join('.')),
        ['body.hyperparameters.weight_decay', 'body.hyperparameters.learning_rate', 'body.seed'])
      assert.equal((await post('1e309')).json().detail[0].loc.join('.'), 'body', 'a bare number is the body')
      for (const url of ['/v1/fine_tuning/jobs?limit=1e309', '/v1/files?limit=-1e309']) {
        const query = await env.app.inject({ method: 'GET', url, headers: env.auth() })
        assert.equal(query.statusCode, 422, url)
        assert.deepEqual(query.json().detail, [{
          loc: ['query', 'limit'],
          msg: 'Input should be a finite number',
          type: 'finite_number',
          input: url.includes('-') ? '-Infinity' : 'Infinity'
        }], url)
      }
      const finite = await post(bodyWith(trainingFile, ['hyperparameters', 'max_grad_norm'], '1e308'))
      assert.equal(finite.statusCode, 200, finite.body)
      assert.equal(finite.json().hyperparameters.max_grad_norm, 1e308)
    })
  })
}

// Fine-tuning jobs contract: create / list / retrieve / cancel, validated against the Nebius spec.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { updateJob } from '../../src/fine-tuning/jobs.store.js'
import { expectErrorBody, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'

const JOBS = '/v1/fine_tuning/jobs'

for (const dialect of DIALECTS) {
  describe(`${dialect}: fine-tuning jobs`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect) })
    after(async () => { await env.close() })

    it('creates a job with every hyperparameter resolved and echoes unknown keys', async () => {
      const res = await createJob(env, { hyperparameters: { n_epochs: 2, lora: true, learning_rate_multiplier: 2 }, suffix: 'mine', seed: 42, tags: ['a'] })
      assert.equal(res.statusCode, 200, res.body)
      expectSpec('POST', JOBS, res)
      const job = res.json()
      assert.match(job.id, /^ftjob-[0-9a-f]{32}$/)
      assert.equal(job.status, 'validating_files')
      assert.deepEqual(job.hyperparameters, {
        batch_size: 8,
        learning_rate: 1e-5,
        n_epochs: 2,
        warmup_ratio: 0,
        weight_decay: 0,
        packing: true,
        max_grad_norm: 1,
        context_length: 8192,
        lora: true,
        lora_r: 8,
        lora_alpha: 8,
        lora_dropout: 0,
        learning_rate_multiplier: 2,
      })
      assert.equal(job.seed, 42)
      assert.equal(job.suffix, 'mine')
      assert.deepEqual(job.result_files, [])
      assert.equal(job.trained_tokens, 0)
      assert.equal(job.error, null)
      const events = (await env.app.inject({ url: `${JOBS}/${job.id}/events`, headers: env.auth() })).json()
      assert.ok(events.data.some((e: { level: string, message: string }) => e.level === 'warn' && e.message.includes('learning_rate_multiplier')))
    })

    it('accepts method:{type:"supervised"} and rejects method together with hyperparameters', async () => {
      const viaMethod = await createJob(env, { method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 4 } } } })
      assert.equal(viaMethod.statusCode, 200, viaMethod.body)
      assert.equal(viaMethod.json().hyperparameters.batch_size, 4)
      assert.equal(viaMethod.json().method.type, 'supervised')
      const bare = await createJob(env, { method: { type: 'supervised' } })
      assert.equal(bare.statusCode, 200, bare.body)
      const both = await createJob(env, { method: { type: 'supervised' }, hyperparameters: { n_epochs: 1 } })
      assert.equal(both.statusCode, 422)
      expectSpec('POST', JOBS, both)
      assert.deepEqual(both.json().detail[0].loc, ['body', 'method'])
      const dpo = await createJob(env, { method: { type: 'dpo' } })
      assert.equal(dpo.statusCode, 422)
      assert.deepEqual(dpo.json().detail[0].loc, ['body', 'method', 'type'])
      const draft = await createJob(env, { method: { type: 'spec-draft', spec_draft: { hyperparameters: {} } } })
      assert.equal(draft.statusCode, 200, draft.body) // test/contract/spec-draft-jobs.test.ts says more
    })

    it('answers bad bodies with 422 whose detail locates each field', async () => {
      const cases: Array<[Record<string, unknown>, Array<string | number>, string]> = [
        [{ hyperparameters: { n_epochs: 21 } }, ['body', 'hyperparameters', 'n_epochs'], 'less_than_equal'],
        [{ hyperparameters: { n_epochs: 0 } }, ['body', 'hyperparameters', 'n_epochs'], 'greater_than_equal'],
        [{ hyperparameters: { batch_size: 'big' } }, ['body', 'hyperparameters', 'batch_size'], 'int_type'],
        [{ hyperparameters: { batch_size: 2.5 } }, ['body', 'hyperparameters', 'batch_size'], 'int_from_float'],
        [{ hyperparameters: { max_grad_norm: 0 } }, ['body', 'hyperparameters', 'max_grad_norm'], 'greater_than'],
        [{ hyperparameters: { context_length: 4096 } }, ['body', 'hyperparameters', 'context_length'], 'greater_than_equal'],
        [{ hyperparameters: { lora_r: 256 } }, ['body', 'hyperparameters', 'lora_r'], 'less_than_equal'],
        [{ hyperparameters: { lora: 'yes' } }, ['body', 'hyperparameters', 'lora'], 'bool_type'],
        [{ hyperparameters: 'fast' }, ['body', 'hyperparameters'], 'model_attributes_type'],
        [{ suffix: 'x'.repeat(65) }, ['body', 'suffix'], 'string_too_long'],
        [{ seed: -1 }, ['body', 'seed'], 'greater_than_equal'],
        [{ tags: 'my-ft-job' }, ['body', 'tags'], 'list_type'],
        [{ model: 7 }, ['body', 'model'], 'string_type'],
        [{ training_file: undefined, model: 'opentune/tiny-llama' }, ['body', 'training_file'], 'missing'],
        [{ integrations: [{ type: 'wandb', wandb: { project: 'p' } }] }, ['body', 'integrations', 0, 'wandb', 'api_key'], 'missing'],
        // optional integration fields are typed too: stored wrong, every later GET failed the spec
        [{ integrations: [{ type: 'wandb', wandb: { project: 'p', api_key: 'k', name: 5 } }] }, ['body', 'integrations', 0, 'wandb', 'name'], 'string_type'],
        [{ integrations: [{ type: 'wandb', wandb: { project: 'p', api_key: 'k', tags: 'x' } }] }, ['body', 'integrations', 0, 'wandb', 'tags'], 'list_type'],
        [{ integrations: [{ type: 'wandb', wandb: { project: 'p', api_key: 'k', tags: ['a', 3] } }] }, ['body', 'integrations', 0, 'wandb', 'tags', 1], 'string_type'],
        [{ integrations: [{ type: 'mlflow', mlflow: { tracking_uri: 'u', experiment_name: null, run_name: 'r', certificate_file: 'c', username: 'u', password: 'p', tags: { a: 5 } } }] }, ['body', 'integrations', 0, 'mlflow', 'tags', 'a'], 'string_type'],
        [{ validation_file: '' }, ['body', 'validation_file'], 'string_too_short'],
        [{ integrations: [{ type: 'toString', toString: {} }] }, ['body', 'integrations', 0, 'type'], 'literal_error'],
        [{ integrations: [{ type: '__proto__' }] }, ['body', 'integrations', 0, 'type'], 'literal_error'],
      ]
      for (const [body, loc, type] of cases) {
        const payload = { model: 'opentune/tiny-llama', training_file: 'file-x', ...body }
        const res = await env.app.inject({ method: 'POST', url: JOBS, headers: env.auth(), payload: JSON.parse(JSON.stringify(payload)) })
        assert.equal(res.statusCode, 422, `${JSON.stringify(body)} → ${res.body}`)
        expectSpec('POST', JOBS, res)
        const detail = res.json().detail
        assert.deepEqual(detail[0].loc, loc, JSON.stringify(detail))
        assert.equal(detail[0].type, type)
        assert.equal(detail.length, 1, 'one issue per bad field')
      }
      const missingBody = await env.app.inject({ method: 'POST', url: JOBS, headers: env.auth() })
      assert.equal(missingBody.statusCode, 422)
      assert.deepEqual(missingBody.json().detail[0].loc, ['body'])
    })

    it('accepts every edge value of the ranges, which the trainer accepts too (hyperparameters.json)', async () => {
      const edges = [
        {
          batch_size: 64,
          n_epochs: 20,
          lora: true,
          lora_r: 128,
          lora_dropout: 1,
          warmup_ratio: 1,
          learning_rate: 0,
          context_length: 131072,
        },
        {
          batch_size: 1,
          n_epochs: 1,
          lora_r: 8,
          lora_alpha: 8,
          max_grad_norm: 1e-9,
          context_length: 8192,
          learning_rate: 1e308,
        },
      ]
      for (const hyperparameters of edges) {
        const res = await createJob(env, { hyperparameters })
        assert.equal(res.statusCode, 200, `${JSON.stringify(hyperparameters)} → ${res.body}`)
        assert.deepEqual({ ...res.json().hyperparameters, ...hyperparameters }, res.json().hyperparameters)
      }
    })

    it('answers 400 for unusable files and models', async () => {
      const batchFile = await uploadFile(env, { purpose: 'batch' })
      const foreignFile = await uploadFile(env, { key: env.otherKey })
      const cases: Array<[Record<string, unknown>, string, string]> = [
        [{ training_file: 'file-00000000-0000-4000-8000-000000000000' }, 'training_file', 'file_not_found'],
        [{ training_file: foreignFile }, 'training_file', 'file_not_found'],
        [{ training_file: batchFile }, 'training_file', 'invalid_file_purpose'],
        [{ validation_file: 'file-nope' }, 'validation_file', 'file_not_found'],
        [{ model: 'meta-llama/Llama-3.1-8B-Instruct' }, 'model', 'model_not_available'],
        [{ model: '../../etc' }, 'model', 'model_not_available'],
        [{ from_checkpoint: { type: 'hf', repo: 'x/y' } }, 'from_checkpoint', 'unsupported_parameter'],
      ]
      for (const [body, param, code] of cases) {
        const res = await createJob(env, body)
        assert.equal(res.statusCode, 400, `${JSON.stringify(body)} → ${res.body}`)
        expectErrorBody(res)
        assert.equal(res.json().error.param, param)
        assert.equal(res.json().error.code, code)
      }
    })

    it('never echoes integration secrets', async () => {
      const res = await createJob(env, {
        integrations: [
          { type: 'wandb', wandb: { project: 'p', api_key: 'SECRET-1', tags: ['t'] } },
          { type: 'hf', hf: { output_repo_name: 'me/model', api_token: 'SECRET-2' } },
        ],
      })
      assert.equal(res.statusCode, 200, res.body)
      expectSpec('POST', JOBS, res)
      assert.ok(!res.body.includes('SECRET'))
      assert.deepEqual(res.json().integrations, [{ type: 'wandb', wandb: { project: 'p', tags: ['t'] } }, { type: 'hf', hf: { output_repo_name: 'me/model' } }])
      const got = await env.app.inject({ url: `${JOBS}/${res.json().id}`, headers: env.auth() })
      assert.ok(!got.body.includes('SECRET'))
    })

    it('cancels: idempotent on cancelled, 409 on succeeded and failed', async () => {
      const job = (await createJob(env)).json()
      const first = await env.app.inject({ method: 'POST', url: `${JOBS}/${job.id}/cancel`, headers: env.auth() })
      assert.equal(first.statusCode, 200)
      expectSpec('POST', `${JOBS}/{job_id}/cancel`, first)
      assert.equal(first.json().status, 'cancelled')
      assert.ok(first.json().finished_at >= job.created_at)
      const again = await env.app.inject({ method: 'POST', url: `${JOBS}/${job.id}/cancel`, headers: env.auth() })
      assert.equal(again.statusCode, 200)
      assert.deepEqual(again.json(), first.json())
      for (const status of ['succeeded', 'failed'] as const) {
        const other = (await createJob(env)).json()
        await updateJob(env.ctx.db, other.id, { status, error: status === 'failed' ? { code: 'x', message: 'y', param: null } : null })
        const res = await env.app.inject({ method: 'POST', url: `${JOBS}/${other.id}/cancel`, headers: env.auth(), payload: {} })
        assert.equal(res.statusCode, 409)
        expectErrorBody(res)
        assert.equal(res.json().error.code, 'job_not_cancellable')
      }
    })

    it('lists newest first with limit and after; validates limit', async () => {
      const fresh = await makeTestEnv(dialect)
      try {
        const empty = await fresh.app.inject({ url: JOBS, headers: fresh.auth() })
        expectSpec('GET', JOBS, empty)
        assert.deepEqual(empty.json(), { object: 'list', data: [], has_more: false })
        const ids = []
        for (let i = 0; i < 3; i++) ids.push((await createJob(fresh)).json().id)
        const newestFirst = [...ids].reverse()
        const page = await fresh.app.inject({ url: `${JOBS}?limit=2`, headers: fresh.auth() })
        expectSpec('GET', JOBS, page)
        assert.deepEqual(page.json().data.map((j: { id: string }) => j.id), newestFirst.slice(0, 2))
        assert.equal(page.json().has_more, true)
        const rest = await fresh.app.inject({ url: `${JOBS}?limit=2&after=${newestFirst[1]}`, headers: fresh.auth() })
        assert.deepEqual(rest.json().data.map((j: { id: string }) => j.id), [newestFirst[2]])
        assert.equal(rest.json().has_more, false)
        const afterLast = await fresh.app.inject({ url: `${JOBS}?after=${newestFirst[2]}`, headers: fresh.auth() })
        assert.deepEqual(afterLast.json(), { object: 'list', data: [], has_more: false })
        const zero = await fresh.app.inject({ url: `${JOBS}?limit=0`, headers: fresh.auth() })
        assert.deepEqual(zero.json(), { object: 'list', data: [], has_more: true })
        const hundred = await fresh.app.inject({ url: `${JOBS}?limit=100`, headers: fresh.auth() })
        assert.equal(hundred.json().data.length, 3)
        for (const [limit, type] of [['101', 'less_than_equal'], ['-1', 'greater_than_equal'], ['abc', 'int_parsing']]) {
          const res = await fresh.app.inject({ url: `${JOBS}?limit=${limit}`, headers: fresh.auth() })
          assert.equal(res.statusCode, 422)
          expectSpec('GET', JOBS, res)
          assert.deepEqual(res.json().detail[0].loc, ['query', 'limit'])
          assert.equal(res.json().detail[0].type, type)
        }
        const unknown = await fresh.app.inject({ url: `${JOBS}?after=ftjob-nope`, headers: fresh.auth() })
        assert.equal(unknown.statusCode, 422)
        assert.deepEqual(unknown.json().detail[0].loc, ['query', 'after'])
      } finally {
        await fresh.close()
      }
    })

    it('retrieves a job and answers another project\'s job exactly like an unknown one', async () => {
      const job = (await createJob(env)).json()
      const got = await env.app.inject({ url: `${JOBS}/${job.id}`, headers: env.auth() })
      expectSpec('GET', `${JOBS}/{job_id}`, got)
      assert.deepEqual(got.json(), job)
      const unknown = 'ftjob-00000000000000000000000000000000'
      const paths = ['', '/events', '/checkpoints', '/checkpoints/ftckpt_x']
      for (const suffix of paths) {
        const foreign = await env.app.inject({ url: `${JOBS}/${job.id}${suffix}`, headers: env.auth(env.otherKey) })
        const missing = await env.app.inject({ url: `${JOBS}/${unknown}${suffix}`, headers: env.auth(env.otherKey) })
        assert.equal(foreign.statusCode, 404, suffix)
        expectErrorBody(foreign)
        assert.equal(foreign.body.replaceAll(job.id, 'ID'), missing.body.replaceAll(unknown, 'ID'))
      }
      const cancel = await env.app.inject({ method: 'POST', url: `${JOBS}/${job.id}/cancel`, headers: env.auth(env.otherKey) })
      assert.equal(cancel.statusCode, 404)
      const stillThere = await env.app.inject({ url: `${JOBS}/${job.id}`, headers: env.auth() })
      assert.equal(stillThere.json().status, 'validating_files', 'a foreign cancel changed nothing')
      const list = (await env.app.inject({ url: JOBS, headers: env.auth(env.otherKey) })).json()
      assert.ok(!list.data.some((j: { id: string }) => j.id === job.id))
    })
  })
}

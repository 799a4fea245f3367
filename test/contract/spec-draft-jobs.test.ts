// The spec-draft method (an EAGLE-3 drafter for the job's model): created, resolved, echoed and
// refused as the Nebius spec says, and its checkpoints never taken for models.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { updateJob } from '../../src/fine-tuning/jobs.store.js'
import { SPEC_DRAFT_DEFAULTS } from '../../src/fine-tuning/spec-draft-hyperparameters.js'
import { expectErrorBody, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

const JOBS = '/v1/fine_tuning/jobs'
const AT = ['body', 'method', 'spec_draft', 'hyperparameters']

const NEBIUS_AND_VOCAB = new Set(['batch_size', 'learning_rate', 'n_epochs', 'warmup_ratio', 'weight_decay', 'packing',
  'max_grad_norm', 'context_length', 'architecture', 'num_decoding_heads', 'loss', 'draft_vocab_size'])

const DEFAULTS = {
  batch_size: 8,
  learning_rate: 0.0075,
  n_epochs: 1,
  warmup_ratio: 0,
  weight_decay: 0,
  packing: true,
  max_grad_norm: 1,
  context_length: 8192,
  architecture: 'eagle3_original',
  num_decoding_heads: 3,
  loss: { type: 'kl' },
  draft_vocab_size: 32000,
  // opentune's other extras (x-opentune in spec_draft_hyperparameters.json) as that file says
  ...Object.fromEntries(Object.entries(SPEC_DRAFT_DEFAULTS).filter(([k]) => !NEBIUS_AND_VOCAB.has(k))),
}

const specDraft = (hyperparameters?: Record<string, unknown>) =>
  ({ method: { type: 'spec-draft', ...(hyperparameters ? { spec_draft: { hyperparameters } } : {}) } })

for (const dialect of DIALECTS) {
  describe(`${dialect}: spec-draft jobs`, () => {
    let env: TestEnv
    before(async () => { env = await makeTestEnv(dialect) })
    after(async () => { await env.close() })

    const eventsOf = async (id: string) =>
      (await env.app.inject({ url: `${JOBS}/${id}/events`, headers: env.auth() })).json().data as Array<{ level: string, message: string }>

    it('fills every default, echoes the method resolved and hyperparameters null, in both specs\' shapes', async () => {
      for (const body of [specDraft(), specDraft({}), { method: { type: 'spec-draft', spec_draft: {} } }]) {
        const res = await createJob(env, body)
        assert.equal(res.statusCode, 200, res.body)
        expectSpec('POST', JOBS, res)
        const job = res.json()
        assert.deepEqual(job.method, { type: 'spec-draft', spec_draft: { hyperparameters: DEFAULTS } })
        assert.equal(job.hyperparameters, null)
        const got = await env.app.inject({ url: `${JOBS}/${job.id}`, headers: env.auth() })
        expectSpec('GET', `${JOBS}/{job_id}`, got)
        assert.deepEqual(got.json().method, job.method)
        const list = await env.app.inject({ url: JOBS, headers: env.auth() })
        expectSpec('GET', JOBS, list)
      }
    })

    it('takes each loss type and every value given, keeps unknown keys with a warning', async () => {
      for (const type of ['kl', 'lk_alpha', 'lk_hybrid']) {
        const given = { loss: { type }, num_decoding_heads: 10, batch_size: 2, learning_rate: 0.5, draft_vocab_size: 9 }
        const res = await createJob(env, specDraft(given))
        assert.equal(res.statusCode, 200, res.body)
        assert.deepEqual(res.json().method.spec_draft.hyperparameters, { ...DEFAULTS, ...given })
      }
      const extra = await createJob(env, specDraft({ ttt_length: 7, loss: { type: 'lk_hybrid', eta: 3 } }))
      assert.equal(extra.statusCode, 200, extra.body)
      const hp = extra.json().method.spec_draft.hyperparameters
      assert.equal(hp.ttt_length, 7)
      assert.deepEqual(hp.loss, { type: 'lk_hybrid', eta: 3 })
      const warned = (await eventsOf(extra.json().id)).find(e => e.level === 'warn' && e.message.startsWith('Ignored unknown hyperparameters'))
      assert.equal(warned?.message, 'Ignored unknown hyperparameters: ttt_length, loss.eta')
    })

    it('answers values outside the spec with a 422 located under method.spec_draft.hyperparameters', async () => {
      const cases: Array<[Record<string, unknown>, Array<string | number>, string]> = [
        [{ num_decoding_heads: 11 }, ['num_decoding_heads'], 'less_than_equal'],
        [{ num_decoding_heads: 0 }, ['num_decoding_heads'], 'greater_than_equal'],
        [{ num_decoding_heads: 2.5 }, ['num_decoding_heads'], 'int_from_float'],
        [{ learning_rate: 0 }, ['learning_rate'], 'greater_than'],
        [{ learning_rate: 1 }, ['learning_rate'], 'less_than'],
        [{ n_epochs: 21 }, ['n_epochs'], 'less_than_equal'],
        [{ batch_size: 65 }, ['batch_size'], 'less_than_equal'],
        [{ warmup_ratio: 1.5 }, ['warmup_ratio'], 'less_than_equal'],
        [{ weight_decay: -1 }, ['weight_decay'], 'greater_than_equal'],
        [{ max_grad_norm: 0 }, ['max_grad_norm'], 'greater_than'],
        [{ context_length: 4096 }, ['context_length'], 'greater_than_equal'],
        [{ packing: 'yes' }, ['packing'], 'bool_type'],
        [{ architecture: 3 }, ['architecture'], 'string_type'],
        [{ loss: { type: 'ce' } }, ['loss', 'type'], 'literal_error'],
        [{ loss: 'kl' }, ['loss'], 'model_attributes_type'],
        [{ draft_vocab_size: 0 }, ['draft_vocab_size'], 'greater_than_equal'],
        [{ draft_vocab_size: 262145 }, ['draft_vocab_size'], 'less_than_equal'],
      ]
      for (const [hyperparameters, loc, type] of cases) {
        const res = await createJob(env, specDraft(hyperparameters))
        assert.equal(res.statusCode, 422, `${JSON.stringify(hyperparameters)} → ${res.body}`)
        expectSpec('POST', JOBS, res)
        const detail = res.json().detail
        assert.deepEqual(detail[0].loc, [...AT, ...loc], JSON.stringify(detail))
        assert.equal(detail[0].type, type)
        assert.equal(detail.length, 1, 'one issue per bad field')
      }
      const lossTypes = await createJob(env, specDraft({ loss: { type: 'ce' } }))
      assert.match(lossTypes.json().detail[0].msg, /'kl', 'lk_alpha' or 'lk_hybrid'/)
    })

    it('refuses another architecture (400), the other method\'s config and top-level hyperparameters (422)', async () => {
      const arch = await createJob(env, specDraft({ architecture: 'medusa' }))
      assert.equal(arch.statusCode, 400, arch.body)
      expectErrorBody(arch)
      assert.equal(arch.json().error.code, 'unsupported_parameter')
      assert.equal(arch.json().error.param, 'method.spec_draft.hyperparameters.architecture')
      assert.match(arch.json().error.message, /eagle3_original/)
      const cases: Array<[Record<string, unknown>, Array<string | number>]> = [
        [{ ...specDraft({}), hyperparameters: { n_epochs: 1 } }, ['body', 'method']],
        [{ method: { type: 'spec-draft', supervised: { hyperparameters: {} } } }, ['body', 'method', 'supervised']],
        [{ method: { type: 'supervised', spec_draft: { hyperparameters: {} } } }, ['body', 'method', 'spec_draft']],
        [{ method: { spec_draft: {} } }, ['body', 'method', 'spec_draft']], // type defaults to supervised
      ]
      for (const [body, loc] of cases) {
        const res = await createJob(env, body)
        assert.equal(res.statusCode, 422, `${JSON.stringify(body)} → ${res.body}`)
        expectSpec('POST', JOBS, res)
        assert.deepEqual(res.json().detail[0].loc, loc)
      }
      const hub = await createJob(env, { ...specDraft(), from_checkpoint: { type: 'hf', repo: 'someone/tuned' } })
      assert.equal(hub.statusCode, 400, hub.body)
      assert.equal(hub.json().error.param, 'from_checkpoint')
    })

    it('never takes a drafter checkpoint for a model: not to fine-tune, draft for, call, deploy or list', async () => {
      const job = (await createJob(env, specDraft())).json()
      const name = `ft:opentune/tiny-llama:main::${job.id}:ckpt-step-4`
      const metrics = { step: 4, train_loss: 1.5, valid_acceptance_rate_1: 0.6, valid_acceptance_length: 1.9 }
      const ckpt = await insertCheckpoint(env.ctx.db, {
        jobId: job.id, stepNumber: 4, fineTunedModelCheckpoint: name, metrics, resultFiles: [],
      })
      await updateJob(env.ctx.db, job.id, { status: 'succeeded', fine_tuned_model: name })
      for (const body of [{ model: name }, { model: name, ...specDraft() }]) {
        const res = await createJob(env, body)
        assert.equal(res.statusCode, 400, res.body)
        expectErrorBody(res)
        assert.equal(res.json().error.code, 'unsupported_parameter')
        assert.equal(res.json().error.param, 'model')
        assert.match(res.json().error.message, /drafter.*not a model to fine-tune or draft for/)
      }
      const messages = [{ role: 'user', content: 'Hi' }]
      const chat = await env.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: env.auth(), payload: { model: name, messages } })
      assert.equal(chat.statusCode, 400, chat.body)
      assert.match(chat.json().error.message, /drafter.*drafts for its target model/)
      const completion = await env.app.inject({ method: 'POST', url: '/v1/completions', headers: env.auth(), payload: { model: name, prompt: 'Hi' } })
      assert.equal(completion.statusCode, 400, completion.body)
      assert.equal(completion.json().error.param, 'model')
      // nor deployed: refused when the deployment is created, naming the source
      const payload = { name: 'drafter', base_model: 'opentune/tiny-llama', source: `${job.id}:${ckpt.id}` }
      const deploy = await env.app.inject({ method: 'POST', url: '/v0/models', headers: env.auth(), payload })
      assert.equal(deploy.statusCode, 400, deploy.body)
      assert.equal(deploy.json().error.param, 'source')
      assert.match(deploy.json().error.message, /EAGLE-3 drafter.*not a model to deploy/)
      const models = (await env.app.inject({ url: '/v1/models', headers: env.auth() })).json()
      assert.ok(!models.data.some((m: { id: string }) => m.id === name), 'drafters are not listed')
      // its checkpoint carries the drafter's own metrics after the seven, valid in both specs
      const path = `${JOBS}/{job_id}/checkpoints/{checkpoint_id}`
      const got = await env.app.inject({ url: `${JOBS}/${job.id}/checkpoints/${ckpt.id}`, headers: env.auth() })
      assert.equal(got.statusCode, 200, got.body)
      expectSpec('GET', path, got)
      expectSpec('GET', path, got, { seed: true })
      assert.equal(got.json().metrics.valid_acceptance_rate_1, 0.6)
      assert.equal(got.json().metrics.valid_acceptance_length, 1.9)
      assert.equal(got.json().metrics.full_valid_loss, null)
      const list = await env.app.inject({ url: `${JOBS}/${job.id}/checkpoints`, headers: env.auth() })
      expectSpec('GET', `${JOBS}/{job_id}/checkpoints`, list)
      assert.equal(list.json().data[0].metrics.valid_acceptance_length, 1.9)
    })
  })
}

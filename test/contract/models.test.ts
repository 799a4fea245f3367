// Base models the trainer cannot train (trainer/opentune_trainer/supported_models.json): a job on
// one is a 400 naming `model` when it is created, and GET /v1/models does not offer them.
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { expectErrorBody, expectOpenAI, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

const DENSE = { vocab_size: 320, hidden_size: 128, intermediate_size: 384, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 1024, hidden_act: 'silu' }

// id → config.json; the reason each unsupported one must be refused with
const UNSUPPORTED: Array<[string, Record<string, unknown>, string]> = [
  ['google/gemma-2b', { ...DENSE, model_type: 'gemma', hidden_act: 'gelu_pytorch_tanh' }, 'model_type "gemma" is not supported'],
  ['Qwen/Qwen1.5-MoE-A2.7B', { ...DENSE, model_type: 'qwen2_moe', num_experts: 60 }, 'model_type "qwen2_moe" is not supported'],
  ['acme/llama-yarn', { ...DENSE, model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }, 'rope scaling "yarn" is not supported'],
  ['mixtral-8x7b', { ...DENSE, model_type: 'mixtral', num_local_experts: 8 }, 'model_type "mixtral" is not supported'],
]
const SUPPORTED: Array<[string, Record<string, unknown>]> = [
  ['Qwen/Qwen3-tiny', { ...DENSE, model_type: 'qwen3', head_dim: 32, tie_word_embeddings: true }],
  ['acme/llama-3.1-tiny', { ...DENSE, model_type: 'llama', rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }],
]

for (const dialect of DIALECTS) {
  describe(`${dialect}: models the trainer cannot train`, () => {
    let env: TestEnv
    before(async () => {
      env = await makeTestEnv(dialect)
      for (const [id, config] of [...UNSUPPORTED, ...SUPPORTED]) {
        const dir = join(env.config.modelsDir, id)
        mkdirSync(dir, { recursive: true })
        writeFileSync(join(dir, 'config.json'), JSON.stringify(config))
      }
    })
    after(async () => { await env.close() })

    for (const [id, , reason] of UNSUPPORTED) {
      it(`refuses a job on ${id} with a 400 naming model: ${reason}`, async () => {
        const res = await createJob(env, { model: id })
        assert.equal(res.statusCode, 400, res.body)
        expectErrorBody(res)
        const { error } = res.json()
        assert.equal(error.param, 'model')
        assert.equal(error.code, 'unsupported_model')
        assert.ok(error.message.includes(reason), error.message)
        assert.ok(error.message.includes('Supported: model_type llama, mistral, qwen2, qwen3; rope scaling default, linear, llama3'), error.message)
        const jobs = (await env.app.inject({ url: '/v1/fine_tuning/jobs', headers: env.auth() })).json()
        assert.ok(!jobs.data.some((j: { model: string }) => j.model === id), 'no job was made')
      })
    }

    for (const [id] of SUPPORTED) {
      it(`still creates a job on ${id}`, async () => {
        const res = await createJob(env, { model: id })
        assert.equal(res.statusCode, 200, res.body)
        expectSpec('POST', '/v1/fine_tuning/jobs', res)
        assert.equal(res.json().model, id)
      })
    }

    it('lists only the models that can be fine-tuned', async () => {
      const res = await env.app.inject({ url: '/v1/models', headers: env.auth() })
      assert.equal(res.statusCode, 200)
      expectOpenAI('ListModelsResponse', res.json())
      const ids = res.json().data.map((m: { id: string }) => m.id)
      assert.deepEqual(ids, ['opentune/tiny-llama', ...SUPPORTED.map(([id]) => id).sort((a, b) => a.localeCompare(b))])
      const one = await env.app.inject({ url: `/v1/models/${UNSUPPORTED[0]![0]}`, headers: env.auth() })
      assert.equal(one.statusCode, 404, 'nor retrieves them')
    })
  })
}

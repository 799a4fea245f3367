// End to end with the real trainer and the real openai client: fine-tune opentune/tiny-llama, then
// train EAGLE-3 drafters for that checkpoint with each loss type (the Nebius spec-draft method), read
// their checkpoints through the seed endpoint, download the drafter folders, and check that training
// made the drafter better than the untrained one at what it is for (tokens accepted per target pass).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type OpenAI from 'openai'
import type { Service } from '../../src/server.js'
import { expectSpec } from '../contract.js'
import * as e2e from './openai-service.js'

const LOSSES = ['kl', 'lk_alpha', 'lk_hybrid'] as const
const DRAFTER_KEYS = [
  'd2t', 'fc.weight', 'lm_head.weight', 'midlayer.hidden_norm.weight', 'midlayer.input_layernorm.weight',
  'midlayer.mlp.down_proj.weight', 'midlayer.mlp.gate_proj.weight', 'midlayer.mlp.up_proj.weight',
  'midlayer.post_attention_layernorm.weight', 'midlayer.self_attn.k_proj.weight', 'midlayer.self_attn.o_proj.weight',
  'midlayer.self_attn.q_proj.weight', 'midlayer.self_attn.v_proj.weight', 'norm.weight', 't2d',
]

describe('spec-draft: EAGLE-3 drafters through the openai client', () => {
  let env: e2e.E2E
  let service: Service
  let client: OpenAI
  let trainingFile: string
  let validationFile: string
  let target: string

  before(async () => {
    env = await e2e.startE2E()
    ;({ service, client, trainingFile, validationFile } = env)
  })
  after(async () => await env.close())

  const finished = async (jobId: string) => await e2e.finished(client, jobId)

  async function untrainedAcceptanceLength (jobId: string): Promise<number> {
    for await (const e of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) {
      const m = /before training, the drafter's simulated acceptance length on the validation file is ([\d.]+)/.exec(e.message)
      if (m) return Number(m[1])
    }
    throw new Error('no baseline event')
  }

  it('fine-tunes the target: a full fine-tune, so its distribution is learnt, not noise', async () => {
    const job = await client.fineTuning.jobs.create({
      model: 'opentune/tiny-llama',
      training_file: trainingFile,
      hyperparameters: { n_epochs: 3, batch_size: 8, learning_rate: 3e-3, packing: false } as never,
    })
    const done = await finished(job.id)
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
    target = done.fine_tuned_model!
  })

  for (const loss of LOSSES) {
    it(`trains a drafter with loss ${loss} whose acceptance beats an untrained one's`, async (t) => {
      // unpacked: 12 steps an epoch from the 96 short examples (packed, they fill two rows)
      const hyperparameters = {
        n_epochs: 2, batch_size: 8, learning_rate: 1e-2, packing: false, draft_vocab_size: 128, loss: { type: loss },
      }
      const job = await client.fineTuning.jobs.create({
        model: target,
        training_file: trainingFile,
        validation_file: validationFile,
        method: { type: 'spec-draft', spec_draft: { hyperparameters } },
      } as never)
      type Echoed = typeof job & { method: { type: string, spec_draft: { hyperparameters: Record<string, unknown> } } }
      const echoed = job as Echoed
      assert.equal(echoed.method.type, 'spec-draft')
      assert.deepEqual(echoed.method.spec_draft.hyperparameters.loss, { type: loss })
      assert.equal(echoed.method.spec_draft.hyperparameters.num_decoding_heads, 3, 'the Nebius default')
      assert.equal(job.hyperparameters, null)

      const done = await finished(job.id)
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
      const checkpoints = await e2e.checkpointsOf(client, job.id)
      assert.equal(checkpoints.length, 2)
      for (const c of checkpoints) {
        const res = await fetch(`${service.url}/v1/fine_tuning/jobs/${job.id}/checkpoints/${c.id}`, { headers: { authorization: `Bearer ${client.apiKey}` } })
        const body = await res.json() as { metrics: Record<string, number | null> }
        expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}', { statusCode: res.status, json: () => body }, { seed: true })
        for (const k of ['train_loss', 'train_mean_token_accuracy', 'valid_loss', 'full_valid_loss', 'valid_acceptance_length',
          'valid_acceptance_rate_1', 'valid_top1_accuracy_3', 'valid_draft_vocab_coverage']) {
          assert.equal(typeof body.metrics[k], 'number', `${k} at step ${c.step_number}`)
        }
      }
      const last = checkpoints.sort((a, b) => a.step_number - b.step_number).at(-1)!
      const metrics = last.metrics as Record<string, number>
      const baseline = await untrainedAcceptanceLength(job.id)
      const tau = metrics.valid_acceptance_length!
      t.diagnostic(`${loss}: simulated acceptance length ${baseline.toFixed(3)} untrained → ${tau.toFixed(3)} trained; ` +
        `step-1 acceptance ${metrics.valid_acceptance_rate_1!.toFixed(3)}, top-1 ${metrics.valid_top1_accuracy_1!.toFixed(3)}`)
      assert.ok(tau > baseline + 0.3, `acceptance length ${baseline} → ${tau}`)

      const files = new Map((await Promise.all(last.result_files.map(async id => await e2e.download(client, id))))
        .map(f => [f.name, f.bytes]))
      assert.deepEqual([...files.keys()].sort(), ['config.json', 'model.safetensors'])
      const config = JSON.parse(files.get('config.json')!.toString())
      assert.deepEqual(config.architectures, ['LlamaForCausalLMEagle3'])
      assert.equal(config.num_hidden_layers, 1)
      assert.equal(config.draft_vocab_size, 128)
      const header = e2e.safetensorsHeader(files.get('model.safetensors')!)
      assert.deepEqual(Object.keys(header).sort(), DRAFTER_KEYS)
      assert.deepEqual(header['fc.weight']!.shape, [config.hidden_size, 3 * config.hidden_size])
      assert.deepEqual(header['lm_head.weight']!.shape, [128, config.hidden_size])
      assert.equal(header.d2t!.dtype, 'I64')
      assert.equal(header.t2d!.dtype, 'BOOL')
    })
  }
})

// End to end with the real trainer (Python + PyTorch on CPU) and the real openai client against a
// listening service: upload, fine-tune opentune/tiny-llama (LoRA and full), read every checkpoint
// through the seed endpoint, download the weights and check they are what PEFT/HF expect.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile, copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import OpenAI from 'openai'
import type { Service } from '../../src/server.js'
import { expectSpec } from '../contract.js'
import * as e2e from './openai-service.js'

const TINY = JSON.parse(readFileSync(join(e2e.ROOT, 'models', 'opentune', 'tiny-llama', 'config.json'), 'utf8'))
// A random-initialised tiny model needs a large learning rate to move within a few dozen steps.
const HP = { n_epochs: 3, batch_size: 8, learning_rate: 3e-3, packing: false }

describe('real training through the openai client', () => {
  let env: e2e.E2E
  let service: Service
  let client: OpenAI
  let trainingFile: string
  let validationFile: string

  before(async () => {
    env = await e2e.startE2E()
    ;({ service, client, trainingFile, validationFile } = env)
  })
  after(async () => await env.close())

  const finished = async (jobId: string) => await e2e.finished(client, jobId)
  const checkpointsOf = async (jobId: string) => await e2e.checkpointsOf(client, jobId)
  const download = async (fileId: string) => await e2e.download(client, fileId)

  // lora → what its job produced, for the continuation test below
  const trained = new Map<boolean, { model: string, epochOneLoss: number }>()

  for (const lora of [true, false]) {
    it(`fine-tunes with lora: ${lora} and serves real checkpoints`, async () => {
      const job = await client.fineTuning.jobs.create({
        model: 'opentune/tiny-llama',
        training_file: trainingFile,
        validation_file: validationFile,
        hyperparameters: { ...HP, lora, lora_r: 8, lora_alpha: 16 } as never,
      })
      const done = await finished(job.id)
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
      const checkpoints = await checkpointsOf(job.id)
      assert.equal(checkpoints.length, 3)
      const steps = checkpoints.map(c => c.step_number)
      assert.deepEqual(steps, [...steps].sort((a, b) => a - b))
      const first = checkpoints[0]!.metrics
      const last = checkpoints[2]!.metrics
      assert.ok(last.train_loss! < first.train_loss!, `train loss fell: ${first.train_loss} → ${last.train_loss}`)
      assert.ok(last.full_valid_loss! < first.full_valid_loss!, 'validation loss fell')
      for (const c of checkpoints) {
        for (const k of ['valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy'] as const) {
          assert.equal(typeof c.metrics[k], 'number', `${k} at step ${c.step_number}`)
        }
        const res = await fetch(`${service.url}/v1/fine_tuning/jobs/${job.id}/checkpoints/${c.id}`, { headers: { authorization: `Bearer ${client.apiKey}` } })
        const body = await res.json()
        expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}', { statusCode: res.status, json: () => body }, { seed: true })
        const files = await Promise.all(c.result_files.map(download))
        const byName = new Map(files.map(f => [f.name, f.bytes]))
        if (lora) checkAdapter(byName)
        else checkFullWeights(byName)
      }
      assert.equal(done.fine_tuned_model, checkpoints[2]!.fine_tuned_model_checkpoint)
      trained.set(lora, { model: done.fine_tuned_model!, epochOneLoss: first.train_loss! })
    })
  }

  it('continues from a checkpoint named as model: a LoRA adapter keeps training, a full checkpoint is the new start', async () => {
    const lora = trained.get(true)!
    const full = trained.get(false)!
    const listed = (await client.models.list()).data.map(m => m.id)
    assert.ok(listed.includes(lora.model) && listed.includes(full.model))
    const oneEpoch = { n_epochs: 1, batch_size: 8, learning_rate: 3e-3, packing: false }

    // the adapter's rank and alpha are inherited when not given
    const again = await client.fineTuning.jobs.create({
      model: lora.model,
      training_file: trainingFile,
      hyperparameters: oneEpoch as never,
    })
    assert.equal(again.model, lora.model)
    const echoed = again as typeof again & { from_checkpoint: unknown, hyperparameters: Record<string, unknown> }
    assert.deepEqual(echoed.from_checkpoint, { type: 'ft' })
    assert.deepEqual(
      [echoed.hyperparameters.lora, echoed.hyperparameters.lora_r, echoed.hyperparameters.lora_alpha],
      [true, 8, 16]
    )
    const fromFull = await client.fineTuning.jobs.create({
      model: full.model,
      training_file: trainingFile,
      hyperparameters: { ...oneEpoch, lora: true } as never,
    })
    const ends = new Map<string, { model: string, loss: number }>()

    for (const [job, before] of [[again, lora], [fromFull, full]] as const) {
      const done = await finished(job.id)
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
      const [ckpt] = await checkpointsOf(job.id)
      ends.set(job.id, { model: done.fine_tuned_model!, loss: ckpt!.metrics.train_loss! })
      // one more epoch from where it ended is better than the first epoch from scratch
      assert.ok(ckpt!.metrics.train_loss! < before.epochOneLoss, `${ckpt!.metrics.train_loss} < ${before.epochOneLoss}`)
      assert.match(ckpt!.fine_tuned_model_checkpoint, /^ft:opentune\/tiny-llama:e2e::ftjob-/, 'named after the base at the root')
      const files = new Map((await Promise.all(ckpt!.result_files.map(download))).map(f => [f.name, f.bytes]))
      const config = JSON.parse(files.get('adapter_config.json')!.toString())
      assert.equal(config.base_model_name_or_path, job === again ? 'opentune/tiny-llama' : full.model)
    }

    // a chain: LoRA on the full checkpoint, continued again (`from_checkpoint: {}` is FT by the
    // spec's default). It must keep the full weights under the adapter, and it keeps its own links
    // to the files even when the user deletes them after creating the job.
    const chained = ends.get(fromFull.id)!
    const third = await client.fineTuning.jobs.create({
      model: chained.model,
      training_file: trainingFile,
      hyperparameters: oneEpoch as never,
      from_checkpoint: {},
    } as never)
    const [source] = await checkpointsOf(fromFull.id)
    for (const id of source!.result_files) await client.files.delete(id)
    const done = await finished(third.id)
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
    const [ckpt] = await checkpointsOf(third.id)
    assert.ok(ckpt!.metrics.train_loss! < chained.loss + 0.05, `the chain went on from ${chained.loss}, got ${ckpt!.metrics.train_loss}`)
    const files = new Map((await Promise.all(ckpt!.result_files.map(download))).map(f => [f.name, f.bytes]))
    assert.equal(JSON.parse(files.get('adapter_config.json')!.toString()).base_model_name_or_path, full.model, 'still the full checkpoint under the adapter')
    const gone = await client.fineTuning.jobs.create({ model: chained.model, training_file: trainingFile })
      .then(() => null, (e: unknown) => e)
    assert.ok(gone instanceof OpenAI.BadRequestError && /deleted/.test(gone.message), String(gone))

    const refused = async (hyperparameters: Record<string, unknown>, model = lora.model) => {
      const err = await client.fineTuning.jobs.create({
        model,
        training_file: trainingFile,
        hyperparameters: hyperparameters as never,
      }).then(() => null, (e: unknown) => e)
      assert.ok(err instanceof OpenAI.BadRequestError, String(err))
      return err.param
    }
    assert.equal(await refused({ lora: false }), 'hyperparameters.lora')
    assert.equal(await refused({ lora_r: 16 }), 'hyperparameters.lora_r')
    assert.equal(await refused({}, lora.model.replace('ftjob-', 'ftjob-0')), 'model')
    const viaMethod = await client.fineTuning.jobs.create({ model: lora.model, training_file: trainingFile, method: { type: 'supervised', supervised: { hyperparameters: { lora_r: 16 } } } } as never).then(() => null, (e: unknown) => e)
    assert.ok(viaMethod instanceof OpenAI.BadRequestError)
    assert.equal(viaMethod.param, 'method.supervised.hyperparameters.lora_r', 'the parameter where the request put it')
  })

  it('fails a job whose model folder has no weights', async () => {
    const dir = join(service.ctx.config.modelsDir, 'acme', 'no-weights')
    await mkdir(dir, { recursive: true })
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(e2e.ROOT, 'models', 'opentune', 'tiny-llama', f), join(dir, f))
    await writeFile(join(dir, 'README.md'), 'no weights here\n')
    const job = await client.fineTuning.jobs.create({ model: 'acme/no-weights', training_file: trainingFile, hyperparameters: HP as never })
    const done = await finished(job.id)
    assert.equal(done.status, 'failed')
    assert.equal(done.error?.code, 'invalid_model')
    assert.match(done.error?.message ?? '', /safetensors/)
  })
})

function checkAdapter (files: Map<string, Buffer>) {
  const config = JSON.parse(files.get('adapter_config.json')!.toString())
  assert.equal(config.peft_type, 'LORA')
  assert.equal(config.r, 8)
  assert.equal(config.lora_alpha, 16)
  const header = e2e.safetensorsHeader(files.get('adapter_model.safetensors')!)
  const {
    hidden_size: h,
    intermediate_size: ffn,
    num_attention_heads: heads,
    num_key_value_heads: kv,
    head_dim: hd,
    num_hidden_layers: layers,
  } = TINY
  const out: Record<string, [number, number]> = {
    'self_attn.q_proj': [heads * hd, h],
    'self_attn.k_proj': [kv * hd, h],
    'self_attn.v_proj': [kv * hd, h],
    'self_attn.o_proj': [h, heads * hd],
    'mlp.gate_proj': [ffn, h],
    'mlp.up_proj': [ffn, h],
    'mlp.down_proj': [h, ffn],
  }
  assert.equal(Object.keys(header).length, layers * 7 * 2)
  for (let i = 0; i < layers; i++) {
    for (const [module, [outDim, inDim]] of Object.entries(out)) {
      const prefix = `base_model.model.model.layers.${i}.${module}`
      assert.deepEqual(header[`${prefix}.lora_A.weight`]?.shape, [8, inDim], `${prefix}.lora_A`)
      assert.deepEqual(header[`${prefix}.lora_B.weight`]?.shape, [outDim, 8], `${prefix}.lora_B`)
    }
  }
}

function checkFullWeights (files: Map<string, Buffer>) {
  assert.equal(JSON.parse(files.get('config.json')!.toString()).model_type, 'llama')
  const header = e2e.safetensorsHeader(files.get('model.safetensors')!)
  assert.deepEqual(header['model.embed_tokens.weight']?.shape, [TINY.vocab_size, TINY.hidden_size])
  assert.deepEqual(header['model.layers.0.self_attn.q_proj.weight']?.shape, [TINY.num_attention_heads * TINY.head_dim, TINY.hidden_size])
  assert.ok(header['model.norm.weight'])
}

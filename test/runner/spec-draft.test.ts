// A spec-draft job through the runner with the scripted fake trainer: the spec the trainer is handed
// (method, the drafter's hyperparameters, the target model's folders: a LoRA checkpoint's adapter
// to merge), and the drafter's own metrics passed through to checkpoints, the metrics series and
// metrics.csv.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { insertResultFile } from '../../src/files/files.store.js'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { checkpointModelName } from '../../src/fine-tuning/jobs.service.js'
import { updateJob } from '../../src/fine-tuning/jobs.store.js'
import { newCheckpointId, newFileId } from '../../src/ids.js'
import { modelDirForTraining } from '../../src/runner/model-weights.js'
import { Runner } from '../../src/runner/runner.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import { allEvents, get, JOBS, newJob } from './helpers.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')

const runner = (env: TestEnv) => new Runner(env.ctx, {
  log: env.app.log, pollMs: 50, stopGraceMs: 3000, trainerCommand: [process.execPath, join(FIXTURES, 'spec-copy-trainer.mjs')],
})

/** A succeeded supervised job whose one checkpoint is a LoRA adapter of the tiny model (its files by hand). */
async function loraCheckpoint (env: TestEnv): Promise<string> {
  const job = await newJob(env, { hyperparameters: { lora: true, lora_r: 16, lora_alpha: 32, n_epochs: 1 } })
  const id = newCheckpointId()
  const config = { peft_type: 'LORA', base_model_name_or_path: 'opentune/tiny-llama', r: 16, lora_alpha: 32 }
  const ids = []
  const files = [['adapter_config.json', JSON.stringify(config)], ['adapter_model.safetensors', 'weights']] as const
  for (const [name, text] of files) {
    const fileId = newFileId()
    const path = join(env.config.dataDir, `${fileId}.tmp`)
    await writeFile(path, text)
    const bytes = await env.ctx.blobs.importFile(path, fileId)
    await insertResultFile(env.ctx.db, { id: fileId, projectId: env.projectId, filename: `${id}/${name}`, bytes })
    ids.push(fileId)
  }
  const name = checkpointModelName({ model: 'opentune/tiny-llama', suffix: null, id: job }, 'main', 12)
  const row = { id, jobId: job, stepNumber: 12, fineTunedModelCheckpoint: name, metrics: {}, resultFiles: ids }
  await insertCheckpoint(env.ctx.db, row)
  await updateJob(env.ctx.db, job, { status: 'succeeded', fine_tuned_model: name })
  return name
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: spec-draft jobs in the runner`, () => {
    let env: TestEnv
    let copies: string
    before(async () => {
      copies = await mkdtemp(join(tmpdir(), 'opentune-specs-'))
      env = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'ok', FAKE_TRAINER_SPEC_COPY_DIR: copies })
    })
    after(async () => {
      await env.close()
      await rm(copies, { recursive: true, force: true })
    })
    const specOf = (jobId: string) => JSON.parse(readFileSync(join(copies, `${jobId}.json`), 'utf8'))

    it('hands the trainer method spec-draft, the drafter\'s hyperparameters, and a LoRA target to merge', async () => {
      const target = await loraCheckpoint(env)
      const hyperparameters = { loss: { type: 'lk_hybrid' }, num_decoding_heads: 2, n_epochs: 2, draft_vocab_size: 64, ttt_length: 7 }
      const jobId = await newJob(env, { model: target, method: { type: 'spec-draft', spec_draft: { hyperparameters } } })
      await runner(env).drain()
      const job = await get(env, `${JOBS}/${jobId}`)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
      const spec = specOf(jobId)
      assert.equal(spec.method, 'spec-draft')
      assert.deepEqual(spec.hyperparameters, {
        batch_size: 8,
        learning_rate: 0.0075,
        n_epochs: 2,
        warmup_ratio: 0,
        weight_decay: 0,
        max_grad_norm: 1,
        architecture: 'eagle3_original',
        num_decoding_heads: 2,
        loss: { type: 'lk_hybrid' },
        draft_vocab_size: 64,
        regenerate_responses: false,
      })
      const base = env.ctx.models.find('opentune/tiny-llama')
      assert.ok(base)
      assert.equal(spec.model_dir, await modelDirForTraining(env.config, base), 'the base\'s weights, under the adapter')
      assert.equal(spec.init_adapter, join(env.config.dataDir, 'jobs', jobId, 'from', 'adapter'))
      const checkpoints = (await get(env, `${JOBS}/${jobId}/checkpoints`)).data
      assert.equal(checkpoints.length, 2, 'one per epoch')
      const perEpoch = checkpoints[0].step_number
      assert.equal(job.total_steps, 2 * perEpoch, 'steps per epoch × n_epochs')
      const names = []
      for (const fileId of checkpoints[1].result_files) names.push((await get(env, `/v1/files/${fileId}`)).filename)
      assert.deepEqual(names.sort(), [`${checkpoints[1].id}/config.json`, `${checkpoints[1].id}/model.safetensors`])
      const metrics = checkpoints[1].metrics
      assert.equal(metrics.valid_acceptance_rate_2, 0.25)
      assert.equal(metrics.valid_top1_accuracy_1, 0.6)
      assert.equal(metrics.valid_acceptance_length, 1.75)
      assert.equal(metrics.full_valid_loss, null)

      const series = (await get(env, `${JOBS}/${jobId}/metrics`)).data
      assert.equal(series.length, job.total_steps)
      assert.equal(series[0].train_acceptance_rate_1, 0.5)
      assert.equal(series[perEpoch - 1].valid_acceptance_length, 1.75, 'a checkpoint\'s step carries its metrics')
      assert.equal(series[0].valid_acceptance_length, undefined)
      const stepEvents = (await allEvents(env, jobId)).filter(e => e.type === 'metrics')
      assert.ok(stepEvents.length > 0 && stepEvents.every(e => e.data.train_acceptance_rate_1 === 0.5), 'metrics events carry it too')
      const csv = await env.app.inject({ url: `/v1/files/${job.result_files[0]}/content`, headers: env.auth() })
      const [header, first] = csv.body.trim().split('\n').map(l => l.split(','))
      assert.ok(header?.includes('train_acceptance_rate_1') && header.includes('valid_acceptance_rate_2'), header?.join(','))
      assert.equal(first?.[header!.indexOf('train_acceptance_rate_1')], '0.5')
    })

    it('still hands a supervised job its spec as before, with method supervised', async () => {
      const jobId = await newJob(env, { hyperparameters: { n_epochs: 1, lora: true } })
      await runner(env).drain()
      const spec = specOf(jobId)
      assert.equal(spec.method, 'supervised')
      assert.deepEqual(Object.keys(spec.hyperparameters).sort(), ['batch_size', 'learning_rate', 'lora', 'lora_alpha', 'lora_dropout',
        'lora_r', 'max_grad_norm', 'n_epochs', 'warmup_ratio', 'weight_decay'])
      const csv = (await get(env, `${JOBS}/${jobId}`)).result_files[0]
      const body = (await env.app.inject({ url: `/v1/files/${csv}/content`, headers: env.auth() })).body
      assert.equal(body.split('\n')[0], 'step,epoch,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy,' +
        'full_valid_loss,full_valid_mean_token_accuracy,learning_rate,tokens,step_time_s')
    })
  })
}

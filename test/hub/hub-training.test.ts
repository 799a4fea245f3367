// The Hub end to end with the real trainer (PyTorch on CPU) and the openai client: the built-in tiny model
// served by the Hub stand-in as `someorg/tiny-llama` is downloaded and LoRA-trained; the hf integration
// pushes the final adapter and a model card (a second integration, with a token the Hub refuses, fails
// alone); a job with from_checkpoint type hf continues from the pushed adapter.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import OpenAI from 'openai'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { modelDirForTraining } from '../../src/runner/model-weights.js'
import { startService, type Service } from '../../src/server.js'
import { sdkClient, testConfig } from '../helper.js'
import { modelRepoFiles } from './hub-repos.js'
import { HubStandin } from './hub-standin.js'

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const HP = { batch_size: 8, learning_rate: 3e-3, packing: false, lora: true }
const METRICS = ['step', 'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy']

describe('Hub models, checkpoints and pushes with real training', () => {
  let hub: HubStandin
  let service: Service
  let client: OpenAI
  let cleanup: () => Promise<void>
  let trainingFile: string

  before(async () => {
    hub = new HubStandin()
    await hub.start()
    hub.writers.add('hf_write')
    const made = await testConfig('sqlite', { OPENTUNE_DEVICE: 'cpu', HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '' })
    cleanup = made.cleanup
    service = await startService({ ...made.config, port: 0 })
    const tiny = service.ctx.models.find('opentune/tiny-llama')
    assert.ok(tiny)
    hub.addRepo('someorg/tiny-llama', await modelRepoFiles(await modelDirForTraining(service.ctx.config, tiny)))
    client = await sdkClient(service)
    trainingFile = (await client.files.create({ file: createReadStream(join(EXAMPLES, 'train.jsonl')), purpose: 'fine-tune' })).id
  })
  after(async () => {
    await service.close()
    await cleanup()
    await hub.close()
  })

  async function finished (jobId: string) {
    for (;;) {
      const job = await client.fineTuning.jobs.retrieve(jobId)
      if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job
      await new Promise(resolve => setTimeout(resolve, 250))
    }
  }
  const eventsOf = async (jobId: string) => {
    const list = []
    for await (const e of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) list.push(e)
    return list // oldest first, as the API lists them
  }
  const checkpointsOf = async (jobId: string) => {
    const list = []
    for await (const c of client.fineTuning.jobs.checkpoints.list(jobId)) {
      list.push(c as typeof c & { result_files: string[] })
    }
    return list.sort((a, b) => a.step_number - b.step_number)
  }

  let firstEpochLoss = Infinity

  it('trains a Hub model and pushes the adapter with a model card; a refused push fails alone', async () => {
    const job = await client.fineTuning.jobs.create({
      model: 'someorg/tiny-llama',
      training_file: trainingFile,
      hyperparameters: { ...HP, n_epochs: 2 } as never,
      integrations: [
        { type: 'hf', hf: { output_repo_name: 'me/tuned', api_token: 'hf_write' } },
        { type: 'hf', hf: { output_repo_name: 'me/elsewhere', api_token: 'hf_read_only' } },
      ] as never,
    })
    const done = await finished(job.id)
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
    assert.deepEqual(done.integrations?.map(i => i), [
      { type: 'hf', hf: { output_repo_name: 'me/tuned' } }, { type: 'hf', hf: { output_repo_name: 'me/elsewhere' } },
    ] as never, 'the tokens are never shown')
    const checkpoints = await checkpointsOf(job.id)
    assert.equal(checkpoints.length, 2)
    firstEpochLoss = checkpoints[0]?.metrics.train_loss ?? Infinity
    const last = checkpoints[1]!

    const pushed = hub.repos.get('me/tuned')
    assert.ok(pushed, 'the repo was created')
    assert.deepEqual([...pushed.files.keys()].sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors'])
    for (const id of last.result_files) {
      const meta = await client.files.retrieve(id)
      const bytes = Buffer.from(await (await client.files.content(id)).arrayBuffer())
      assert.deepEqual(pushed.files.get(meta.filename.split('/')[1] ?? ''), bytes, meta.filename)
    }
    const card = pushed.files.get('README.md')?.toString() ?? ''
    assert.match(card, /^---\nbase_model: "someorg\/tiny-llama"\nlibrary_name: peft\n/)
    assert.match(card, /training file: `train\.jsonl`/)
    assert.match(card, /\| learning_rate \| 0\.003 \|/)
    assert.match(card, /\| n_epochs \| 2 \|/)
    for (const k of METRICS) assert.match(card, new RegExp(`\\| ${k} \\| `), k)
    assert.match(card, new RegExp(`\\| train_loss \\| ${Number(last.metrics.train_loss!.toPrecision(6))} \\|`))
    const commits = hub.requests.filter(r => r.method === 'POST' && r.path.startsWith('/api/models/me/tuned/commit/'))
    assert.deepEqual(commits.map(r => r.auth), ['Bearer hf_write'])

    const events = await eventsOf(job.id)
    const messages = events.map(e => e.message)
    assert.ok(messages.includes('Model someorg/tiny-llama is not in the models directory: it is downloaded from the Hugging Face Hub while the job validates its files'))
    assert.ok(messages.some(m => m.startsWith('Downloading someorg/tiny-llama@')), messages.join('\n'))
    const pushEvent = events.find(e => e.message.startsWith('Pushed checkpoint '))
    assert.match(pushEvent?.message ?? '', new RegExp(`^Pushed checkpoint ${last.fine_tuned_model_checkpoint.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(step ${last.step_number}\\) to the Hugging Face Hub repository me/tuned: adapter_config.json, adapter_model.safetensors, README.md \\(commit [0-9a-f]{12}\\)$`))
    const refused = events.find(e => e.level === 'error')
    assert.match(refused?.message ?? '', /^Pushing to the Hugging Face Hub repository me\/elsewhere failed: HTTP 401 \(the integration's api_token cannot write there\)/)
    assert.ok(!messages.some(m => m.includes('hf_write') || m.includes('hf_read_only')), 'no token in any event')
    assert.equal(messages.at(-1), 'The job has successfully completed')
  })

  it('continues from a LoRA adapter on the Hub (from_checkpoint type hf), its token sealed and then dropped', async () => {
    const job = await client.fineTuning.jobs.create({
      model: 'someorg/tiny-llama',
      training_file: trainingFile,
      hyperparameters: { ...HP, n_epochs: 1 } as never,
      from_checkpoint: { type: 'hf', repo: 'me/tuned', token: 'hf_write' },
    } as never)
    const stored = JSON.stringify(await getJobById(service.ctx.db, job.id))
    assert.ok(!stored.includes('hf_write'), 'never stored in clear')
    const done = await finished(job.id)
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error))
    assert.deepEqual((done as unknown as { from_checkpoint: unknown }).from_checkpoint, { type: 'hf', repo: 'me/tuned', revision: null })
    assert.equal((await getJobById(service.ctx.db, job.id))?.from_checkpoint?.sealed_token, undefined, 'dropped once downloaded')
    const reads = hub.requests.filter(r => r.path.startsWith('/me/tuned/resolve/'))
    assert.ok(reads.length > 0 && reads.every(r => r.auth === 'Bearer hf_write'), 'read with the request\'s token')
    const messages = (await eventsOf(job.id)).map(e => e.message)
    assert.ok(messages.some(m => /^Continuing from me\/tuned@[0-9a-f]{12}: its LoRA adapter \(r=\d+, alpha=\d+\) keeps training on someorg\/tiny-llama$/.test(m)), messages.join('\n'))
    assert.ok(!messages.some(m => m.includes('hf_write')))
    const [ckpt] = await checkpointsOf(job.id)
    // one more epoch from the adapter ends below where the first job's first epoch did
    assert.ok(ckpt!.metrics.train_loss! < firstEpochLoss, `${ckpt!.metrics.train_loss} < ${firstEpochLoss}`)
  })
})

// `draft_model` (extra_body) on the embedded engine, through the openai client against a listening
// service and the real Python worker: a spec-draft checkpoint for the request's model decodes
// greedily to exactly the tokens it gives without one (chat and text, whole and streamed); an
// unknown or another project's id is a 404 and a checkpoint that is not a drafter, or a drafter for
// another target (a LoRA checkpoint's drafter asked for its base, and the reverse), a 400, each
// naming draft_model; num_speculative_tokens outside 1..10 is a 422, without a draft_model a 400.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import OpenAI, { APIError, toFile } from 'openai'
import { insertResultFile } from '../../src/files/files.store.js'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { checkpointModelName } from '../../src/fine-tuning/jobs.service.js'
import { getJobById, updateJob } from '../../src/fine-tuning/jobs.store.js'
import { newFileId } from '../../src/ids.js'
import { modelDirForTraining } from '../../src/runner/model-weights.js'
import { trainerEnv } from '../../src/runner/trainer-env.js'
import { startService, type Service } from '../../src/server.js'
import { CHAT_LINE, DIALECTS, sdkClient, testConfig } from '../helper.js'
import { makeLoraCheckpoint, type MadeCheckpoint } from './checkpoints.js'

const BASE = 'opentune/tiny-llama'
const ask = [{ role: 'user' as const, content: 'Name three colours.' }]

// a random-initialised drafter for the target folder (drafter.py's own init and files)
const MAKE_DRAFTER = `
import sys, torch
from opentune_trainer import drafter as dr
from opentune_trainer.checkpoint import load_model, read_config
model = load_model(sys.argv[1], torch.device("cpu"), torch.float32)
raw, _ = read_config(sys.argv[1])
d = dr.Eagle3Drafter(model.config, torch.arange(min(256, model.config.vocab_size)))
dr.init_drafter(d, model.model.embed_tokens.weight.detach(), seed=1)
dr.save_drafter(sys.argv[2], d, raw)
`

async function rejects (promise: Promise<unknown>): Promise<APIError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof APIError, String(err))
    return err
  }
  assert.fail('expected an APIError')
}

/** A spec-draft job for `model` (created through the API; the runner is off) with `files` as its
 *  checkpoint's result files and the job succeeded, as the runner leaves it. */
async function drafterCheckpoint (
  service: Service, client: OpenAI, project: string, model: string, files: Record<string, Buffer>
): Promise<MadeCheckpoint> {
  const ctx = service.ctx
  const file = await client.files.create({ file: await toFile(Buffer.from(CHAT_LINE), 'train.jsonl'), purpose: 'fine-tune' })
  const job = await client.fineTuning.jobs.create({
    model, training_file: file.id, suffix: 'draft', method: { type: 'spec-draft' } as never,
  })
  const id = `ftckpt_${randomBytes(16).toString('hex')}`
  const projectId = (await getJobById(ctx.db, job.id))?.project_id ?? ''
  const ids: string[] = []
  for (const [name, bytes] of Object.entries(files)) {
    const fileId = newFileId()
    const path = join(ctx.config.dataDir, `${fileId}.tmp`)
    await writeFile(path, bytes)
    await ctx.blobs.importFile(path, fileId)
    await insertResultFile(ctx.db, { id: fileId, projectId, filename: `${id}/${name}`, bytes: bytes.length })
    ids.push(fileId)
  }
  const name = checkpointModelName({ model: job.model, suffix: 'draft', id: job.id }, project, 4)
  await insertCheckpoint(ctx.db, {
    id, jobId: job.id, stepNumber: 4, fineTunedModelCheckpoint: name, metrics: { step: 4 }, resultFiles: ids,
  })
  await updateJob(ctx.db, job.id, { status: 'succeeded', fine_tuned_model: name, finished_at: Math.floor(Date.now() / 1000) })
  return { id, name, jobId: job.id }
}

describe(`${DIALECTS[0]}: draft_model on the embedded engine`, () => {
  let service: Service
  let cleanup: () => Promise<void>
  let client: OpenAI
  let other: OpenAI
  let drafter: MadeCheckpoint
  let lora: MadeCheckpoint
  let loraDrafter: MadeCheckpoint

  before(async () => {
    const made = await testConfig(DIALECTS[0] ?? 'sqlite', { PORT: '0', OPENTUNE_RUNNER: '0' })
    cleanup = made.cleanup
    service = await startService(made.config)
    client = await sdkClient(service)
    other = await sdkClient(service, 'other')
    const base = service.ctx.models.find(BASE)
    assert.ok(base)
    const weights = await modelDirForTraining(service.ctx.config, base)
    const out = await mkdtemp(join(tmpdir(), 'drafter-'))
    try {
      const { python } = service.ctx.config
      await promisify(execFile)(python, ['-c', MAKE_DRAFTER, weights, out], { env: trainerEnv(service.ctx.config) })
      const files = {
        'config.json': await readFile(join(out, 'config.json')),
        'model.safetensors': await readFile(join(out, 'model.safetensors')),
      }
      drafter = await drafterCheckpoint(service, client, 'main', BASE, files)
      lora = await makeLoraCheckpoint(service, client, 'main')
      loraDrafter = await drafterCheckpoint(service, client, 'main', lora.name, files)
    } finally {
      await rm(out, { recursive: true, force: true })
    }
  })
  after(async () => {
    await service?.close()
    await cleanup?.()
  })

  const chat = async (model: string, extra: object = {}) => await client.chat.completions.create({
    model, messages: ask, max_tokens: 24, temperature: 0, ...extra,
  } as never) as unknown as OpenAI.Chat.Completions.ChatCompletion

  it('decodes greedily to the same text with the drafter as without, chat and text, whole and streamed', async () => {
    for (const steps of [undefined, 1, 6]) {
      const extra = { draft_model: drafter.name, ...(steps ? { num_speculative_tokens: steps } : {}) }
      const plain = await chat(BASE)
      const drafted = await chat(BASE, extra)
      assert.equal(drafted.choices[0]?.message.content, plain.choices[0]?.message.content)
      assert.equal(drafted.usage?.completion_tokens, plain.usage?.completion_tokens)
      assert.equal(drafted.choices[0]?.finish_reason, plain.choices[0]?.finish_reason)
    }
    const text = { model: BASE, prompt: 'Once upon a time', max_tokens: 17, temperature: 0 }
    const plain = await client.completions.create(text)
    const drafted = await client.completions.create({ ...text, draft_model: drafter.name } as never) as
      unknown as typeof plain
    assert.equal(drafted.choices[0]?.text, plain.choices[0]?.text)
    assert.equal(drafted.usage?.completion_tokens, 17)
    type Chunks = AsyncIterable<{ choices: Array<{ text: string }> }>
    const stream = await client.completions.create({ ...text, stream: true, draft_model: drafter.name } as never) as
      unknown as Chunks
    let streamed = ''
    for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? ''
    assert.equal(streamed, plain.choices[0]?.text)
  })

  it('serves a LoRA checkpoint with the drafter trained for it', async () => {
    const plain = await chat(lora.name)
    const drafted = await chat(lora.name, { draft_model: loraDrafter.name })
    assert.equal(drafted.choices[0]?.message.content, plain.choices[0]?.message.content)
  })

  it('answers an unknown or another project\'s drafter with the same 404 naming draft_model', async () => {
    const unknown = await rejects(chat(BASE, { draft_model: `${drafter.name}x` }))
    assert.equal(unknown.status, 404)
    assert.equal(unknown.code, 'model_not_found')
    assert.equal(unknown.param, 'draft_model')
    const foreign = await rejects(other.chat.completions.create({
      model: BASE, messages: ask, max_tokens: 4, draft_model: drafter.name,
    } as never))
    assert.equal(foreign.status, 404)
    assert.equal(foreign.message.replace(drafter.name, 'M'), unknown.message.replace(`${drafter.name}x`, 'M'))
  })

  it('refuses a checkpoint that is no drafter, or a drafter for another target, with a 400 naming draft_model', async () => {
    const cases: Array<[string, string, RegExp]> = [
      [BASE, lora.name, /not a drafter/],
      [BASE, loraDrafter.name, /trained for ft:.*not for opentune\/tiny-llama/],
      [lora.name, drafter.name, /trained for opentune\/tiny-llama, not for ft:/],
    ]
    for (const [model, draft, message] of cases) {
      const err = await rejects(chat(model, { draft_model: draft }))
      assert.equal(err.status, 400, `${model} + ${draft}`)
      assert.equal(err.param, 'draft_model')
      assert.match(err.message, message)
    }
  })

  it('checks num_speculative_tokens: 1..10 (422), and only with a draft_model (400)', async () => {
    for (const steps of [0, 11]) {
      const err = await rejects(chat(BASE, { draft_model: drafter.name, num_speculative_tokens: steps }))
      assert.equal(err.status, 422)
    }
    const alone = await rejects(chat(BASE, { num_speculative_tokens: 3 }))
    assert.equal(alone.status, 400)
    assert.equal(alone.param, 'num_speculative_tokens')
  })
})

// Checkpoints of the built-in tiny model, made without training: a job created through the
// API (the runner is off), a PEFT adapter with random non-zero B (or a full HF folder) written as its result files, and
// the job marked succeeded with that checkpoint as its fine_tuned_model — what the runner leaves.
import { randomBytes } from 'node:crypto'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { insertResultFile } from '../../src/files/files.store.js'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { checkpointModelName } from '../../src/fine-tuning/jobs.service.js'
import { getJobById, updateJob } from '../../src/fine-tuning/jobs.store.js'
import { newFileId } from '../../src/ids.js'
import { modelDirForTraining } from '../../src/runner/model-weights.js'
import type { Service } from '../../src/server.js'
import { CHAT_LINE } from '../helper.js'

// models/opentune/tiny-llama/config.json: hidden 128, 4 heads × 32, 2 kv heads, MLP 384, 4 layers
const SHAPES: Record<string, [number, number]> = {
  q_proj: [128, 128],
  k_proj: [128, 64],
  v_proj: [128, 64],
  o_proj: [128, 128],
  gate_proj: [128, 384],
  up_proj: [128, 384],
  down_proj: [384, 128],
}
const R = 4

/** safetensors: an 8-byte header length, the JSON header, then the raw little-endian float32 data. */
function safetensors (tensors: Record<string, { shape: number[], data: Float32Array }>): Buffer {
  const header: Record<string, unknown> = {}
  let offset = 0
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }
    offset += t.data.byteLength
  }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const size = Buffer.alloc(8)
  size.writeBigUInt64LE(BigInt(json.length))
  return Buffer.concat([size, Buffer.from(json), ...Object.values(tensors).map(t => Buffer.from(t.data.buffer))])
}

function randomMatrix (rows: number, cols: number, scale: number): { shape: number[], data: Float32Array } {
  const data = new Float32Array(rows * cols)
  const bytes = randomBytes(data.length)
  for (let i = 0; i < data.length; i++) data[i] = ((bytes[i] ?? 0) / 255 - 0.5) * 2 * scale
  return { shape: [rows, cols], data }
}

export interface MadeCheckpoint { id: string, name: string, jobId: string }

export async function makeLoraCheckpoint (service: Service, client: OpenAI, project: string): Promise<MadeCheckpoint> {
  const tensors: Record<string, { shape: number[], data: Float32Array }> = {}
  for (let layer = 0; layer < 4; layer++) {
    for (const [name, [inF, outF]] of Object.entries(SHAPES)) {
      const group = ['gate_proj', 'up_proj', 'down_proj'].includes(name) ? 'mlp' : 'self_attn'
      const prefix = `base_model.model.model.layers.${layer}.${group}.${name}`
      tensors[`${prefix}.lora_A.weight`] = randomMatrix(R, inF, 0.2)
      tensors[`${prefix}.lora_B.weight`] = randomMatrix(outF, R, 0.2)
    }
  }
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: 'opentune/tiny-llama',
    r: R,
    lora_alpha: 8,
    lora_dropout: 0,
    target_modules: Object.keys(SHAPES),
    bias: 'none',
  }
  const files = { 'adapter_config.json': Buffer.from(JSON.stringify(config)), 'adapter_model.safetensors': safetensors(tensors) }
  return await registerCheckpoint(service, client, project, files, { lora: true })
}

/** A full fine-tune's checkpoint: an HF folder (here the base's own weights, config and tokenizer). */
export async function makeFullCheckpoint (service: Service, client: OpenAI, project: string): Promise<MadeCheckpoint> {
  const base = service.ctx.models.find('opentune/tiny-llama')
  if (!base) throw new Error('no built-in model')
  const dir = await modelDirForTraining(service.ctx.config, base)
  const files: Record<string, Buffer> = {}
  for (const name of await readdir(dir)) files[name] = await readFile(join(dir, name))
  return await registerCheckpoint(service, client, project, files, { lora: false })
}

async function registerCheckpoint (
  service: Service,
  client: OpenAI,
  projectName: string,
  files: Record<string, Buffer>,
  hyperparameters: { lora: boolean }
): Promise<MadeCheckpoint> {
  const ctx = service.ctx
  const file = await client.files.create({ file: await toFile(Buffer.from(CHAT_LINE), 'train.jsonl'), purpose: 'fine-tune' })
  const job = await client.fineTuning.jobs.create({
    model: 'opentune/tiny-llama', training_file: file.id, suffix: 'qa', hyperparameters: hyperparameters as never,
  })
  const id = `ftckpt_${randomBytes(16).toString('hex')}`
  const ids: string[] = []
  const projectId = (await getJobById(ctx.db, job.id))?.project_id ?? ''
  for (const [name, bytes] of Object.entries(files)) {
    const fileId = newFileId()
    const path = join(ctx.config.dataDir, `${fileId}.tmp`)
    await writeFile(path, bytes)
    await ctx.blobs.importFile(path, fileId)
    await insertResultFile(ctx.db, { id: fileId, projectId, filename: `${id}/${name}`, bytes: bytes.length })
    ids.push(fileId)
  }
  const name = checkpointModelName({ model: job.model, suffix: 'qa', id: job.id }, projectName, 4)
  const metrics = { step: 4, train_loss: 1 }
  const row = { id, jobId: job.id, stepNumber: 4, fineTunedModelCheckpoint: name, metrics, resultFiles: ids }
  await insertCheckpoint(ctx.db, row)
  await updateJob(ctx.db, job.id, { status: 'succeeded', fine_tuned_model: name, finished_at: Math.floor(Date.now() / 1000) })
  return { id, name, jobId: job.id }
}

/** POST /v0/models of the checkpoint, then GET until it leaves `validating` (bounded, never a fixed sleep). */
export async function deploy (client: OpenAI, checkpoint: MadeCheckpoint): Promise<{ name: string, status: string }> {
  const source = `${checkpoint.jobId}:${checkpoint.id}`
  const body = { name: 'qa', base_model: 'opentune/tiny-llama', source }
  const { name } = await client.post('/../v0/models', { body }) as { name: string }
  let status = 'validating'
  for (let i = 0; i < 200 && status === 'validating'; i++) {
    status = (await client.get(`/../v0/models/${encodeURIComponent(name)}`) as { status: string }).status
    if (status === 'validating') await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { name, status }
}

// What the end-to-end suites share: a listening service with the real trainer, an openai client
// with a project key, the examples uploaded, and the few client loops every suite needs.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import OpenAI from 'openai'
import { startService, type Service } from '../../src/server.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { testConfig } from '../helper.js'

export const ROOT = join(import.meta.dirname, '..', '..')
const EXAMPLES = join(ROOT, 'examples', 'data')

export interface E2E {
  service: Service
  client: OpenAI
  trainingFile: string
  validationFile: string
  close: () => Promise<void>
}

/** The service on SQLite, training on the CPU, with examples/data/{train,valid}.jsonl uploaded. */
export async function startE2E (): Promise<E2E> {
  const made = await testConfig('sqlite', { OPENTUNE_DEVICE: 'cpu' })
  const service = await startService({ ...made.config, port: 0 })
  const project = await ensureProject(service.ctx.db, 'e2e')
  const client = new OpenAI({ apiKey: (await createKey(service.ctx.db, project.id)).key, baseURL: `${service.url}/v1`, maxRetries: 0 })
  const upload = async (name: string) =>
    (await client.files.create({ file: createReadStream(join(EXAMPLES, name)), purpose: 'fine-tune' })).id
  return {
    service,
    client,
    trainingFile: await upload('train.jsonl'),
    validationFile: await upload('valid.jsonl'),
    close: async () => {
      await service.close()
      await made.cleanup()
    },
  }
}

export async function finished (client: OpenAI, jobId: string) {
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(jobId)
    if (['succeeded', 'failed', 'cancelled'].includes(job.status)) return job
    await new Promise(resolve => setTimeout(resolve, 250))
  }
}

export async function checkpointsOf (client: OpenAI, jobId: string) {
  const list = []
  for await (const c of client.fineTuning.jobs.checkpoints.list(jobId)) {
    list.push(c as typeof c & { result_files: string[] })
  }
  return list
}

/** A file's name (after the checkpoint folder prefix) and bytes, its size checked against its metadata. */
export async function download (client: OpenAI, fileId: string) {
  const meta = await client.files.retrieve(fileId)
  const bytes = Buffer.from(await (await client.files.content(fileId)).arrayBuffer())
  assert.equal(bytes.length, meta.bytes)
  return { name: meta.filename.split('/')[1] ?? '', bytes }
}

export type SafetensorsHeader = Record<string, { dtype: string, shape: number[] }>
export function safetensorsHeader (bytes: Buffer): SafetensorsHeader {
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as SafetensorsHeader & { __metadata__?: unknown }
  delete header.__metadata__
  return header
}

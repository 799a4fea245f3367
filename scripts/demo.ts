// npm run demo: a whole fine-tune on this machine, through the public API and the openai SDK.
// Starts opentune on a temporary data dir, uploads examples/data/{train,valid}.jsonl, fine-tunes
// opentune/tiny-llama with LoRA, prints events as they arrive, each checkpoint read through
// GET /v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}, and the loss curve.
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { loadConfig } from '../src/config.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import { startService } from '../src/server.js'

const EXAMPLES = join(import.meta.dirname, '..', 'examples', 'data')

async function main (): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-demo-'))
  const service = await startService(loadConfig({ ...process.env, OPENTUNE_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' }))
  try {
    const project = await ensureProject(service.ctx.db, 'demo')
    const { key } = await createKey(service.ctx.db, project.id)
    const client = new OpenAI({ apiKey: key, baseURL: `${service.url}/v1` })
    console.log(`opentune at ${service.url} (data in ${dataDir})`)

    const training = await client.files.create({ file: createReadStream(join(EXAMPLES, 'train.jsonl')), purpose: 'fine-tune' })
    const validation = await client.files.create({ file: createReadStream(join(EXAMPLES, 'valid.jsonl')), purpose: 'fine-tune' })
    console.log(`uploaded ${training.filename} (${training.bytes} bytes) and ${validation.filename} (${validation.bytes} bytes)`)

    const job = await client.fineTuning.jobs.create({
      model: 'opentune/tiny-llama',
      training_file: training.id,
      validation_file: validation.id,
      // Nebius hyperparameters; a random-initialised tiny model needs a far larger learning rate than a real one.
      hyperparameters: {
        n_epochs: 3,
        batch_size: 8,
        learning_rate: 3e-3,
        lora: true,
        lora_r: 16,
        lora_alpha: 32,
        packing: false,
      } as never,
      suffix: 'demo',
    })
    console.log(`created ${job.id}\n`)

    let after: string | undefined
    const losses: number[] = []
    for (;;) {
      const page = await client.fineTuning.jobs.listEvents(job.id, { limit: 100, ...(after ? { after } : {}) })
      for (const e of page.data) {
        console.log(`  [${e.level}] ${e.message}`)
        after = e.id
        const data = e.data as { train_loss?: number } | null
        if (e.type === 'metrics' && typeof data?.train_loss === 'number') losses.push(data.train_loss)
      }
      const now = await client.fineTuning.jobs.retrieve(job.id)
      if (['succeeded', 'failed', 'cancelled'].includes(now.status) && page.data.length === 0) {
        console.log(`\njob ${now.status}${now.error ? `: ${now.error.code} — ${now.error.message}` : ''}`)
        break
      }
      await new Promise(resolve => setTimeout(resolve, 500))
    }

    for await (const c of client.fineTuning.jobs.checkpoints.list(job.id)) {
      const one = await client.get(`/fine_tuning/jobs/${job.id}/checkpoints/${c.id}`) as typeof c & { result_files: string[] }
      const m = one.metrics
      console.log(`\ncheckpoint ${one.id} step ${one.step_number}: ${one.fine_tuned_model_checkpoint}`)
      console.log(`  train_loss=${fmt(m.train_loss)} train_acc=${fmt(m.train_mean_token_accuracy)} valid_loss=${fmt(m.valid_loss)} full_valid_loss=${fmt(m.full_valid_loss)} full_valid_acc=${fmt(m.full_valid_mean_token_accuracy)}`)
      for (const fileId of one.result_files) {
        const f = await client.files.retrieve(fileId)
        console.log(`  ${f.filename} (${f.bytes} bytes): GET /v1/files/${fileId}/content`)
      }
    }
    if (losses.length > 1) console.log(`\ntraining loss by step\n${plot(losses)}`)
  } finally {
    await service.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

const fmt = (v: number | null | undefined) => (typeof v === 'number' ? v.toFixed(4) : 'null')

/** A small terminal chart: one column per step (downsampled to 60), 12 rows. */
function plot (values: number[], height = 12, width = 60): string {
  const cols = values.length <= width
    ? values
    : Array.from({ length: width }, (_, i) => values[Math.floor(i * values.length / width)] ?? 0)
  const lo = Math.min(...cols)
  const hi = Math.max(...cols)
  const rows: string[] = []
  for (let r = height - 1; r >= 0; r--) {
    const level = lo + (hi - lo) * (r + 0.5) / height
    const label = r === height - 1 ? hi.toFixed(2) : r === 0 ? lo.toFixed(2) : ''
    rows.push(`${label.padStart(7)} │${cols.map(v => (v >= level ? '█' : ' ')).join('')}`)
  }
  rows.push(`${''.padStart(7)} └${'─'.repeat(cols.length)} step 1…${values.length}`)
  return rows.join('\n')
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

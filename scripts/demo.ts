// npm run demo: the whole loop on this machine, through the public API and the openai SDK.
// Starts opentune on a temporary data dir, asks the built-in random-initialised opentune/tiny-llama
// a dozen questions about made-up facts (examples/data/qa-train.jsonl), fine-tunes it on them
// (printing events as they arrive, each checkpoint read through
// GET /v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}, and the loss curve), then asks the
// fine-tuned model the same questions and prints both side by side with the score.
// The questions and the job's settings live in scripts/demo-qa.ts, which test/e2e/demo-loop.test.ts
// shares to assert what this prints.
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import OpenAI from 'openai'
import { loadConfig } from '../src/config.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import { startService } from '../src/server.js'
import { DEMO_JOB, QA_FILE, askAll, exactCount, type Asked } from './demo-qa.js'

async function main (): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-demo-'))
  const service = await startService(loadConfig({ ...process.env, OPENTUNE_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' }))
  try {
    const project = await ensureProject(service.ctx.db, 'demo')
    const { key } = await createKey(service.ctx.db, project.id)
    const client = new OpenAI({ apiKey: key, baseURL: `${service.url}/v1` })
    console.log(`opentune at ${service.url} (data in ${dataDir})`)

    const training = await client.files.create({ file: createReadStream(QA_FILE), purpose: 'fine-tune' })
    console.log(`uploaded ${training.filename} (${training.bytes} bytes)`)

    const base = await askAll(client, DEMO_JOB.model)
    console.log(`asked ${DEMO_JOB.model} its ${base.length} questions before training: ${exactCount(base)} exact`)

    const job = await client.fineTuning.jobs.create({
      ...DEMO_JOB,
      training_file: training.id,
      hyperparameters: DEMO_JOB.hyperparameters as never, // Nebius's, a superset of OpenAI's
      suffix: 'demo',
    })
    console.log(`created ${job.id}: ${JSON.stringify(DEMO_JOB.hyperparameters)}\n`)

    let after: string | undefined
    let fineTuned = ''
    let metricsFile = ''
    for (;;) {
      const page = await client.fineTuning.jobs.listEvents(job.id, { limit: 100, ...(after ? { after } : {}) })
      for (const e of page.data) {
        after = e.id
        const data = e.data as { step?: number, total_steps?: number } | null
        // of the step events (the service keeps about 100 a job), one in 24 steps: the chart below has them all
        if (e.type === 'metrics' && data?.step !== undefined && data.step % 24 !== 0 && data.step !== data.total_steps) continue
        console.log(`  [${e.level}] ${e.message}`)
      }
      const now = await client.fineTuning.jobs.retrieve(job.id)
      if (['succeeded', 'failed', 'cancelled'].includes(now.status) && page.data.length === 0) {
        console.log(`\njob ${now.status}${now.error ? `: ${now.error.code} — ${now.error.message}` : ''}`)
        if (now.status !== 'succeeded') throw new Error(`the job ${now.status}`)
        fineTuned = now.fine_tuned_model ?? ''
        metricsFile = now.result_files[0] ?? ''
        break
      }
      await new Promise(resolve => setTimeout(resolve, 500))
    }

    const checkpoints = []
    for await (const c of client.fineTuning.jobs.checkpoints.list(job.id)) checkpoints.push(c)
    console.log(`\n${checkpoints.length} checkpoints, one per epoch`)
    for (const c of checkpoints) {
      const one = await client.get(`/fine_tuning/jobs/${job.id}/checkpoints/${c.id}`) as typeof c & { result_files: string[] }
      const m = one.metrics
      console.log(`  step ${String(one.step_number).padStart(3)}: ${one.id} train_loss=${fmt(m.train_loss)} train_acc=${fmt(m.train_mean_token_accuracy)}`)
      if (one.fine_tuned_model_checkpoint !== fineTuned) continue
      console.log(`  the last is the job's fine_tuned_model, ${one.fine_tuned_model_checkpoint}; its files:`)
      for (const fileId of one.result_files) {
        const f = await client.files.retrieve(fileId)
        console.log(`    ${basename(f.filename)} (${f.bytes} bytes): GET /v1/files/${fileId}/content`)
      }
    }
    // the job's result file: metrics.csv, one row per optimizer step
    const csv = (await (await client.files.content(metricsFile)).text()).trim().split('\n').map(l => l.split(','))
    const column = csv[0]!.indexOf('train_loss')
    const losses = csv.slice(1).filter(row => row[column]).map(row => Number(row[column]))
    console.log(`\ntraining loss by step (the job's result file, GET /v1/files/${metricsFile}/content)\n${plot(losses)}`)

    const tuned = await askAll(client, fineTuned)
    console.log(`\neach question through client.chat.completions.create, greedy (temperature 0), to ${DEMO_JOB.model} and to ${fineTuned}:\n`)
    console.log(table(base, tuned))
    console.log(`\nfine-tuned ${exactCount(tuned)}/${tuned.length} exact, base ${exactCount(base)}/${base.length}`)
  } finally {
    await service.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

const fmt = (v: number | null | undefined) => (typeof v === 'number' ? v.toFixed(4) : 'null')

/** A small terminal chart: one column per step (the mean of each of 60 buckets when longer), 12 rows. */
function plot (values: number[], height = 12, width = 60): string {
  const cols = values.length <= width
    ? values
    : Array.from({ length: width }, (_, i) => {
      const bucket = values.slice(Math.floor(i * values.length / width), Math.floor((i + 1) * values.length / width))
      return bucket.reduce((a, b) => a + b, 0) / bucket.length
    })
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

/** Question, expected, the base model's answer and the fine-tuned one's, each marked ✓ when exact. */
function table (base: readonly Asked[], tuned: readonly Asked[]): string {
  const shown = (s: string, width: number) => {
    if (s === '') return '(nothing)'
    const one = JSON.stringify(s).slice(1, -1) // control characters and newlines escaped, on one line
    return one.length > width ? `${one.slice(0, width - 1)}…` : one
  }
  const rows = base.map((b, i) => {
    const t = tuned[i]!
    return [b.question, b.answer, `${b.exact ? '✓' : '✗'} ${shown(b.got, 18)}`, `${t.exact ? '✓' : '✗'} ${shown(t.got, 18)}`]
  })
  const header = ['question', 'expected', 'base', 'fine-tuned']
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map(r => r[c]!.length)))
  const line = (cells: string[]) => cells.map((cell, c) => cell.padEnd(widths[c]!)).join(' │ ')
  return [line(header), widths.map(w => '─'.repeat(w)).join('─┼─'), ...rows.map(line)].join('\n')
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

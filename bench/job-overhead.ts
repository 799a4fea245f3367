// What the service adds around training, for the built-in tiny model on this machine:
//   1. POST /v1/fine_tuning/jobs → status running (validation, claim, trainer start-up);
//   2. per step: the job's wall time while running vs the trainer's own step times.
// Run: npx tsx bench/job-overhead.ts [jobs=5]
import { appendFileSync, createReadStream, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { loadConfig } from '../src/config.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import { Runner } from '../src/runner/runner.js'
import { startService } from '../src/server.js'
import { followJob } from './job-clock.js'

const ROOT = join(import.meta.dirname, '..')
const JOBS = Number(process.argv[2] ?? 5)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN

async function main (): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-bench-'))
  const timesLog = join(dataDir, 'trainer-times.jsonl')
  appendFileSync(timesLog, '')
  const config = loadConfig({ ...process.env, OPENTUNE_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'warn', OPENTUNE_RUNNER: '0', OPENTUNE_DEVICE: 'cpu', TIMED_TRAINER_LOG: timesLog })
  const service = await startService(config)
  // The runner the service would start, but with the trainer wrapped to time its process.
  const runner = new Runner(service.ctx, { log: service.app.log, trainerCommand: [join(ROOT, 'bench', 'timed-trainer.sh')] })
  runner.start()
  try {
    const project = await ensureProject(service.ctx.db, 'bench')
    const client = new OpenAI({ apiKey: (await createKey(service.ctx.db, project.id)).key, baseURL: `${service.url}/v1` })
    const file = await client.files.create({ file: createReadStream(join(ROOT, 'examples', 'data', 'train.jsonl')), purpose: 'fine-tune' })
    const rows: Array<Record<'create_to_running_ms' | 'running_to_succeeded_ms' | 'steps' | 'trainer_step_ms' | 'trainer_process_ms' | 'job_wall_per_step_ms', number>> = []
    for (let i = 0; i < JOBS; i++) {
      const t0 = performance.now()
      const job = await client.fineTuning.jobs.create({ model: 'opentune/tiny-llama', training_file: file.id, hyperparameters: { n_epochs: 2, lora: true, learning_rate: 3e-3, packing: false } as never })
      const { status, runningAt: running, doneAt: done } = await followJob(client, job.id)
      if (status !== 'succeeded') throw new Error(`job ${job.id} ${status}`)
      const final = await client.fineTuning.jobs.retrieve(job.id)
      const csv = await (await client.files.content(final.result_files[0]!)).text()
      const [header, ...lines] = csv.trim().split('\n')
      const col = header!.split(',').indexOf('step_time_s')
      const stepSeconds = lines.reduce((s, l) => s + Number(l.split(',')[col]), 0)
      const trainer = JSON.parse(readFileSync(timesLog, 'utf8').trim().split('\n').at(-1)!) as { start_ms: number, end_ms: number }
      const steps = lines.length
      rows.push({
        create_to_running_ms: Math.round(running - t0),
        running_to_succeeded_ms: Math.round(done - running),
        steps,
        trainer_step_ms: Math.round(stepSeconds * 1000 / steps * 10) / 10,
        trainer_process_ms: trainer.end_ms - trainer.start_ms,
        job_wall_per_step_ms: Math.round((done - running) / steps * 10) / 10,
      })
      console.log(JSON.stringify(rows.at(-1)))
    }
    const m = (k: keyof (typeof rows)[number]) => median(rows.map(r => r[k]))
    console.log(JSON.stringify({
      jobs: rows.length,
      median_create_to_running_ms: m('create_to_running_ms'),
      median_trainer_step_ms: m('trainer_step_ms'),
      median_job_wall_per_step_ms: m('job_wall_per_step_ms'),
      median_trainer_process_ms: m('trainer_process_ms'),
      median_running_to_succeeded_ms: m('running_to_succeeded_ms'),
    }))
  } finally {
    await runner.stop()
    await service.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

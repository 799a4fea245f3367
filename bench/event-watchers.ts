// Do streaming watchers slow training? The service in-process (SQLite, its own runner, the real
// trainer on the built-in tiny model, CPU), jobs one after another, alternately with 0 and with N
// clients streaming the job's events (GET …/events?stream=true) from before it starts until [DONE].
// Per job: the median of the trainer's step_time_s (the job's metrics CSV) and the job's wall time
// per step while running; then the medians over the jobs of each kind, and their ratio.
// Run: npx tsx bench/event-watchers.ts [watchers=50] [pairs=3]
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { loadConfig } from '../src/config.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import { startService } from '../src/server.js'
import { followJob } from './job-clock.js'

const ROOT = join(import.meta.dirname, '..')
const WATCHERS = Number(process.argv[2] ?? 50)
const PAIRS = Number(process.argv[3] ?? 3)
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** One streaming client: resolves with how many events it got once [DONE] came (rejects otherwise). */
async function watch (url: string, key: string, connected: () => void): Promise<number> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' } })
  if (!res.ok || !res.body) throw new Error(`stream: ${res.status}`)
  connected()
  const decoder = new TextDecoder()
  let text = ''
  let events = 0
  for await (const chunk of res.body) {
    text += decoder.decode(chunk, { stream: true })
    for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
      const frame = text.slice(0, end)
      text = text.slice(end + 2)
      if (frame.includes('data: [DONE]')) return events
      if (frame.includes('\ndata: ')) events++
    }
  }
  throw new Error('stream ended without [DONE]')
}

async function main (): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-bench-'))
  const config = loadConfig({ ...process.env, OPENTUNE_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'warn', OPENTUNE_DEVICE: 'cpu' })
  const service = await startService(config)
  try {
    const project = await ensureProject(service.ctx.db, 'bench')
    const key = (await createKey(service.ctx.db, project.id)).key
    const client = new OpenAI({ apiKey: key, baseURL: `${service.url}/v1` })
    const train = createReadStream(join(ROOT, 'examples', 'data', 'train.jsonl'))
    const file = await client.files.create({ file: train, purpose: 'fine-tune' })
    const hyperparameters = { n_epochs: 2, lora: true, learning_rate: 3e-3, packing: false } as never
    // a first job warms up (the tiny model's weights are made on first use); not counted
    const kinds = [0, ...Array.from({ length: PAIRS }, () => [0, WATCHERS]).flat()]
    type Row = { watchers: number, steps: number, step_time_ms: number, wall_per_step_ms: number, events: number }
    const rows: Row[] = []
    for (const [i, watchers] of kinds.entries()) {
      const job = await client.fineTuning.jobs.create({ model: 'opentune/tiny-llama', training_file: file.id, hyperparameters })
      let open = 0
      const streams = Array.from({ length: watchers }, async () => await watch(
        `${service.url}/v1/fine_tuning/jobs/${job.id}/events`, key, () => { open++ }))
      const { status, runningAt: running, doneAt: done } = await followJob(client, job.id)
      if (status !== 'succeeded') throw new Error(`job ${job.id} ${status}`)
      const counts = await Promise.all(streams)
      const listed = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.length
      if (counts.some(c => c !== listed)) throw new Error(`a watcher missed events: ${counts.join(',')} of ${listed}`)
      if (open !== watchers) throw new Error('not every watcher connected')
      const final = await client.fineTuning.jobs.retrieve(job.id)
      const csv = await (await client.files.content(final.result_files[0]!)).text()
      const [header, ...lines] = csv.trim().split('\n')
      const col = header!.split(',').indexOf('step_time_s')
      const stepTimes = lines.map(l => Number(l.split(',')[col]) * 1000)
      const row = {
        watchers,
        steps: lines.length,
        step_time_ms: Math.round(median(stepTimes) * 10) / 10,
        wall_per_step_ms: Math.round((done - running) / lines.length * 10) / 10,
        events: listed,
      }
      console.log(JSON.stringify({ job: i, ...(i === 0 ? { warmup: true } : {}), ...row }))
      if (i > 0) rows.push(row)
    }
    const of = (w: number, k: 'step_time_ms' | 'wall_per_step_ms') => median(rows.filter(r => r.watchers === w).map(r => r[k]))
    const summary = {
      watchers: WATCHERS,
      jobs_each: PAIRS,
      median_step_time_ms_0: of(0, 'step_time_ms'),
      median_step_time_ms_n: of(WATCHERS, 'step_time_ms'),
      step_time_ratio: Math.round(of(WATCHERS, 'step_time_ms') / of(0, 'step_time_ms') * 1000) / 1000,
      median_wall_per_step_ms_0: of(0, 'wall_per_step_ms'),
      median_wall_per_step_ms_n: of(WATCHERS, 'wall_per_step_ms'),
      wall_per_step_ratio: Math.round(of(WATCHERS, 'wall_per_step_ms') / of(0, 'wall_per_step_ms') * 1000) / 1000,
    }
    console.log(JSON.stringify(summary))
  } finally {
    await service.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

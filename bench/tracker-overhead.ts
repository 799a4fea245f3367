// Does a failing or hanging tracker slow training? The service in-process (SQLite, its own runner,
// the real trainer on the built-in tiny model, CPU), jobs one after another in rounds of three:
// no tracker; W&B and MLflow integrations whose server answers every request 500; and ones whose
// server never answers. All settings at their defaults (request timeout, attempts, backoff, flush).
// Per job: the median of the trainer's step_time_s (the job's metrics CSV) and the wall time per
// step while running; then the medians over the jobs of each kind, and their ratios to no tracker.
// Run: npx tsx bench/tracker-overhead.ts [rounds=3]
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { loadConfig } from '../src/config.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import { startService } from '../src/server.js'
import { followJob } from './job-clock.js'

const ROOT = join(import.meta.dirname, '..')
const ROUNDS = Number(process.argv[2] ?? 3)
const KINDS = ['none', 'error', 'hang'] as const
type Kind = typeof KINDS[number]
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** W&B (project "error" | "hang") and MLflow (tracking URI …/error | …/hang) in one server. */
async function brokenTracker (): Promise<{ url: string, hanging: Set<http.ServerResponse>, close: () => void }> {
  const hanging = new Set<http.ServerResponse>()
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      if ((req.url ?? '').startsWith('/hang') || body.includes('"project":"hang"') || (req.url ?? '').includes('/hang/')) {
        hanging.add(res)
        res.on('close', () => hanging.delete(res))
        return
      }
      res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"down"}')
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return { url, hanging, close: () => { server.closeAllConnections(); server.close() } }
}

function integrations (kind: Kind, url: string) {
  if (kind === 'none') return undefined
  return [
    { type: 'wandb', wandb: { project: kind, api_key: 'bench-key-0123456789' } },
    {
      type: 'mlflow',
      mlflow: { tracking_uri: `${url}/${kind}`, experiment_name: 'bench', run_name: null, certificate_file: '', username: 'u', password: 'p' },
    },
  ] as never
}

async function main (): Promise<void> {
  const tracker = await brokenTracker()
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-bench-'))
  const env = { ...process.env, OPENTUNE_DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'warn', OPENTUNE_DEVICE: 'cpu', WANDB_BASE_URL: tracker.url }
  const service = await startService(loadConfig(env))
  try {
    const project = await ensureProject(service.ctx.db, 'bench')
    const client = new OpenAI({ apiKey: (await createKey(service.ctx.db, project.id)).key, baseURL: `${service.url}/v1` })
    const train = createReadStream(join(ROOT, 'examples', 'data', 'train.jsonl'))
    const file = await client.files.create({ file: train, purpose: 'fine-tune' })
    const hyperparameters = { n_epochs: 2, lora: true, learning_rate: 3e-3, packing: false } as never
    // a first job warms up (the tiny model's weights are made on first use); not counted
    const kinds: Kind[] = ['none', ...Array.from({ length: ROUNDS }, () => [...KINDS]).flat()]
    type Row = { kind: Kind, steps: number, step_time_ms: number, wall_per_step_ms: number, gave_up_events: number }
    const rows: Row[] = []
    for (const [i, kind] of kinds.entries()) {
      const job = await client.fineTuning.jobs.create({
        model: 'opentune/tiny-llama', training_file: file.id, hyperparameters, integrations: integrations(kind, tracker.url),
      })
      const { status, runningAt, doneAt } = await followJob(client, job.id)
      if (status !== 'succeeded') throw new Error(`job ${job.id} ${status}`)
      const hangingAtEnd = tracker.hanging.size
      const final = await client.fineTuning.jobs.retrieve(job.id)
      const csv = await (await client.files.content(final.result_files[0]!)).text()
      const [header, ...lines] = csv.trim().split('\n')
      const col = header!.split(',').indexOf('step_time_s')
      const stepTimes = lines.map(l => Number(l.split(',')[col]) * 1000)
      // the next job starts once this one's trackers have given up (the flush time at most)
      while (tracker.hanging.size > 0) await new Promise(resolve => setTimeout(resolve, 200))
      const events = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data
      const row: Row = {
        kind,
        steps: lines.length,
        step_time_ms: Math.round(median(stepTimes) * 10) / 10,
        wall_per_step_ms: Math.round((doneAt - runningAt) / lines.length * 10) / 10,
        gave_up_events: events.filter(e => /could not|gave up|not delivered/.test(e.message)).length,
      }
      const warmup = i === 0 ? { warmup: true } : {}
      console.log(JSON.stringify({ job: i, ...warmup, ...row, hanging_requests_at_end: hangingAtEnd }))
      if (i > 0) rows.push(row)
    }
    const of = (k: Kind, m: 'step_time_ms' | 'wall_per_step_ms') => median(rows.filter(r => r.kind === k).map(r => r[m]))
    const ratio = (k: Kind, m: 'step_time_ms' | 'wall_per_step_ms') => Math.round(of(k, m) / of('none', m) * 1000) / 1000
    console.log(JSON.stringify({
      rounds: ROUNDS,
      median_step_time_ms: Object.fromEntries(KINDS.map(k => [k, of(k, 'step_time_ms')])),
      step_time_ratio_error: ratio('error', 'step_time_ms'),
      step_time_ratio_hang: ratio('hang', 'step_time_ms'),
      median_wall_per_step_ms: Object.fromEntries(KINDS.map(k => [k, of(k, 'wall_per_step_ms')])),
      wall_per_step_ratio_error: ratio('error', 'wall_per_step_ms'),
      wall_per_step_ratio_hang: ratio('hang', 'wall_per_step_ms'),
    }))
  } finally {
    await service.close()
    tracker.close()
    await rm(dataDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

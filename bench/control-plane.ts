/**
 * The control plane's limits: many jobs at once through the real API and runner code on PostgreSQL,
 * trained by the scripted trainer double (test/fixtures/fake-trainer.mjs: a metrics line every
 * --step-ms, a checkpoint every epoch), for each job count in --jobs. Per level, in a schema and data
 * dir of its own (dropped afterwards):
 *   1. the API (one process, runner off) and ceil(jobs / --per-runner) runner processes start
 *      (bench/control-plane-process.ts); a short probe job trains to the end (its checkpoint, events);
 *   2. baseline: the checkpoint GET, the job list and the events list, each at --rate req/s for
 *      --duration s at once (autocannon), no job running;
 *   3. the jobs are created through the API; once all run, the same load again, while rows written
 *      per second (count(*) per table, pg_stat_user_tables for updates), CPU of each process (/proc),
 *      event-loop use of the API and of each runner are recorded;
 *   4. every job is cancelled through the API; the database size per table (pg_total_relation_size)
 *      grown since before step 3, per 1,000 steps stored.
 * The machine is shared (2 cores, other work): latencies are reported next to the baseline measured
 * minutes before in the same run, as ratios.
 *
 *   npx tsx bench/control-plane.ts                    # --jobs 25,50,100,200, a few minutes
 *   npx tsx bench/control-plane.ts --jobs 200 --per-runner 64 --step-ms 100 --rows 192 --duration 10 --rate 50
 *
 * Needs PostgreSQL at OPENTUNE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { sql, type Kysely } from 'kysely'
import OpenAI, { toFile } from 'openai'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { openStore } from '../src/db/connect.js'
import type { Database } from '../src/db/database.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import type { ProcessStats, ToParent } from './control-plane-process.js'
import { followJob } from './job-clock.js'

const ROOT = resolve(import.meta.dirname, '..')
const POSTGRES_URL = process.env.OPENTUNE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const CLOCK_TICKS = 100 // getconf CLK_TCK, for /proc/<pid>/stat
const MODEL = 'bench/tiny-llama' // the built-in model's config and tokenizer; the double needs no weights

const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '25,50,100,200' },
    'per-runner': { type: 'string', default: '50' }, // OPENTUNE_MAX_CONCURRENT_JOBS of each runner (≤ 64)
    'step-ms': { type: 'string', default: '100' }, // FAKE_TRAINER_STEP_MS: 10 steps a second
    rows: { type: 'string', default: '192' }, // training examples = steps per epoch (batch size 1)
    duration: { type: 'string', default: '10' }, // seconds of each measurement
    rate: { type: 'string', default: '50' }, // requests a second to each endpoint
    connections: { type: 'string', default: '4' },
    'ramp-timeout': { type: 'string', default: '300' },
  },
})
const LEVELS = String(args.jobs).split(',').map(Number)
const PER_RUNNER = Number(args['per-runner'])
const STEP_MS = Number(args['step-ms'])
const ROWS = Number(args.rows)
const DURATION = Number(args.duration)
const RATE = Number(args.rate)
const CONNECTIONS = Number(args.connections)
const EPOCHS = 20 // the most a job may ask for: long enough to outlast the ramp and both measurements

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length === 0 ? NaN : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}
const sleep = async (ms: number) => await new Promise(resolve => setTimeout(resolve, ms))
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits

// ---- processes -------------------------------------------------------------------------------

class Child {
  readonly #stats: Array<(s: ProcessStats) => void> = []
  readonly ready: Promise<string | undefined>
  readonly exited: Promise<void>

  constructor (readonly proc: ChildProcess) {
    this.ready = new Promise((resolve, reject) => {
      proc.on('message', (m: ToParent) => {
        if (m.type === 'ready') resolve(m.url)
        if (m.type === 'stats') this.#stats.shift()?.(m.stats)
      })
      proc.once('exit', code => reject(new Error(`${proc.spawnargs.at(-1)} exited (${code}) before it was ready`)))
    })
    this.exited = new Promise(resolve => proc.once('exit', () => resolve()))
  }

  get pid (): number { return this.proc.pid ?? -1 }

  async stats (): Promise<ProcessStats> {
    const answer = new Promise<ProcessStats>(resolve => this.#stats.push(resolve))
    this.proc.send('stats')
    return await answer
  }

  async close (): Promise<void> {
    if (this.proc.exitCode === null) this.proc.send('close')
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 30_000)
    await this.exited
    clearTimeout(killer)
  }
}

function start (role: 'api' | 'runner', env: Record<string, string>, log: string): Child {
  const fd = openSync(log, 'a')
  return new Child(fork(join(import.meta.dirname, 'control-plane-process.ts'), [role], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', fd, fd, 'ipc'],
  }))
}

// ---- what the kernel and the database say --------------------------------------------------------

function ticksOf (pid: number): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return null
  }
}

/** The scripted trainers: processes whose parent is one of the runners. */
function trainerPids (runnerPids: Set<number>): number[] {
  const pids: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const ppid = Number(readFileSync(`/proc/${name}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1])
      if (runnerPids.has(ppid)) pids.push(Number(name))
    } catch {} // gone meanwhile
  }
  return pids
}

/** Busy and total jiffies of the whole machine (/proc/stat), to tell how loaded it was. */
function machineTicks (): { busy: number, total: number } {
  const [, ...f] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/)
  const n = f.map(Number)
  const total = n.reduce((a, b) => a + b, 0)
  return { busy: total - (n[3] ?? 0) - (n[4] ?? 0), total }
}

interface Counts { metrics: number, events: number, checkpoints: number, jobUpdates: number }

async function counts (db: Kysely<Database>, schema: string): Promise<Counts> {
  const rows = await sql<{ metrics: number, events: number, checkpoints: number }>`select
    (select count(*) from job_metrics)::int as metrics,
    (select count(*) from job_events)::int as events,
    (select count(*) from checkpoints)::int as checkpoints`.execute(db)
  // updates as the statistics collector has them (flushed within about a second)
  const upd = await sql<{ n: number }>`select n_tup_upd::int as n from pg_stat_user_tables
    where schemaname = ${schema} and relname = 'fine_tuning_jobs'`.execute(db)
  const r = rows.rows[0]!
  return { metrics: r.metrics, events: r.events, checkpoints: r.checkpoints, jobUpdates: upd.rows[0]?.n ?? 0 }
}

async function tableSizes (db: Kysely<Database>, schema: string): Promise<Map<string, number>> {
  const { rows } = await sql<{ name: string, bytes: number }>`select c.relname as name,
    pg_total_relation_size(c.oid)::bigint as bytes from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relkind = 'r'`.execute(db)
  return new Map(rows.map(r => [r.name, Number(r.bytes)]))
}

/** The PostgreSQL backends serving the service's processes (their connections carry appName). */
async function backendPids (db: Kysely<Database>, appName: string): Promise<number[]> {
  const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity
    where application_name = ${appName}`.execute(db)
  return rows.map(r => r.pid)
}

// ---- load ------------------------------------------------------------------------------------

interface Latency { p50: number, p99: number, rps: number, requests: number, errors: number }
type Endpoint = 'checkpoint' | 'jobs' | 'events'

async function measureApi (
  base: string,
  key: string,
  paths: Record<Endpoint, string>,
  duration = DURATION
): Promise<Record<Endpoint, Latency>> {
  const headers = { authorization: `Bearer ${key}` }
  const entries = await Promise.all(Object.entries(paths).map(async ([name, path]) => {
    const r = await autocannon({ url: `${base}${path}`, connections: CONNECTIONS, duration, overallRate: RATE, headers })
    const errors = r.errors + r.non2xx + r.timeouts
    const { p50, p99 } = r.latency
    const latency: Latency = { p50, p99, rps: r.requests.average, requests: r.requests.total, errors }
    return [name, latency] as const
  }))
  return Object.fromEntries(entries) as Record<Endpoint, Latency>
}

const requestsOf = (m: Record<Endpoint, Latency>) => Object.values(m).reduce((n, l) => n + l.requests, 0)

/** At most `limit` of fn at a time over items. */
async function inBatches<T, R> (items: T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = []
  for (let i = 0; i < items.length; i += limit) out.push(...await Promise.all(items.slice(i, i + limit).map(fn)))
  return out
}

async function waitUntil (what: string, fn: () => Promise<boolean>, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (!(await fn())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(250)
  }
}

// ---- one level --------------------------------------------------------------------------------

interface Level {
  jobs: number
  runners: number
  rampS: number
  running: number // of the jobs, when the measurement began
  failed: number // of the jobs, by the end (an overloaded runner loses leases: docs/scaling.md)
  load: number // the machine's 1-minute load average then (other work included)
  cancelS: number
  targetStepsPerS: number
  rows: Record<keyof Counts, number> // per second
  baseline: Record<Endpoint, Latency>
  loaded: Record<Endpoint, Latency>
  cpu: { api: number, runners: number, trainers: number, postgres: number, machine: number } // cores
  elu: { api: number, runnerMax: number }
  apiCpuMsPerRequest: { baseline: number, loaded: number }
  steps: number
  growth: Map<string, number> // bytes per table since before the jobs
}

async function runLevel (work: string, jobs: number): Promise<Level> {
  const tag = randomBytes(4).toString('hex')
  const schema = `bench_cp_${tag}_${jobs}`
  const appName = `opentune-bench-${tag}`
  const dir = join(work, String(jobs))
  current = { schema, dir }
  mkdirSync(join(dir, 'models', 'bench'), { recursive: true })
  symlinkSync(join(ROOT, 'models', 'opentune', 'tiny-llama'), join(dir, 'models', MODEL))
  const env = {
    OPENTUNE_DATA_DIR: join(dir, 'data'),
    OPENTUNE_MODELS_DIR: join(dir, 'models'),
    OPENTUNE_DATABASE_URL: `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}application_name=${appName}`,
    OPENTUNE_DATABASE_SCHEMA: schema,
    LOG_LEVEL: 'warn',
  }
  const runnerCount = Math.ceil(jobs / PER_RUNNER)
  const children: Child[] = []
  let store: Awaited<ReturnType<typeof openStore>> | null = null
  try {
    const api = start('api', { ...env, OPENTUNE_RUNNER: '0', PORT: '0' }, join(work, `api-${jobs}.log`))
    children.push(api)
    const base = await api.ready
    if (!base) throw new Error('the API did not say where it listens')
    const runnerEnv = {
      ...env,
      OPENTUNE_MAX_CONCURRENT_JOBS: String(PER_RUNNER),
      FAKE_TRAINER_STEP_MS: String(STEP_MS),
    }
    const runners = Array.from({ length: runnerCount }, (_, i) => start('runner', runnerEnv, join(work, `runner-${jobs}-${i}.log`)))
    children.push(...runners)
    await Promise.all(runners.map(async r => await r.ready))

    store = await openStore(loadConfig({ ...env, OPENTUNE_DATABASE_URL: POSTGRES_URL }), { migrate: false })
    const db = store.db
    const project = await ensureProject(db, 'bench')
    const key = (await createKey(db, project.id)).key
    const client = new OpenAI({ apiKey: key, baseURL: `${base}/v1`, maxRetries: 0 })
    const examples = readFileSync(join(ROOT, 'examples', 'data', 'train.jsonl'), 'utf8').trim().split('\n')
    const lines = Array.from({ length: ROWS }, (_, i) => examples[i % examples.length]).join('\n') + '\n'
    const file = await client.files.create({ file: await toFile(Buffer.from(lines), 'train.jsonl'), purpose: 'fine-tune' })
    const create = async (hp: Record<string, unknown>) => await client.fineTuning.jobs.create({
      model: MODEL, training_file: file.id, hyperparameters: { lora: true, packing: false, ...hp } as never,
    })

    // the probe: a finished job whose checkpoint and events the API is asked for
    const probe = await create({ n_epochs: 1, batch_size: 64 })
    const probed = await followJob(client, probe.id)
    if (probed.status !== 'succeeded') throw new Error(`probe job ${probe.id} ${probed.status}`)
    const checkpoint = (await client.fineTuning.jobs.checkpoints.list(probe.id)).data[0]
    if (!checkpoint) throw new Error('the probe job has no checkpoint')
    const paths: Record<Endpoint, string> = {
      checkpoint: `/v1/fine_tuning/jobs/${probe.id}/checkpoints/${checkpoint.id}`,
      jobs: '/v1/fine_tuning/jobs?limit=20',
      events: `/v1/fine_tuning/jobs/${probe.id}/events?limit=20`,
    }
    await measureApi(base, key, paths, 3) // warm-up (the JIT, the pools), not counted
    const apiTicks0 = ticksOf(api.pid)
    const baseline = await measureApi(base, key, paths)
    const apiBaseMs = ((ticksOf(api.pid) ?? NaN) - (apiTicks0 ?? NaN)) * 1000 / CLOCK_TICKS / requestsOf(baseline)

    const sizes0 = await tableSizes(db, schema)
    const rows0 = await counts(db, schema)
    const t0 = performance.now()
    const loadJob = async () => await create({ n_epochs: EPOCHS, batch_size: 1 })
    const created = await inBatches(Array.from({ length: jobs }), 8, loadJob)
    const ids = created.map(j => j.id)
    const statusCount = async () => {
      const { rows } = await sql<{ status: string, n: number }>`select status, count(*)::int as n
        from fine_tuning_jobs where id in (${sql.join(ids)}) group by status`.execute(db)
      return Object.fromEntries(rows.map(r => [r.status, r.n])) as Record<string, number | undefined>
    }
    // On a machine too loaded to start them all in time, the level is measured with those running.
    const rampUntil = Date.now() + Number(args['ramp-timeout']) * 1000
    let running = 0
    for (;;) {
      const by = await statusCount()
      running = by.running ?? 0
      if (running + (by.failed ?? 0) === jobs || Date.now() > rampUntil) break
      await sleep(250)
    }
    const rampS = (performance.now() - t0) / 1000
    await sleep(2000) // the last trainers' first lines

    const runnerPids = new Set(runners.map(r => r.pid))
    const trainers = trainerPids(runnerPids)
    const backends = await backendPids(db, appName)
    const groups = { api: [api.pid], runners: [...runnerPids], trainers, postgres: backends }
    const ticks0 = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, pids.map(ticksOf)]))
    await Promise.all(children.map(async c => await c.stats())) // event-loop figures from here on
    const machine0 = machineTicks()
    const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0])
    const c0 = await counts(db, schema)
    const w0 = performance.now()
    const loaded = await measureApi(base, key, paths)
    const c1 = await counts(db, schema)
    const windowS = (performance.now() - w0) / 1000
    const machine1 = machineTicks()
    const [apiStats, ...runnerStats] = await Promise.all(children.map(async c => await c.stats()))
    const cores = (k: keyof typeof groups) => groups[k].reduce((sum, pid, i) => {
      const before = ticks0[k]?.[i]
      const after = ticksOf(pid)
      return sum + (before === null || before === undefined || after === null ? 0 : after - before)
    }, 0) / CLOCK_TICKS / windowS
    const cpu = {
      api: cores('api'),
      runners: cores('runners'),
      trainers: cores('trainers'),
      postgres: cores('postgres'),
      machine: (machine1.busy - machine0.busy) / (machine1.total - machine0.total) * cpus().length,
    }
    const perS = (k: keyof Counts) => (c1[k] - c0[k]) / windowS

    const t1 = performance.now()
    await inBatches(ids, 10, async id => await client.fineTuning.jobs.cancel(id))
    await waitUntil('every job let go', async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from fine_tuning_jobs
        where locked_by is not null or status not in ('cancelled', 'succeeded', 'failed')`.execute(db)
      return rows[0]?.n === 0
    }, 600_000)
    const cancelS = (performance.now() - t1) / 1000
    const sizes1 = await tableSizes(db, schema)
    const rows1 = await counts(db, schema)
    const failed = (await statusCount()).failed ?? 0
    if (failed > 0) console.error(`${failed} of ${jobs} jobs failed; the runners' logs are in ${work}`)
    return {
      jobs,
      runners: runnerCount,
      rampS,
      running,
      failed,
      load,
      cancelS,
      targetStepsPerS: running * 1000 / STEP_MS,
      rows: { metrics: perS('metrics'), events: perS('events'), checkpoints: perS('checkpoints'), jobUpdates: perS('jobUpdates') },
      baseline,
      loaded,
      cpu,
      elu: { api: apiStats?.elu ?? NaN, runnerMax: Math.max(...runnerStats.map(s => s.elu)) },
      apiCpuMsPerRequest: { baseline: apiBaseMs, loaded: cpu.api * windowS * 1000 / requestsOf(loaded) },
      steps: rows1.metrics - rows0.metrics,
      growth: new Map([...sizes1].map(([t, b]) => [t, b - (sizes0.get(t) ?? 0)])),
    }
  } finally {
    current = null
    await store?.close()
    await Promise.all(children.map(async c => await c.close()))
    await dropSchema(schema)
    rmSync(dir, { recursive: true, force: true })
  }
}

// ---- report -----------------------------------------------------------------------------------

function table (header: string[], rows: Array<Array<string | number>>): string {
  return [header, header.map(() => '---'), ...rows].map(r => `| ${r.join(' | ')} |`).join('\n')
}

function report (levels: Level[]): void {
  const ms = (x: number) => round(x, 1)
  const ratio = (a: number, b: number) => `${round(a / b, 2)}×`
  console.log(`\n## throughput (per second, over the loaded ${DURATION} s; target: ${1000 / STEP_MS} steps/s a job)\n`)
  console.log(table(
    ['jobs', 'running', 'failed', 'runners', 'ramp s', 'load avg', 'target steps/s', 'metrics rows/s', 'kept up', 'events/s',
      'checkpoints/s', 'job-row updates/s', 'cancel all s'],
    levels.map(l => [l.jobs, l.running, l.failed, l.runners, round(l.rampS), l.load, l.targetStepsPerS,
      round(l.rows.metrics), `${round(100 * l.rows.metrics / l.targetStepsPerS, 0)} %`, round(l.rows.events), round(l.rows.checkpoints),
      round(l.rows.jobUpdates), round(l.cancelS)])))
  console.log('\n## CPU while loaded (cores; the machine has ' + `${cpus().length}) and event-loop use (share of time busy)\n`)
  console.log(table(
    ['jobs', 'API', 'runners (all)', 'trainer doubles', 'PostgreSQL backends', 'machine busy', 'API event loop',
      'busiest runner event loop', 'runner CPU ms/step', 'PostgreSQL CPU ms/step', 'API CPU ms/request (base)'],
    levels.map(l => [l.jobs, round(l.cpu.api, 2), round(l.cpu.runners, 2), round(l.cpu.trainers, 2),
      round(l.cpu.postgres, 2), round(l.cpu.machine, 2), `${round(100 * l.elu.api, 0)} %`,
      `${round(100 * l.elu.runnerMax, 0)} %`, round(l.cpu.runners * 1000 / l.rows.metrics, 2),
      round(l.cpu.postgres * 1000 / l.rows.metrics, 2),
      `${round(l.apiCpuMsPerRequest.loaded, 2)} (${round(l.apiCpuMsPerRequest.baseline, 2)})`])))
  console.log(`\n## API latency, ms (${RATE} req/s to each endpoint at once, ${CONNECTIONS} connections; baseline: same level, no job running)\n`)
  const endpoints: Endpoint[] = ['checkpoint', 'jobs', 'events']
  console.log(table(
    ['jobs', ...endpoints.flatMap(e => [`${e} p50 (base)`, `${e} p99 (base)`])],
    levels.map(l => [l.jobs, ...endpoints.flatMap(e => [
      `${ms(l.loaded[e].p50)} (${ms(l.baseline[e].p50)}) ${ratio(l.loaded[e].p50, l.baseline[e].p50)}`,
      `${ms(l.loaded[e].p99)} (${ms(l.baseline[e].p99)}) ${ratio(l.loaded[e].p99, l.baseline[e].p99)}`,
    ])])))
  const errors = levels.reduce((n, l) =>
    n + endpoints.reduce((m, e) => m + l.loaded[e].errors + l.baseline[e].errors, 0), 0)
  const short = levels.flatMap(l => endpoints.filter(e => l.loaded[e].rps < RATE * 0.9).map(e => `${l.jobs}:${e}`))
  console.log(`\nbaseline medians over the levels: ${endpoints.map(e => `${e} p50 ${ms(median(levels.map(l => l.baseline[e].p50)))} ` +
    `p99 ${ms(median(levels.map(l => l.baseline[e].p99)))}`).join(', ')}; errors ${errors}` +
    (short.length ? `; below 90 % of the asked rate: ${short.join(', ')}` : ''))
  const tables = [...new Set(levels.flatMap(l => [...l.growth.keys()]))]
    .filter(t => levels.some(l => (l.growth.get(t) ?? 0) > 0)).sort()
  console.log('\n## database growth per 1,000 steps (pg_total_relation_size, before VACUUM), kB\n')
  console.log(table(
    ['jobs', 'steps stored', ...tables, 'total'],
    levels.map(l => {
      const per = (b: number) => round(b / 1024 / l.steps * 1000, 1)
      const total = tables.reduce((s, t) => s + (l.growth.get(t) ?? 0), 0)
      return [l.jobs, l.steps, ...tables.map(t => per(l.growth.get(t) ?? 0)), per(total)]
    })))
}

async function dropSchema (schema: string): Promise<void> {
  const admin = new pg.Client({ connectionString: POSTGRES_URL })
  await admin.connect()
  try { await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`) } finally { await admin.end() }
}

// The level in progress, dropped on Ctrl-C too (its processes end as their IPC channel closes).
let current: { schema: string, dir: string } | null = null
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    const level = current
    void (level ? dropSchema(level.schema).catch(() => {}) : Promise.resolve()).finally(() => process.exit(130))
  })
}

async function main (): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'opentune-bench-cp-'))
  console.log(`# control plane — node ${process.version}, ${cpus().length} cores, jobs ${LEVELS.join('/')}, ` +
    `${1000 / STEP_MS} steps/s a job, a checkpoint every ${ROWS} steps, ${PER_RUNNER} jobs a runner`)
  const levels: Level[] = []
  try {
    for (const jobs of LEVELS) {
      const level = await runLevel(work, jobs)
      levels.push(level)
      console.error(JSON.stringify({ ...level, growth: Object.fromEntries(level.growth) }))
    }
    report(levels)
    if (levels.some(l => l.failed > 0)) console.error(`\nthe processes' logs are kept in ${work}`)
    else rmSync(work, { recursive: true, force: true })
  } catch (err) {
    console.error(`failed; the processes' logs are in ${work}`)
    throw err
  }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1 })

/**
 * API benchmark: GET /v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id} with auth, on the real
 * service process (`opentune serve`, default LOG_LEVEL=info, log to a file), side by side with
 * (a) a bare Fastify route answering the same checkpoint JSON as a constant and (b) Prism mocking
 * the seed spec. Same load for all three (autocannon, in this process), rounds interleaved.
 *
 *   npx tsx bench/api-checkpoint.ts                                  # sqlite and postgres, 3 rounds of 10 s
 *   npx tsx bench/api-checkpoint.ts --dialects sqlite --rounds 5 --duration 10 --connections 32
 *   npx tsx bench/api-checkpoint.ts --spec spec/seed-openapi.yaml --no-prism     # Prism mocks this document
 *   git worktree add /tmp/before HEAD~1 && ln -s $PWD/node_modules /tmp/before/ &&
 *     npx tsx bench/api-checkpoint.ts --compare /tmp/before    # + that checkout's server, same database
 *
 * Needs PostgreSQL at OPENTUNE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
 * for the postgres rows, and npx access to @stoplight/prism-cli@5.14.2 (5.14.2: newer needs Node 24).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import Fastify from 'fastify'
import pg from 'pg'

const ROOT = resolve(import.meta.dirname, '..')
const cliOf = (root: string) => ['--import', 'tsx', join(root, 'src', 'cli.ts')]
const CLI = cliOf(ROOT)
const POSTGRES_URL = process.env.OPENTUNE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const PRISM = '@stoplight/prism-cli@5.14.2'
const CLOCK_TICKS = 100 // getconf CLK_TCK, for /proc/<pid>/stat

const { values: args } = parseArgs({
  options: {
    dialects: { type: 'string', default: 'sqlite,postgres' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    spec: { type: 'string', default: resolve(ROOT, 'spec', 'seed-openapi.yaml') },
    'no-prism': { type: 'boolean', default: false },
    compare: { type: 'string' }, // another checkout of opentune, served as one more target
    'bare-server': { type: 'string' }, // internal: run the bare route on this port, body from --body
    body: { type: 'string' },
  },
})

// ---- (a) the bare route, in a process of its own like the others ------------------------------
if (args['bare-server'] !== undefined) {
  const body = readFileSync(String(args.body), 'utf8')
  const app = Fastify({ logger: false })
  app.get('/v1/fine_tuning/jobs/:job_id/checkpoints/:checkpoint_id', async (_request, reply) =>
    await reply.type('application/json; charset=utf-8').send(body))
  await app.listen({ host: '127.0.0.1', port: Number(args['bare-server']) })
} else {
  await main()
}

interface Target { name: string, url: string, pid?: number | undefined }
interface Sample { rps: number, p50: number, p99: number, errors: number, cpuUs: number | null }

async function main (): Promise<void> {
  const rounds = Number(args.rounds)
  const duration = Number(args.duration)
  const connections = Number(args.connections)
  const work = mkdtempSync(join(tmpdir(), 'opentune-bench-'))
  const children: ChildProcess[] = []
  const cleanups: Array<() => Promise<void>> = []
  const stop = () => { for (const c of children) kill(c) }
  process.on('SIGINT', () => { stop(); process.exit(130) })
  console.log(`# API: checkpoint GET — node ${process.version}, ${rounds} rounds × ${duration} s, ${connections} connections`)
  try {
    for (const dialect of String(args.dialects).split(',')) {
      const schema = `bench_${randomBytes(4).toString('hex')}`
      const dataDir = join(work, dialect)
      const env: Record<string, string> = {
        OPENTUNE_DATA_DIR: dataDir,
        OPENTUNE_RUNNER: '0',
        ...(dialect === 'postgres' ? { OPENTUNE_DATABASE_URL: POSTGRES_URL, OPENTUNE_DATABASE_SCHEMA: schema } : {}),
      }
      if (dialect === 'postgres') cleanups.push(async () => { await dropSchema(schema) })
      const key = (await run(process.execPath, [...CLI, 'keys', 'create', '--project', 'bench'], env)).trim().split('\n').at(-1) ?? ''

      const port = await freePort()
      const log = openSync(join(work, `${dialect}-server.log`), 'a')
      children.push(spawn(process.execPath, [...CLI, 'serve'], { cwd: ROOT, env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', log, log] }))
      const ours = `http://127.0.0.1:${port}`
      await waitUp(`${ours}/health`)
      const path = await seedCheckpoint(ours, key, env)
      const sample = await (await fetch(`${ours}${path}`, { headers: { authorization: `Bearer ${key}` } })).text()

      const targets: Target[] = [{ name: `opentune (${dialect})`, url: `${ours}${path}`, pid: children[0]?.pid }]
      if (args.compare !== undefined) {
        // The other checkout serves the same database (SQLite WAL / the same schema) on its own port.
        const port = await freePort()
        children.push(spawn(process.execPath, [...cliOf(resolve(args.compare)), 'serve'], { cwd: resolve(args.compare), env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', log, log] }))
        await waitUp(`http://127.0.0.1:${port}/health`)
        targets.push({ name: `${args.compare} (${dialect})`, url: `http://127.0.0.1:${port}${path}`, pid: children.at(-1)?.pid })
      }
      const bodyFile = join(work, 'checkpoint.json')
      writeFileSync(bodyFile, sample)
      const barePort = await freePort()
      children.push(spawn(process.execPath, ['--import', 'tsx', import.meta.filename, '--bare-server', String(barePort), '--body', bodyFile], { cwd: ROOT, stdio: 'inherit' }))
      targets.push({ name: 'bare Fastify route', url: `http://127.0.0.1:${barePort}${path}`, pid: children.at(-1)?.pid })
      if (!args['no-prism']) {
        const prismPort = await freePort()
        children.push(spawn('npx', ['-y', PRISM, 'mock', '-p', String(prismPort), '-h', '127.0.0.1', String(args.spec)], { stdio: ['ignore', 'ignore', 'inherit'], detached: true }))
        targets.push({ name: 'Prism mock (seed spec)', url: `http://127.0.0.1:${prismPort}${path}` })
      }
      for (const t of targets.slice(1)) await waitUp(t.url, { authorization: `Bearer ${key}` }, 120_000)

      const headers = { authorization: `Bearer ${key}` }
      for (const t of targets) await load(t, headers, connections, Number(args.warmup))
      const samples = new Map<string, Sample[]>(targets.map(t => [t.name, []]))
      for (let r = 0; r < rounds; r++) {
        // Interleaved and rotated, so drift (thermal, other tenants) spreads over all targets.
        for (let i = 0; i < targets.length; i++) {
          const t = targets[(i + r) % targets.length] as Target
          const s = await load(t, headers, connections, duration)
          samples.get(t.name)?.push(s)
          console.error(`  round ${r + 1} ${t.name}: ${Math.round(s.rps)} req/s p50 ${s.p50} ms p99 ${s.p99} ms` +
            `${s.cpuUs === null ? '' : ` ${s.cpuUs.toFixed(1)} CPU-µs/req`}${s.errors ? ` ERRORS ${s.errors}` : ''}`)
        }
      }
      report(targets, samples)
      while (children.length > 0) kill(children.pop() as ChildProcess)
    }
  } finally {
    stop()
    for (const c of cleanups) await c().catch(() => {})
    rmSync(work, { recursive: true, force: true })
  }
}

/** A job with one checkpoint carrying every metric and two result files, as training leaves it. */
async function seedCheckpoint (base: string, key: string, env: Record<string, string>): Promise<string> {
  const headers = { authorization: `Bearer ${key}` }
  const form = new FormData()
  form.set('purpose', 'fine-tune')
  form.set('file', new Blob(['{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n']), 'train.jsonl')
  const file = await (await fetch(`${base}/v1/files`, { method: 'POST', headers, body: form })).json() as { id: string }
  const job = await (await fetch(`${base}/v1/fine_tuning/jobs`, {
    method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: file.id, suffix: 'bench' }),
  })).json() as { id: string }
  // Written through the store, as the runner does, from this process (SQLite WAL / PostgreSQL).
  const { loadConfig } = await import('../src/config.js')
  const { openStore } = await import('../src/db/connect.js')
  const { insertCheckpoint } = await import('../src/fine-tuning/checkpoints.store.js')
  const store = await openStore(loadConfig({ ...env, LOG_LEVEL: 'silent' }))
  try {
    const ckpt = await insertCheckpoint(store.db, {
      jobId: job.id,
      stepNumber: 88,
      fineTunedModelCheckpoint: `ft:opentune/tiny-llama:bench:bench:${job.id}:ckpt-step-88`,
      metrics: {
        step: 88,
        train_loss: 0.478,
        train_mean_token_accuracy: 0.924,
        valid_loss: 0.512,
        valid_mean_token_accuracy: 0.9,
        full_valid_loss: 0.567,
        full_valid_mean_token_accuracy: 0.894,
      },
      resultFiles: [`file-${randomUUID()}`, `file-${randomUUID()}`],
    })
    return `/v1/fine_tuning/jobs/${job.id}/checkpoints/${ckpt.id}`
  } finally {
    await store.close()
  }
}

async function load (
  target: Target,
  headers: Record<string, string>,
  connections: number,
  duration: number
): Promise<Sample> {
  const cpuBefore = cpuTicks(target.pid)
  const result = await autocannon({ url: target.url, connections, duration, headers })
  const cpuAfter = cpuTicks(target.pid)
  const cpuUs = cpuBefore === null || cpuAfter === null
    ? null
    : (cpuAfter - cpuBefore) * 1e6 / CLOCK_TICKS / result.requests.total
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx + result.timeouts,
    cpuUs,
  }
}

// The server's own CPU time (user + system, /proc/<pid>/stat) per request: steadier than req/s on
// a machine shared with other work, which steals time from the server and load generator alike.
function cpuTicks (pid: number | undefined): number | null {
  if (pid === undefined) return null
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return null
  }
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

function report (targets: Target[], samples: Map<string, Sample[]>): void {
  const bare = median(samples.get('bare Fastify route')?.map(s => s.rps) ?? [])
  console.log('\n| target | req/s (median) | rounds | p50 ms | p99 ms | × bare | server CPU µs/req | errors |')
  console.log('|---|---:|---|---:|---:|---:|---:|---:|')
  for (const t of targets) {
    const s = samples.get(t.name) ?? []
    const rps = median(s.map(x => x.rps))
    const cpu = s.every(x => x.cpuUs !== null) ? median(s.map(x => x.cpuUs as number)).toFixed(1) : '–'
    console.log(`| ${t.name} | ${Math.round(rps)} | ${s.map(x => Math.round(x.rps)).join(' / ')} | ${median(s.map(x => x.p50))} | ${median(s.map(x => x.p99))} | ${(rps / bare).toFixed(2)} | ${cpu} | ${s.reduce((n, x) => n + x.errors, 0)} |`)
  }
}

async function run (cmd: string, argv: string[], env: Record<string, string>): Promise<string> {
  const child = spawn(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  if (code !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${code}`)
  return out
}

async function waitUp (url: string, headers: Record<string, string> = {}, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const ok = await fetch(url, { headers }).then(r => r.status < 500, () => false)
    if (ok) return
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  throw new Error(`${url} did not come up`)
}

async function freePort (): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise(resolve => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => { resolve(typeof a === 'object' && a ? a.port : 0) })
    })
  })
}

function kill (child: ChildProcess): void {
  if (child.exitCode !== null || child.pid === undefined) return
  // Prism runs under npx: its process group goes with it.
  try { process.kill(-child.pid, 'SIGTERM') } catch { child.kill('SIGTERM') }
}

async function dropSchema (schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL })
  await client.connect()
  try { await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`) } finally { await client.end() }
}

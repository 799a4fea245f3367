// Stand-ins for the two trackers, as HTTP servers inside the test: the part of each service's API
// that opentune calls (src/trackers/). W&B: GraphQL `upsertBucket` at /graphql and the run's
// file_stream (history lines placed at their offset, summary, {complete, exitcode}), Basic
// `api:<key>`. MLflow REST API 2.0: experiments/get-by-name|create, runs/create, runs/get, runs/log-batch,
// runs/update, Basic auth, over HTTPS with its own certificate when one is given.
// mode 'error' answers every request 500; 'hang' never answers (the requests stay open).
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'

export type Mode = 'ok' | 'error' | 'hang'

interface Standin {
  url: string
  requests: number
  open: number // requests received and not answered (mode 'hang')
  auth: Set<string> // Authorization headers seen
  close: () => Promise<void>
}

type Handler = (path: string, body: any, url: URL) => { status: number, json: unknown }

async function serve (mode: Mode, handle: Handler, tls?: { key: string, cert: string }): Promise<Standin> {
  const hanging = new Set<http.ServerResponse>()
  const s: Standin = { url: '', requests: 0, open: 0, auth: new Set(), close: async () => {} }
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      s.requests++
      if (req.headers.authorization) s.auth.add(req.headers.authorization)
      if (mode === 'hang') {
        s.open++
        hanging.add(res)
        res.on('close', () => { s.open--; hanging.delete(res) })
        return
      }
      const reply = (status: number, json: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json))
      }
      if (mode === 'error') return reply(500, { message: 'stand-in failure' })
      const text = Buffer.concat(chunks).toString('utf8')
      const url = new URL(req.url ?? '/', 'http://x')
      const { status, json } = handle(url.pathname, text ? JSON.parse(text) : {}, url)
      reply(status, json)
    })
  }
  const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  s.url = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`
  s.close = async () => {
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  }
  return s
}

export interface WandbRun {
  name: string
  project: string
  entity: string
  displayName: string | null
  tags: string[]
  config: Record<string, { value: unknown }>
  upserts: number
  history: Array<Record<string, number>> // by line offset
  summary: Record<string, number>
  exitcode: number | null
}

export async function startWandb (key: string, mode: Mode = 'ok') {
  const runs = new Map<string, WandbRun>() // by entity/project/name
  const expected = `Basic ${Buffer.from(`api:${key}`).toString('base64')}`
  const standin = await serve(mode, (path, body) => {
    if ([...standin.auth].some(a => a !== expected)) return { status: 401, json: { errors: [{ message: 'bad key' }] } }
    if (path === '/graphql') {
      const v = body.variables as Record<string, any>
      if (!String(body.query).includes('upsertBucket')) return { status: 400, json: { errors: [{ message: 'unknown query' }] } }
      const entity = (v.entity as string | null) ?? 'default-entity'
      const id = `${entity}/${v.project}/${v.name}`
      const run = runs.get(id) ?? {
        name: v.name,
        project: v.project,
        entity,
        displayName: null,
        tags: [],
        config: {},
        upserts: 0,
        history: [],
        summary: {},
        exitcode: null,
      }
      Object.assign(run, { displayName: v.displayName, tags: v.tags, config: JSON.parse(v.config) })
      run.upserts++
      runs.set(id, run)
      const project = { id: 'p1', name: v.project, entity: { id: 'e1', name: entity } }
      const bucket = { id: 'b1', name: v.name, displayName: v.displayName, project }
      return { status: 200, json: { data: { upsertBucket: { bucket, inserted: run.upserts === 1 } } } }
    }
    const m = /^\/files\/([^/]+)\/([^/]+)\/([^/]+)\/file_stream$/.exec(path)
    const run = m && runs.get(m.slice(1, 4).map(decodeURIComponent).join('/'))
    if (!run) return { status: 404, json: { error: 'no such run' } }
    const history = body.files?.['wandb-history.jsonl'] as { offset: number, content: string[] } | undefined
    history?.content.forEach((line, i) => { run.history[history.offset + i] = JSON.parse(line) })
    const summary = body.files?.['wandb-summary.json'] as { content: string[] } | undefined
    if (summary) run.summary = JSON.parse(summary.content[0] ?? '{}')
    if (body.complete === true) run.exitcode = body.exitcode
    return { status: 200, json: { exitcode: null, limits: {} } }
  })
  return Object.assign(standin, { runs })
}

export interface MlflowRun {
  run_id: string
  experiment_id: string
  run_name: string
  tags: Record<string, string>
  params: Record<string, string>
  metrics: Array<{ key: string, value: number, step: number, timestamp: number }>
  status: string
  end_time: number | null
}

export async function startMlflow (
  user: { username: string, password: string },
  opts: { mode?: Mode, tls?: { key: string, cert: string } } = {}
) {
  const experiments = new Map<string, string>() // name → id
  const runs = new Map<string, MlflowRun>()
  const expected = `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}`
  const api = '/api/2.0/mlflow'
  const standin = await serve(opts.mode ?? 'ok', (path, body, url) => {
    if ([...standin.auth].some(a => a !== expected) || standin.auth.size === 0) {
      return { status: 401, json: { error_code: 'UNAUTHENTICATED', message: 'credentials needed' } }
    }
    if (path === `${api}/experiments/get-by-name`) {
      const id = experiments.get(url.searchParams.get('experiment_name') ?? '')
      if (!id) return { status: 404, json: { error_code: 'RESOURCE_DOES_NOT_EXIST', message: 'no experiment' } }
      return { status: 200, json: { experiment: { experiment_id: id, name: url.searchParams.get('experiment_name') } } }
    }
    if (path === `${api}/experiments/create`) {
      if (experiments.has(body.name)) return { status: 400, json: { error_code: 'RESOURCE_ALREADY_EXISTS', message: 'exists' } }
      experiments.set(body.name, String(experiments.size + 1))
      return { status: 200, json: { experiment_id: experiments.get(body.name) } }
    }
    if (path === `${api}/runs/create`) {
      const id = `run${runs.size + 1}`
      const tags = Object.fromEntries((body.tags as Array<{ key: string, value: string }>).map(t => [t.key, t.value]))
      runs.set(id, { run_id: id, experiment_id: body.experiment_id, run_name: body.run_name, tags, params: {}, metrics: [], status: 'RUNNING', end_time: null })
      return { status: 200, json: { run: { info: { run_id: id, run_name: body.run_name, status: 'RUNNING' }, data: {} } } }
    }
    const run = runs.get(body.run_id ?? url.searchParams.get('run_id'))
    if (path === `${api}/runs/get` && run) {
      const latest = new Map<string, MlflowRun['metrics'][number]>()
      for (const m of run.metrics) if ((latest.get(m.key)?.step ?? -1) <= m.step) latest.set(m.key, m)
      const info = { run_id: run.run_id, status: run.status }
      return { status: 200, json: { run: { info, data: { metrics: [...latest.values()] } } } }
    }
    if (!run) return { status: 404, json: { error_code: 'RESOURCE_DOES_NOT_EXIST', message: 'no run' } }
    if (path === `${api}/runs/log-batch`) {
      if ((body.metrics?.length ?? 0) > 1000) return { status: 400, json: { error_code: 'INVALID_PARAMETER_VALUE', message: 'too many' } }
      run.metrics.push(...(body.metrics ?? []))
      for (const p of body.params ?? []) run.params[p.key] = p.value
      return { status: 200, json: {} }
    }
    if (path === `${api}/runs/update`) {
      Object.assign(run, { status: body.status, end_time: body.end_time })
      return { status: 200, json: { run_info: { run_id: run.run_id, status: run.status } } }
    }
    return { status: 404, json: { error_code: 'ENDPOINT_NOT_FOUND', message: path } }
  }, opts.tls)
  return Object.assign(standin, { experiments, runs })
}

/** One metric of an MLflow run by step, e.g. train_loss: [[1, 2.3], [2, 2.1], …]. */
export const series = (run: MlflowRun, key: string) =>
  run.metrics.filter(m => m.key === key).map(m => [m.step, m.value] as const)

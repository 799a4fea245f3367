// An MLflow run through MLflow's REST API 2.0 (mlflow.org/docs/latest/rest-api.html): the
// experiment by name (created if missing), runs/create, runs/log-batch (metrics with step and
// timestamp; at most 1000 metrics a request), runs/update (FINISHED | FAILED | KILLED, end_time);
// runs/get when a resumed job continues its run.
// Basic auth when a username is given; a CA certificate (PEM) given goes to the HTTPS agent as `ca`.
import type http from 'node:http'
import { basicAuth, makeAgent, requestJson, TrackerError } from './http.js'
import type { FinalStatus, StepPoint, Tracker } from './tracker.js'
import type { RunFacts } from './wandb.js'

export interface MlflowConfig {
  tracking_uri: string
  experiment_name: string | null
  run_name: string | null
  username?: string
  password?: string
  tags?: Record<string, string>
}

const STATUS: Record<FinalStatus, string> = { succeeded: 'FINISHED', failed: 'FAILED', cancelled: 'KILLED' }
const MAX_METRICS = 1000 // per log-batch request (MLflow's limit)
const MAX_PARAMS = 100 // likewise
const DEFAULT_EXPERIMENT = '0' // MLflow's "Default" experiment

export function mlflowTracker (
  cfg: MlflowConfig,
  run: RunFacts,
  opts: { timeoutMs: number, ca: () => Promise<string | null> }
): Tracker {
  const base = `${cfg.tracking_uri.replace(/\/+$/, '')}/api/2.0/mlflow`
  const headers: Record<string, string> = cfg.username
    ? { authorization: basicAuth(cfg.username, cfg.password ?? '') }
    : {}
  let agent: http.Agent | null = null
  const call = async (method: 'GET' | 'POST', path: string, json: unknown, signal: AbortSignal) => {
    if (!/^https?:\/\//.test(base)) throw new TrackerError('tracking_uri must be an http:// or https:// URL', false)
    agent ??= makeAgent(base, await opts.ca())
    const r = { method, url: base + path, headers, json, timeoutMs: opts.timeoutMs, signal, agent }
    return (await requestJson(r)).body
  }
  const tracker: Tracker = {
    kind: 'mlflow',
    label: `MLflow run ${cfg.run_name ?? run.jobId} at ${cfg.tracking_uri}`,
    // every step carries up to 11 metrics (train, validation, learning rate, tokens, …)
    maxBatch: Math.floor(MAX_METRICS / 12),
    secrets: [cfg.password ?? '', headers.authorization?.slice('Basic '.length) ?? ''],
    async open (state, signal) {
      const named = (id: string) => `MLflow run ${id} (${cfg.run_name ?? run.jobId}) at ${cfg.tracking_uri}`
      if (state.runId !== null) { // a run a previous attempt created: it goes on
        tracker.label = named(state.runId)
        // a batch that arrived as the last attempt was cut off is in the run, though never acknowledged:
        // the run's latest metrics (runs/get) say up to which step, so it is not logged twice
        const body = await call('GET', `/runs/get?run_id=${encodeURIComponent(state.runId)}`, undefined, signal)
        const latest = (body.run as { data?: { metrics?: Array<{ step?: unknown }> } } | undefined)?.data?.metrics ?? []
        state.lastStep = Math.max(state.lastStep, ...latest.map(m => Number(m.step)).filter(Number.isFinite))
        return
      }
      const name = cfg.experiment_name
      const experimentId = name === null ? DEFAULT_EXPERIMENT : await experiment(name, signal)
      const tags = { ...cfg.tags, 'opentune.job_id': run.jobId, 'opentune.base_model': run.model }
      const body = await call('POST', '/runs/create', {
        experiment_id: experimentId,
        run_name: cfg.run_name ?? run.jobId,
        start_time: Date.now(),
        tags: Object.entries(tags).map(([key, value]) => ({ key, value })),
      }, signal)
      const runId = (body.run as { info?: { run_id?: unknown } } | undefined)?.info?.run_id
      if (typeof runId !== 'string' || !runId) throw new TrackerError('MLflow answered runs/create without a run_id', false)
      state.runId = runId
      tracker.label = named(runId)
      const params = Object.entries(run.config).slice(0, MAX_PARAMS)
        .map(([key, value]) => ({ key, value: typeof value === 'string' ? value : JSON.stringify(value) }))
      await call('POST', '/runs/log-batch', { run_id: runId, params }, signal)
    },
    async send (points: StepPoint[], state, signal) {
      const metrics = points.flatMap(p => Object.entries(p.values)
        .map(([key, value]) => ({ key, value, timestamp: Math.round(p.timestampMs), step: p.step })))
      await call('POST', '/runs/log-batch', { run_id: state.runId, metrics }, signal)
      state.lastStep = points.at(-1)?.step ?? state.lastStep
    },
    async finish (status, state, signal) {
      await call('POST', '/runs/update', { run_id: state.runId, status: STATUS[status], end_time: Date.now() }, signal)
    },
    close () { agent?.destroy() },
  }

  async function experiment (name: string, signal: AbortSignal): Promise<string> {
    const byName = async () => {
      try {
        const body = await call('GET', `/experiments/get-by-name?experiment_name=${encodeURIComponent(name)}`, undefined, signal)
        return String((body.experiment as { experiment_id?: unknown } | undefined)?.experiment_id ?? '') || null
      } catch (err) {
        if (err instanceof TrackerError && err.status === 404) return null // RESOURCE_DOES_NOT_EXIST
        throw err
      }
    }
    const found = await byName()
    if (found) return found
    try {
      const body = await call('POST', '/experiments/create', { name }, signal)
      if (typeof body.experiment_id === 'string') return body.experiment_id
    } catch (err) {
      // created meanwhile by another job (RESOURCE_ALREADY_EXISTS): read it again
      if (!(err instanceof TrackerError && err.status === 400)) throw err
    }
    const again = await byName()
    if (!again) throw new TrackerError(`MLflow: could not find or create experiment '${name}'`, false)
    return again
  }
  return tracker
}

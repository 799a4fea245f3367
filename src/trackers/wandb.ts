// A W&B run through the HTTP API that W&B's own clients speak (the Node SDK @wandb/sdk 0.5.1's
// internal/api.ts and filestream.ts, and the Python client): the GraphQL mutation `upsertBucket` at
// <base>/graphql creates the run — or, given the same name again, continues it — and
// POST <base>/files/<entity>/<project>/<run>/file_stream appends history lines at an offset and
// ends the run with {complete, exitcode}. Basic auth `api:<key>`. The SDK itself is not used: it
// keeps one run per process in a global and handles SIGINT/SIGTERM itself (exiting on SIGINT),
// which a service running several jobs cannot have.
import type http from 'node:http'
import { basicAuth, makeAgent, requestJson, TrackerError } from './http.js'
import type { FinalStatus, StepPoint, Tracker } from './tracker.js'
import type { RunState } from './tracker-runs.store.js'

export interface WandbConfig {
  project: string
  api_key: string
  name?: string | null
  entity?: string | null
  tags?: string[]
}

export interface RunFacts {
  jobId: string
  model: string
  config: Record<string, unknown> // the run's config: hyperparameters, files, model
  createdAtMs: number // the origin of W&B's _runtime
}

const UPSERT_BUCKET = `mutation UpsertBucket($name: String, $project: String, $entity: String, $displayName: String,
  $config: JSONString, $tags: [String!], $jobType: String) {
  upsertBucket(input: {name: $name, modelName: $project, entityName: $entity, displayName: $displayName,
    config: $config, tags: $tags, jobType: $jobType}) {
    bucket { id name displayName project { id name entity { id name } } }
    inserted
  }
}`

const MAX_TAG = 64 // W&B's limit on a tag's length

export function wandbTracker (
  cfg: WandbConfig,
  run: RunFacts & { defaultRunId: string },
  opts: { baseUrl: string, timeoutMs: number }
): Tracker {
  const auth = { authorization: basicAuth('api', cfg.api_key) }
  let agent: http.Agent | null = null
  let entity = cfg.entity ?? ''
  let summary: Record<string, number> = {}
  const post = async (path: string, json: unknown, signal: AbortSignal) => {
    agent ??= makeAgent(opts.baseUrl, null)
    const url = opts.baseUrl + path
    return await requestJson({ method: 'POST', url, headers: auth, json, timeoutMs: opts.timeoutMs, signal, agent })
  }
  const streamPath = (s: RunState) =>
    `/files/${[entity, cfg.project, s.runId ?? ''].map(encodeURIComponent).join('/')}/file_stream`
  // OpenAI's integration tags its runs openai/finetune, openai/<base model>, openai/<job id>
  const ours = ['opentune/finetune', `opentune/${run.model}`, `opentune/${run.jobId}`].filter(t => t.length <= MAX_TAG)
  const tracker: Tracker = {
    kind: 'wandb',
    label: `W&B run ${cfg.entity ? `${cfg.entity}/` : ''}${cfg.project}/${run.defaultRunId}`,
    maxBatch: 1000,
    secrets: [cfg.api_key, auth.authorization.slice('Basic '.length)],
    async open (state, signal) {
      state.runId ??= run.defaultRunId
      const config = Object.fromEntries(Object.entries(run.config).map(([k, v]) => [k, { desc: null, value: v }]))
      const variables = {
        name: state.runId,
        project: cfg.project,
        entity: cfg.entity ?? null,
        displayName: cfg.name ?? run.jobId, // OpenAI's default name too
        config: JSON.stringify(config),
        tags: [...new Set([...(cfg.tags ?? []), ...ours])],
        jobType: 'fine-tune',
      }
      const { body } = await post('/graphql', { query: UPSERT_BUCKET, variables }, signal)
      const errors = body.errors as Array<{ message?: unknown }> | undefined
      if (Array.isArray(errors) && errors.length > 0) throw new TrackerError(`W&B: ${String(errors[0]?.message ?? 'GraphQL error').slice(0, 200)}`, false)
      type Answer = { upsertBucket?: { bucket?: { project?: { entity?: { name?: unknown } } } } } | undefined
      const bucket = (body.data as Answer)?.upsertBucket?.bucket
      const named = bucket?.project?.entity?.name
      if (typeof named === 'string' && named) entity = named
      if (!bucket || !entity) throw new TrackerError('W&B answered upsertBucket without the run\'s entity', false)
      tracker.label = `W&B run ${entity}/${cfg.project}/${state.runId}`
    },
    async send (points: StepPoint[], state, signal) {
      const content = points.map(p => JSON.stringify({
        ...p.values,
        _step: p.step,
        _timestamp: p.timestampMs / 1000,
        _runtime: Math.max(0, (p.timestampMs - run.createdAtMs) / 1000),
      }))
      const next = Object.assign({}, summary, ...points.map(p => p.values)) as Record<string, number>
      await post(streamPath(state), {
        files: {
          'wandb-history.jsonl': { offset: state.lines, content },
          'wandb-summary.json': { offset: 0, content: [JSON.stringify(next)] },
        },
      }, signal)
      summary = next
      state.lines += content.length
      state.lastStep = points.at(-1)?.step ?? state.lastStep
    },
    async finish (status: FinalStatus, state, signal) {
      // exit code 0: W&B shows the run finished; any other: failed (a cancelled job included)
      await post(streamPath(state), { complete: true, exitcode: status === 'succeeded' ? 0 : 1 }, signal)
    },
    close () { agent?.destroy() },
  }
  return tracker
}

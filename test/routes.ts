// Every /v1 route once, with what it reads from the client: the table-driven tests over the routes
// (test/contract/unstorable-text.test.ts, project-query.test.ts) walk it, so a new route — or a new
// query parameter, or a new string field in a job's body — is covered by adding it here.
import { insertCheckpoint } from '../src/fine-tuning/checkpoints.store.js'
import { createJob, type TestEnv, uploadFile } from './helper.js'

/** Real ids of the test project: a route's valid inputs. */
export interface Fixtures {
  file_id: string
  job_id: string
  checkpoint_id: string
  event_id: string
  /** a base model in the catalogue */
  model: string
  /** the checkpoint's model name: `model` on a job create looks it up in the store */
  checkpoint_model: string
}

export type Method = 'GET' | 'POST' | 'DELETE'

export interface Route {
  /** how a test names the route: `METHOD path` unless two rows share that */
  name?: string
  method: Method
  /** `:name` for each path parameter, filled from Fixtures (`:model` may hold a '/') */
  path: string
  /** the route's own query parameters, with a valid value each (every /v1 route takes ai_project_id too) */
  query?: Record<string, (f: Fixtures) => string>
  /** a valid multipart upload (`upload`) or JSON body */
  body?: 'upload' | ((f: Fixtures) => Record<string, unknown>)
}

/** A job create with every string field the request schema has (each one, and each object's keys,
 *  is a place user text reaches the store). */
const jobBody = (model: (f: Fixtures) => string) => (f: Fixtures): Record<string, unknown> => ({
  model: model(f),
  training_file: f.file_id,
  validation_file: f.file_id,
  suffix: 'my-suffix',
  tags: ['a-tag'],
  hyperparameters: { n_epochs: 1 },
  integrations: [{
    type: 'wandb',
    wandb: { project: 'proj', api_key: 'secret', name: 'run', entity: 'me', tags: ['w'] },
  }],
  extra_body: { note: 'text' },
})

export const ROUTES: Route[] = [
  { method: 'POST', path: '/v1/files', body: 'upload' },
  {
    method: 'GET',
    path: '/v1/files',
    query: { after: f => f.file_id, purpose: () => 'fine-tune', order: () => 'asc', limit: () => '5' },
  },
  { method: 'GET', path: '/v1/files/:file_id' },
  { method: 'GET', path: '/v1/files/:file_id/content' },
  { method: 'DELETE', path: '/v1/files/:file_id' },
  { method: 'POST', path: '/v1/fine_tuning/jobs', body: jobBody(f => f.model) },
  {
    name: 'POST /v1/fine_tuning/jobs from a checkpoint',
    method: 'POST',
    path: '/v1/fine_tuning/jobs',
    body: jobBody(f => f.checkpoint_model),
  },
  { method: 'GET', path: '/v1/fine_tuning/jobs', query: { after: f => f.job_id, limit: () => '5' } },
  { method: 'GET', path: '/v1/fine_tuning/jobs/:job_id' },
  { method: 'POST', path: '/v1/fine_tuning/jobs/:job_id/cancel' },
  { method: 'GET', path: '/v1/fine_tuning/jobs/:job_id/events', query: { after: f => f.event_id, limit: () => '5' } },
  {
    method: 'GET',
    path: '/v1/fine_tuning/jobs/:job_id/checkpoints',
    query: { after: f => f.checkpoint_id, limit: () => '5' },
  },
  { method: 'GET', path: '/v1/fine_tuning/jobs/:job_id/checkpoints/:checkpoint_id' },
  { method: 'GET', path: '/v1/models' },
  { method: 'GET', path: '/v1/models/:model' },
]

/** A file, a job (left validating: no runner), one of its events and a checkpoint row of it. */
export async function makeFixtures (env: TestEnv): Promise<Fixtures> {
  const fileId = await uploadFile(env)
  const job = await createJob(env, { training_file: fileId })
  if (job.statusCode !== 200) throw new Error(`job create failed: ${job.body}`)
  const jobId = job.json().id as string
  const checkpointModel = `ft:opentune/tiny-llama:main:s:${jobId}:ckpt-step-1`
  const checkpoint = await insertCheckpoint(env.ctx.db, {
    jobId, stepNumber: 1, fineTunedModelCheckpoint: checkpointModel, metrics: {}, resultFiles: [],
  })
  const events = await env.app.inject({ url: `/v1/fine_tuning/jobs/${jobId}/events`, headers: env.auth() })
  return {
    file_id: fileId,
    job_id: jobId,
    checkpoint_id: checkpoint.id,
    event_id: events.json().data[0].id as string,
    model: 'opentune/tiny-llama',
    checkpoint_model: checkpointModel,
  }
}

/** A path parameter as a URL carries it: encoded, but a model id keeps its '/'. */
export const encodeSegment = (value: string) => encodeURIComponent(value).replace(/%2F/g, '/')

/** The route's URL with every path parameter filled; `fill` may replace one of them. */
type Fill = (name: string, value: string) => string

export function routeUrl (route: Route, f: Fixtures, fill: Fill = (_n, v) => encodeSegment(v)): string {
  return route.path.replace(/:(\w+)/g, (_m, name: string) => fill(name, f[name as keyof Fixtures]))
}

export const routeName = (route: Route) => route.name ?? `${route.method} ${route.path}`

export const pathParams = (route: Route): string[] => [...route.path.matchAll(/:(\w+)/g)].map(m => m[1] ?? '')

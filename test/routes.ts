// Every /v1 and /v0 route once, with what it reads from the client: the table-driven tests over the routes
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
  /** `<job_id>:<checkpoint_id>` of the checkpoint: a deployment's source */
  deployment_source: string
  /** the full name of a deployment of the checkpoint (/v0/models), done validating */
  deployment: string
  /** a webhook endpoint of the test project */
  webhook_id: string
  /** a delivery to it: the event of a second job, cancelled */
  delivery_id: string
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
  { method: 'POST', path: '/v1/files/:file_id/check', body: f => ({ model: f.model, batch_size: 2 }) },
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
  {
    method: 'GET',
    path: '/v1/fine_tuning/jobs/:job_id/metrics',
    query: { after_step: () => '10', limit: () => '5', max_points: () => '50' },
  },
  { method: 'GET', path: '/v1/models' },
  { method: 'GET', path: '/v1/models/:model' },
  {
    method: 'POST',
    path: '/v0/models',
    // 64 characters, the most a name may have: a character put in it makes it too long (422) however
    // storable, so its cases agree; the other fields' cases get through to the store
    body: f => ({ name: 'n'.repeat(64), base_model: f.model, source: f.deployment_source, description: 'text' }),
  },
  { method: 'GET', path: '/v0/models' },
  { method: 'GET', path: '/v0/models/:deployment' },
  { method: 'DELETE', path: '/v0/models/:deployment' },
  {
    method: 'POST',
    path: '/v1/webhooks',
    // the middle of the URL is in its path, where any character is percent-encoded: one put in its host
    // makes it no URL (422 url_parsing) however storable, so its cases agree with an ordinary one's
    body: () => ({
      url: 'https://example.com/hooks/opentune/fine-tuning',
      events: ['fine_tuning.job.failed'],
      description: 'text',
    }),
  },
  { method: 'GET', path: '/v1/webhooks' },
  { method: 'GET', path: '/v1/webhooks/:webhook_id' },
  { method: 'GET', path: '/v1/webhooks/:webhook_id/deliveries', query: { limit: () => '5' } },
  { method: 'POST', path: '/v1/webhooks/:webhook_id/deliveries/:delivery_id/replay' },
  { method: 'DELETE', path: '/v1/webhooks/:webhook_id' },
]

/** A file, a job (left validating: no runner), one of its events and a checkpoint row of it; a
 *  deployment of that checkpoint; a webhook endpoint and the delivery a second job's cancel wrote to it
 *  (pending: no delivery worker runs in the app under test). */
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
  const deploymentSource = `${jobId}:${checkpoint.id}`
  const deployment = await makeDeployment(env, { name: 'fixture', base_model: 'opentune/tiny-llama', source: deploymentSource })
  const { webhookId, deliveryId } = await makeDelivery(env, fileId)
  return {
    file_id: fileId,
    job_id: jobId,
    checkpoint_id: checkpoint.id,
    event_id: events.json().data[0].id as string,
    model: 'opentune/tiny-llama',
    checkpoint_model: checkpointModel,
    deployment_source: deploymentSource,
    deployment,
    webhook_id: webhookId,
    delivery_id: deliveryId,
  }
}

/** An endpoint (at a port nothing listens on) and the delivery of a job cancelled after it was made. */
async function makeDelivery (env: TestEnv, fileId: string): Promise<{ webhookId: string, deliveryId: string }> {
  const endpoint = await env.app.inject({
    method: 'POST', url: '/v1/webhooks', headers: env.auth(), payload: { url: 'http://127.0.0.1:9/fixture' },
  })
  if (endpoint.statusCode !== 200) throw new Error(`webhook create failed: ${endpoint.body}`)
  const webhookId = endpoint.json().id as string
  const job = await createJob(env, { training_file: fileId })
  if (job.statusCode !== 200) throw new Error(`job create failed: ${job.body}`)
  const cancelled = await env.app.inject({
    method: 'POST', url: `/v1/fine_tuning/jobs/${job.json().id as string}/cancel`, headers: env.auth(),
  })
  if (cancelled.json().status !== 'cancelled') throw new Error(`job cancel failed: ${cancelled.body}`)
  const deliveries = await env.app.inject({ url: `/v1/webhooks/${webhookId}/deliveries`, headers: env.auth() })
  const deliveryId = deliveries.json().data[0]?.id as string | undefined
  if (!deliveryId) throw new Error(`no delivery written: ${deliveries.body}`)
  return { webhookId, deliveryId }
}

/** A deployment, once its validation is over (this checkpoint has no result files: it ends in error). */
async function makeDeployment (env: TestEnv, body: Record<string, unknown>): Promise<string> {
  const created = await env.app.inject({ method: 'POST', url: '/v0/models', headers: env.auth(), payload: body })
  if (created.statusCode !== 200) throw new Error(`deployment create failed: ${created.body}`)
  const name = created.json().name as string
  for (let i = 0; i < 500; i++) {
    const res = await env.app.inject({ url: `/v0/models/${encodeURIComponent(name)}`, headers: env.auth() })
    if (res.json().status !== 'validating') return name
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  throw new Error(`deployment ${name} still validating after 10 s`)
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

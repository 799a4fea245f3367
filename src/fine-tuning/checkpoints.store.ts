// Checkpoints: one per epoch, listed oldest first (ascending step_number, i.e. insertion order).
import { LRUCache } from 'lru-cache'
import type { Kysely, Selectable } from 'kysely'
import type { CheckpointTable, Database } from '../db/database.js'
import { compiledQuery } from '../db/compiled-query.js'
import { pageOfJob, type Page, type PageRequest } from '../db/paging.js'
import { newCheckpointId, nowSeconds } from '../ids.js'
import { isSpecDraft, type StoredMethod } from './job-method.js'
import { Metrics, type FineTuningJobCheckpoint } from './jobs.schemas.js'

const METRIC_KEYS = Object.keys(Metrics.properties) as Array<keyof Metrics>
const BODY_CACHE_ENTRIES = 10_000 // ~1 KB each

export type CheckpointRow = Omit<Selectable<CheckpointTable>, 'metrics' | 'result_files'> & { metrics: Metrics, result_files: string[] }

export interface NewCheckpoint {
  id?: string
  jobId: string
  stepNumber: number
  fineTunedModelCheckpoint: string
  metrics: Partial<Metrics>
  resultFiles: string[]
}

const finite = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

/** All seven metric keys are always present; what does not apply is null (DESIGN §1). Other keys
 *  (a drafter's acceptance rates: the spec's Metrics is open) are kept after them when numbers. */
export function completeMetrics (m: Partial<Metrics>): Metrics {
  const out: Record<string, number | null> = {}
  for (const k of METRIC_KEYS) out[k] = finite(m[k])
  for (const [k, v] of Object.entries(m)) if (!(k in out) && finite(v) !== null) out[k] = finite(v)
  return out as Metrics
}

const decodeCheckpoint = (row: Selectable<CheckpointTable>): CheckpointRow =>
  ({ ...row, metrics: JSON.parse(row.metrics) as Metrics, result_files: JSON.parse(row.result_files) as string[] })

export async function insertCheckpoint (db: Kysely<Database>, c: NewCheckpoint): Promise<CheckpointRow> {
  return decodeCheckpoint(await db.insertInto('checkpoints').values({
    id: c.id ?? newCheckpointId(),
    job_id: c.jobId,
    created_at: nowSeconds(),
    step_number: c.stepNumber,
    fine_tuned_model_checkpoint: c.fineTunedModelCheckpoint,
    metrics: JSON.stringify(completeMetrics(c.metrics)),
    result_files: JSON.stringify(c.resultFiles),
  }).returningAll().executeTakeFirstOrThrow())
}

export async function listCheckpoints (db: Kysely<Database>, jobId: string, req: Omit<PageRequest, 'order'>): Promise<Page<CheckpointRow>> {
  const page = await pageOfJob(db, 'checkpoints', jobId, req)
  return { ...page, data: page.data.map(decodeCheckpoint) }
}

/** A trainer resumed after an interruption may report a step again: it is registered once. */
export async function hasCheckpointAtStep (db: Kysely<Database>, jobId: string, step: number): Promise<boolean> {
  const row = await db.selectFrom('checkpoints').select('id').where('job_id', '=', jobId).where('step_number', '=', step).executeTakeFirst()
  return row !== undefined
}

/** Each checkpoint's metrics by step, for the job's metrics CSV. */
export async function checkpointMetrics (db: Kysely<Database>, jobId: string): Promise<Map<number, Metrics>> {
  const rows = await db.selectFrom('checkpoints').select(['step_number', 'metrics']).where('job_id', '=', jobId).execute()
  return new Map(rows.map(r => [r.step_number, JSON.parse(r.metrics) as Metrics]))
}

/** The model name of the job's last checkpoint: it becomes the job's fine_tuned_model. */
export async function lastCheckpointName (db: Kysely<Database>, jobId: string): Promise<string | undefined> {
  const row = await db.selectFrom('checkpoints').select('fine_tuned_model_checkpoint').where('job_id', '=', jobId)
    .orderBy('step_number', 'desc').executeTakeFirst()
  return row?.fine_tuned_model_checkpoint
}

/** The checkpoints of a project's jobs as models (GET /v1/models), oldest first. */
export async function checkpointModels (
  db: Kysely<Database>,
  projectId: string
): Promise<Array<{ name: string, createdAt: number, drafter: boolean }>> {
  const rows = await db.selectFrom('checkpoints')
    .innerJoin('fine_tuning_jobs', 'fine_tuning_jobs.id', 'checkpoints.job_id')
    .select(['checkpoints.fine_tuned_model_checkpoint', 'checkpoints.created_at', 'fine_tuning_jobs.method'])
    .where('fine_tuning_jobs.project_id', '=', projectId)
    .orderBy('checkpoints.seq')
    .execute()
  return rows.map(r => ({
    name: r.fine_tuned_model_checkpoint, createdAt: r.created_at, drafter: isDrafterJob(r.method),
  }))
}

/** A spec-draft job's checkpoints are EAGLE-3 drafters (config.json + model.safetensors): the one
 *  test of "is a drafter checkpoint" is its job's stored method. */
const isDrafterJob = (method: string | null) =>
  isSpecDraft(method === null ? null : JSON.parse(method) as StoredMethod)

/** The project's checkpoint of that model name; a job's fine_tuned_model is its last checkpoint's
 *  name, so one lookup serves both. */
export async function checkpointNamed (
  db: Kysely<Database>,
  projectId: string,
  name: string
): Promise<(CheckpointRow & { drafter: boolean }) | undefined> {
  const row = await db.selectFrom('checkpoints')
    .innerJoin('fine_tuning_jobs', 'fine_tuning_jobs.id', 'checkpoints.job_id')
    .selectAll('checkpoints')
    .select('fine_tuning_jobs.method')
    .where('checkpoints.fine_tuned_model_checkpoint', '=', name)
    .where('fine_tuning_jobs.project_id', '=', projectId)
    .executeTakeFirst()
  if (!row) return undefined
  const { method, ...checkpoint } = row
  return { ...decodeCheckpoint(checkpoint), drafter: isDrafterJob(method) }
}

const checkpointOfProject = compiledQuery((db: Kysely<Database>, arg: (name: 'id' | 'jobId' | 'projectId') => string) =>
  db.selectFrom('checkpoints')
    .innerJoin('fine_tuning_jobs', 'fine_tuning_jobs.id', 'checkpoints.job_id')
    .selectAll('checkpoints')
    .where('checkpoints.id', '=', arg('id'))
    .where('checkpoints.job_id', '=', arg('jobId'))
    .where('fine_tuning_jobs.project_id', '=', arg('projectId')))

/** The checkpoint, only if it belongs to that job of that project: one compiled query on the hot path. */
export async function getCheckpoint (
  db: Kysely<Database>,
  projectId: string,
  jobId: string,
  id: string
): Promise<CheckpointRow | undefined> {
  const row = (await checkpointOfProject(db, { id, jobId, projectId }))[0]
  return row && decodeCheckpoint(row)
}

// A checkpoint row never changes once written, so its API JSON is kept (bounded, keyed by project +
// job + checkpoint: another project's request misses and gets its 404) and a repeated GET — clients
// poll this — skips the database and the serializer (docs/benchmarks.md, "keep each checkpoint's JSON").
const bodyCaches = new WeakMap<Kysely<Database>, LRUCache<string, string>>()
const bodyKey = (projectId: string, jobId: string, id: string) => `${projectId}\n${jobId}\n${id}`

/** The checkpoint's JSON if it was read lately; synchronous, so a hit costs no promise. */
export function cachedCheckpointJson (
  db: Kysely<Database>,
  projectId: string,
  jobId: string,
  id: string
): string | undefined {
  return bodyCaches.get(db)?.get(bodyKey(projectId, jobId, id))
}

/** getCheckpoint as the JSON the API sends, remembered for cachedCheckpointJson. */
export async function checkpointJson (
  db: Kysely<Database>,
  projectId: string,
  jobId: string,
  id: string
): Promise<string | undefined> {
  const row = await getCheckpoint(db, projectId, jobId, id)
  if (!row) return undefined
  const json = JSON.stringify(checkpointRowToApi(row))
  let cache = bodyCaches.get(db)
  if (cache === undefined) bodyCaches.set(db, cache = new LRUCache({ max: BODY_CACHE_ENTRIES }))
  cache.set(bodyKey(projectId, jobId, id), json)
  return json
}

export function checkpointRowToApi (row: CheckpointRow): FineTuningJobCheckpoint {
  return {
    id: row.id,
    object: 'fine_tuning.job.checkpoint',
    created_at: row.created_at,
    fine_tuned_model_checkpoint: row.fine_tuned_model_checkpoint,
    fine_tuning_job_id: row.job_id,
    metrics: row.metrics,
    step_number: row.step_number,
    result_files: row.result_files,
  }
}

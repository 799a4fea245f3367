// GET /v1/fine_tuning/jobs/{job_id}/metrics: every optimizer step's metrics as JSON (docs/metrics.md),
// with the validation metrics of the steps that have a checkpoint. An opentune extension: neither
// Nebius nor OpenAI has it.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { checkpointMetrics } from './checkpoints.store.js'
import { JobParams } from './jobs.schemas.js'
import { getJob } from './jobs.store.js'
import { listStepMetrics, type MetricsRow } from './metrics.store.js'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const num = Nullable(Type.Number())

export const DEFAULT_LIMIT = 1000
export const MAX_LIMIT = 10_000

// Not nullable: with query coercion, [integer, null] would take `0` for null (Ajv coerces 0 to null)
export const MetricsQuery = Type.Object({
  after_step: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_LIMIT, default: DEFAULT_LIMIT })),
  max_points: Type.Optional(Type.Integer({ minimum: 2, maximum: MAX_LIMIT })),
  ai_project_id: Type.Optional(Nullable(Type.String())),
})

const VALID_KEYS = ['valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy'] as const

export const MetricsPoint = Type.Object({
  step: Type.Integer(),
  epoch: num,
  train_loss: num,
  train_mean_token_accuracy: num,
  learning_rate: num,
  grad_norm: num,
  tokens: Nullable(Type.Integer()),
  step_time_s: num,
  tokens_per_second: num,
  valid_loss: num,
  valid_mean_token_accuracy: num,
  full_valid_loss: num,
  full_valid_mean_token_accuracy: num,
  // beyond these, a method's own metrics as the trainer reported them (a drafter's acceptance rates:
  // train_* at every step, valid_* at the checkpoints' steps)
}, { title: 'FineTuningJobMetricsPoint', additionalProperties: num })
export type MetricsPoint = Static<typeof MetricsPoint>

export const MetricsList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(MetricsPoint),
  has_more: Type.Boolean(),
})

type Validation = Record<typeof VALID_KEYS[number], number | null> & { [extra: string]: number | null }

const STANDARD = new Set(Object.keys(MetricsPoint.properties))

function toPoint (row: MetricsRow, valid: Validation | undefined): MetricsPoint {
  const { tokens, step_time_s: seconds, extra, ...fixed } = row
  const rate = tokens !== null && seconds !== null && seconds > 0 ? tokens / seconds : null
  const validExtra = Object.entries(valid ?? {}).filter(([k]) => !STANDARD.has(k) && !(k in extra))
  return {
    ...Object.fromEntries(validExtra),
    ...extra,
    ...fixed,
    tokens,
    step_time_s: seconds,
    tokens_per_second: rate,
    valid_loss: valid?.valid_loss ?? null,
    valid_mean_token_accuracy: valid?.valid_mean_token_accuracy ?? null,
    full_valid_loss: valid?.full_valid_loss ?? null,
    full_valid_mean_token_accuracy: valid?.full_valid_mean_token_accuracy ?? null,
  }
}

const hasValidation = (p: MetricsPoint) => VALID_KEYS.some(k => p[k] !== null)

/**
 * At most `maxPoints` of the points (ascending steps), as docs/metrics.md says: all of them when
 * there are no more than that; otherwise the first, the last and every one with validation values
 * (these are kept even if they alone are more than maxPoints), and of the others k = maxPoints −
 * (those kept) evenly spaced ones: of the n others, the ones at positions ⌊(i + ½)·n/k⌋, i = 0…k−1.
 */
export function downsample<T> (points: T[], maxPoints: number, keep: (p: T) => boolean): T[] {
  if (points.length <= maxPoints) return points
  const kept = new Set<number>([0, points.length - 1])
  points.forEach((p, i) => { if (keep(p)) kept.add(i) })
  const others = points.map((_p, i) => i).filter(i => !kept.has(i))
  const k = Math.max(0, maxPoints - kept.size)
  for (let i = 0; i < k; i++) kept.add(others[Math.floor((i + 0.5) * others.length / k)] as number)
  return [...kept].sort((a, b) => a - b).map(i => points[i] as T)
}

export const metricsRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { db } = ctx

  app.get('/v1/fine_tuning/jobs/:job_id/metrics', {
    schema: {
      summary: 'List a fine-tuning job\'s per-step metrics (opentune extension)',
      params: JobParams,
      querystring: MetricsQuery,
      response: { 200: MetricsList },
    },
  }, async (request) => {
    const job = await getJob(db, request.projectId, request.params.job_id)
    if (!job) throw errors.jobNotFound(request.params.job_id)
    const { after_step: afterStep, limit = DEFAULT_LIMIT, max_points: maxPoints } = request.query
    // without max_points one row more than the page says whether there is more; downsampling needs them all
    const [rows, byStep] = await Promise.all([
      listStepMetrics(db, job.id, { afterStep, limit: maxPoints === undefined ? limit + 1 : undefined }),
      checkpointMetrics(db, job.id),
    ])
    let points = rows.map(r => toPoint(r, byStep.get(r.step)))
    if (maxPoints !== undefined) points = downsample(points, maxPoints, hasValidation)
    return { object: 'list' as const, data: points.slice(0, limit), has_more: points.length > limit }
  })
}

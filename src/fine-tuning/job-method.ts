// A job's method (Nebius FineTuningRequest.method): supervised fine-tuning, or spec-draft, which
// trains an EAGLE-3 drafter for the job's model (docs/spec-draft.md). The request's method is read
// here, and here only is a stored job told to be one or the other.
import { fieldError } from '../errors.js'
import type { Hyperparameters } from './hyperparameters.js'
import type { JobCreateBody } from './jobs.schemas.js'
import { resolveSpecDraftHyperparameters, type SpecDraftHyperparameters } from './spec-draft-hyperparameters.js'

export type MethodType = 'supervised' | 'spec-draft'

/** What the jobs table's `method` column holds (null on rows from before it was written). */
export interface StoredMethod { type: MethodType }

export type JobHyperparameters = Hyperparameters | SpecDraftHyperparameters

/** Legacy rows (no method stored) are supervised: spec-draft jobs always store theirs. */
export const isSpecDraft = (method: StoredMethod | null | undefined): boolean => method?.type === 'spec-draft'

interface JobLike { method: StoredMethod | null, hyperparameters: JobHyperparameters }

/** A job's hyperparameters as its method's: a supervised job's, or undefined for a spec-draft one. */
export function supervisedHyperparameters (job: JobLike): Hyperparameters | undefined {
  return isSpecDraft(job.method) ? undefined : job.hyperparameters as Hyperparameters
}

export function specDraftHyperparameters (job: JobLike): SpecDraftHyperparameters | undefined {
  return isSpecDraft(job.method) ? job.hyperparameters as SpecDraftHyperparameters : undefined
}

export type RequestedMethod =
  | { type: 'supervised', given: JobCreateBody['hyperparameters'], at: string }
  | { type: 'spec-draft', hyperparameters: SpecDraftHyperparameters, unknown: string[] }

const SPEC_DRAFT_AT = 'method.spec_draft.hyperparameters'

/**
 * The method a request asks for. 422s (as pydantic's discriminated union words them) for
 * `method` with top-level `hyperparameters`, and for the other method's config under a method;
 * a spec-draft method's hyperparameters come back resolved.
 */
export function requestedMethod (body: JobCreateBody): RequestedMethod {
  const method = body.method ?? null
  if (method !== null && body.hyperparameters != null) {
    throw fieldError(['body', 'method'], "Value error, Only one of 'method' or 'hyperparameters' must be provided", 'value_error', method)
  }
  if (method === null) return { type: 'supervised', given: body.hyperparameters, at: 'hyperparameters' }
  const type = method.type ?? 'supervised'
  const other = type === 'supervised' ? 'spec_draft' : 'supervised'
  if (method[other] !== undefined && method[other] !== null) {
    throw fieldError(['body', 'method', other], `Extra inputs are not permitted: '${other}' configures the other method; this one is '${type}'`, 'extra_forbidden', method[other])
  }
  if (type === 'supervised') return { type, given: method.supervised?.hyperparameters, at: 'method.supervised.hyperparameters' }
  return { type, ...resolveSpecDraftHyperparameters(method.spec_draft?.hyperparameters, SPEC_DRAFT_AT) }
}

/** The job's `method` as the API echoes it (SupervisedMethodConfig | SpecDraftMethodConfig). */
export function methodToApi (job: JobLike) {
  return isSpecDraft(job.method)
    ? { type: 'spec-draft' as const, spec_draft: { hyperparameters: job.hyperparameters } }
    : { type: 'supervised' as const, supervised: { hyperparameters: job.hyperparameters } }
}

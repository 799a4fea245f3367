// Wire shapes of the fine-tuning API, after the Nebius spec (FineTuningRequest, FineTuningJob,
// FineTuningJobEvent, the two FineTuningJobCheckpoint schemas, the list envelopes).
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { SupervisedHParameters } from './hyperparameters.js'
import { SpecDraftHParameters } from './spec-draft-hyperparameters.js'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const Open = { additionalProperties: true }

export const JOB_STATUSES = ['validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled'] as const
export type JobStatus = typeof JOB_STATUSES[number]
export const TERMINAL_STATUSES = ['succeeded', 'failed', 'cancelled'] as const satisfies readonly JobStatus[]
export type TerminalStatus = typeof TERMINAL_STATUSES[number]
export const isTerminal = (s: JobStatus): s is TerminalStatus => (TERMINAL_STATUSES as readonly JobStatus[]).includes(s)
export const UNFINISHED_STATUSES = JOB_STATUSES.filter((s): s is Exclude<JobStatus, TerminalStatus> => !isTerminal(s))

// --- requests ---------------------------------------------------------------------------------

const MethodRequest = Type.Object({
  type: Type.Optional(Type.Union([Type.Literal('supervised'), Type.Literal('spec-draft')])),
  supervised: Type.Optional(Type.Object({ hyperparameters: Type.Optional(Nullable(SupervisedHParameters)) }, Open)),
  spec_draft: Type.Optional(Type.Object({ hyperparameters: Type.Optional(Nullable(SpecDraftHParameters)) }, Open)),
}, Open)

const IntegrationRequest = Type.Object({
  type: Type.Optional(Type.String()),
  wandb: Type.Optional(Type.Object({}, Open)),
  mlflow: Type.Optional(Type.Object({}, Open)),
  hf: Type.Optional(Type.Object({}, Open)),
}, Open)

export const JobCreateBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 512 }),
  training_file: Type.String({ minLength: 1, maxLength: 512 }),
  validation_file: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 512 }))),
  hyperparameters: Type.Optional(Nullable(SupervisedHParameters)),
  method: Type.Optional(Nullable(MethodRequest)),
  integrations: Type.Optional(Nullable(Type.Array(IntegrationRequest, { maxItems: 16 }))),
  from_checkpoint: Type.Optional(Nullable(Type.Object({}, Open))),
  seed: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 2147483647 }))),
  suffix: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
  tags: Type.Optional(Nullable(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 64 }))),
  extra_body: Type.Optional(Nullable(Type.Object({}, Open))),
}, { ...Open, title: 'FineTuningRequest' })
export type JobCreateBody = Static<typeof JobCreateBody>

export const JobParams = Type.Object({ job_id: Type.String() })
export const CheckpointParams = Type.Object({ job_id: Type.String(), checkpoint_id: Type.String() })

const listQuery = (defaultLimit: number) => Type.Object({
  limit: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: 100, default: defaultLimit }))),
  after: Type.Optional(Nullable(Type.String())),
  ai_project_id: Type.Optional(Nullable(Type.String())),
})
export const JobListQuery = listQuery(20)
export const EventListQuery = Type.Object({
  ...listQuery(20).properties,
  // server-sent events instead of a page (also with `Accept: text/event-stream`): docs/api.md
  stream: Type.Optional(Nullable(Type.Boolean())),
})
export const CheckpointListQuery = listQuery(10)
export const ProjectQuery = Type.Object({ ai_project_id: Type.Optional(Nullable(Type.String())) })

// --- responses --------------------------------------------------------------------------------

// What a failed job carries (DESIGN §1: never {}), as stored and as sent.
export const JobError = Type.Object({
  code: Type.String(),
  message: Type.String(),
  param: Nullable(Type.String()),
}, Open)
export type JobError = Static<typeof JobError>

export const FineTuningJob = Type.Object({
  id: Type.String(),
  object: Type.Literal('fine_tuning.job'),
  created_at: Type.Integer(),
  model: Type.String(),
  status: Type.Union(JOB_STATUSES.map(s => Type.Literal(s))),
  training_file: Type.String(),
  validation_file: Nullable(Type.String()),
  hyperparameters: Nullable(Type.Object({}, Open)), // null for a spec-draft job: its method says them
  method: Type.Object({}, Open),
  integrations: Nullable(Type.Array(Type.Object({}, Open))),
  from_checkpoint: Nullable(Type.Union([
    Type.Object({ type: Type.Literal('ft') }),
    Type.Object({ type: Type.Literal('hf'), repo: Type.String(), revision: Nullable(Type.String()) }), // HFCheckpointParametersResponse
  ])),
  organization_id: Type.String(),
  result_files: Type.Array(Type.String()),
  seed: Type.Integer(),
  suffix: Nullable(Type.String()),
  error: Nullable(JobError),
  finished_at: Nullable(Type.Integer()),
  trained_tokens: Nullable(Type.Integer()),
  trained_steps: Nullable(Type.Integer()),
  total_steps: Nullable(Type.Integer()),
  estimated_finish: Nullable(Type.Integer()),
  fine_tuned_model: Nullable(Type.String()),
  tags: Nullable(Type.Array(Type.String())),
  extra_body: Nullable(Type.Object({}, Open)),
}, { ...Open, title: 'FineTuningJob' })
export type FineTuningJob = Static<typeof FineTuningJob>

export const FineTuningJobList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(FineTuningJob),
  has_more: Type.Boolean(),
})

export const EVENT_LEVELS = ['info', 'warn', 'error'] as const
export type EventLevel = typeof EVENT_LEVELS[number]
export const EVENT_TYPES = ['message', 'metrics'] as const
export type EventType = typeof EVENT_TYPES[number]

export const FineTuningJobEvent = Type.Object({
  id: Type.String(),
  object: Type.Literal('fine_tuning.job.event'),
  created_at: Type.Integer(),
  level: Type.Union(EVENT_LEVELS.map(l => Type.Literal(l))),
  message: Type.String(),
  type: Type.Union(EVENT_TYPES.map(t => Type.Literal(t))),
  data: Type.Unknown(),
}, { ...Open, title: 'FineTuningJobEvent' })
export type FineTuningJobEvent = Static<typeof FineTuningJobEvent>

export const EventList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(FineTuningJobEvent),
  has_more: Type.Boolean(),
})

const num = Nullable(Type.Number())
export const Metrics = Type.Object({
  step: num,
  train_loss: num,
  train_mean_token_accuracy: num,
  valid_loss: num,
  valid_mean_token_accuracy: num,
  full_valid_loss: num,
  full_valid_mean_token_accuracy: num,
}, { ...Open, title: 'Metrics' })
// the seven keys always; a spec-draft job's checkpoints add their own (the spec's Metrics is open)
export type Metrics = Static<typeof Metrics> & { [extra: string]: number | null }

export const FineTuningJobCheckpoint = Type.Object({
  id: Type.String(),
  object: Type.Literal('fine_tuning.job.checkpoint'),
  created_at: Type.Integer(),
  fine_tuned_model_checkpoint: Type.String(),
  fine_tuning_job_id: Type.String(),
  metrics: Metrics,
  step_number: Type.Integer(),
  result_files: Type.Array(Type.String()),
}, { ...Open, title: 'FineTuningJobCheckpoint' })
export type FineTuningJobCheckpoint = Static<typeof FineTuningJobCheckpoint>

export const CheckpointList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(FineTuningJobCheckpoint),
  first_id: Nullable(Type.String()),
  last_id: Nullable(Type.String()),
  has_more: Type.Boolean(),
})

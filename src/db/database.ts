// Table interfaces: the one schema both dialects share, as stored. Columns are snake_case; JSON is
// stored as text so SQLite and PostgreSQL read it back the same way. Each store decodes its rows
// (FileRow, JobRow, EventRow, CheckpointRow live there); nothing else reads these shapes.
import type { Generated } from 'kysely'
import type { DeploymentKind, DeploymentStatus } from '../deployments/deployments.schemas.js'
import type { FilePurpose, FileStatus } from '../files/files.schemas.js'
import type { EventLevel, EventType, JobStatus } from '../fine-tuning/jobs.schemas.js'
import type { WebhookDeliveryStatus, WebhookEventType } from '../webhooks/webhooks.schemas.js'

export interface ProjectTable {
  id: string
  name: string
  created_at: number
}

export interface ApiKeyTable {
  id: string
  project_id: string
  prefix: string // first characters of the key, shown in `keys list`, used to find the row
  hash: string // sha256 hex of the whole key; the key itself is never stored
  created_at: number
  revoked_at: number | null
}

export interface FileTable {
  seq: Generated<number> // insertion order: pagination and ordering key
  id: string
  project_id: string
  filename: string
  purpose: FilePurpose
  bytes: number
  created_at: number
  status: FileStatus
  status_details: string | null
}

export interface JobTable {
  seq: Generated<number>
  id: string
  project_id: string
  model: string
  status: JobStatus
  training_file: string
  validation_file: string | null
  hyperparameters: string // JSON, fully resolved
  method: string | null // JSON {type}: supervised | spec-draft (null on older rows: supervised)
  integrations: string | null // JSON as requested, secrets included; never sent back
  seed: number
  suffix: string | null
  tags: string | null // JSON
  extra_body: string | null // JSON
  extra_fields: string | null // JSON: unknown top-level request keys, echoed back
  created_at: number
  finished_at: number | null
  error: string | null // JSON {code, message, param}
  result_files: string // JSON string[]
  trained_tokens: number | null
  trained_steps: number | null
  total_steps: number | null
  estimated_finish: number | null
  fine_tuned_model: string | null
  locked_by: string | null // runner holding the job
  locked_until: number | null // ms since epoch; past = free to claim
  attempts: Generated<number> // runners' starts of its training since one last saved new state
  executor_attempt: string | null // the Slurm executor's attempt name (job name), set before submitting
  executor_job_id: string | null // the Slurm job id of that attempt
  protocol_offset: Generated<number> // bytes of the attempt's protocol file handled so far

  // JSON {type:'hf', repo, revision, sealed_token?} (migration 0006_hub); null: none, or this server's own
  from_checkpoint: string | null
}

export interface EventTable {
  seq: Generated<number>
  id: string
  job_id: string
  created_at: number
  level: EventLevel
  message: string
  type: EventType
  data: string | null // JSON
}

export interface CheckpointTable {
  seq: Generated<number>
  id: string
  job_id: string
  created_at: number
  step_number: number
  fine_tuned_model_checkpoint: string
  metrics: string // JSON, the seven keys
  result_files: string // JSON string[]
}

export interface JobMetricsTable {
  job_id: string
  step: number // primary key with job_id
  epoch: number | null
  train_loss: number | null // null: a step without loss tokens, or a diverged one (NaN/inf)
  train_mean_token_accuracy: number | null
  learning_rate: number | null
  grad_norm: number | null // before clipping
  tokens: number | null
  step_time_s: number | null
  extra: string | null // JSON {name: number}: the step's other metrics (a drafter's), as reported
}

export interface DeploymentTable {
  seq: Generated<number>
  name: string // the full name handed out: <base>-LoRa:<name>-<4 chars>; unique across projects
  project_id: string
  base_model: string
  source: string // as sent: <job_id>:<checkpoint_id>
  description: string | null
  job_id: string
  checkpoint_id: string
  checkpoint_model: string // the checkpoint's fine_tuned_model_checkpoint: what it resolves to
  kind: DeploymentKind
  status: DeploymentStatus
  status_reason: string | null
  context_length: number | null // known once validated
  created_at: number
  deleted_at: number | null
}

// src/trackers/tracker-runs.store.ts
export interface TrackerRunTable {
  job_id: string
  slot: number
  kind: string // wandb | mlflow
  run_id: string
  lines: number
  last_step: number
}

export interface WebhookEndpointTable {
  seq: Generated<number>
  id: string
  project_id: string
  url: string
  events: string // JSON WebhookEventType[]
  description: string | null
  secret: string // whsec_<base64>: kept to sign deliveries (HMAC needs it), never sent back after creation
  created_at: number
  last_delivery_at: number | null // seconds: the last attempt of any of its deliveries
  last_delivery_status: WebhookDeliveryStatus | null
  last_status_code: number | null
  last_error: string | null
}

export interface WebhookDeliveryTable {
  seq: Generated<number>
  id: string // the webhook-id header: the same on every attempt, receivers dedupe on it
  endpoint_id: string
  event_id: string // evt_…, shared by an event's deliveries to each endpoint
  event_type: WebhookEventType
  job_id: string
  payload: string // the exact body sent (signed as stored)
  created_at: number
  status: WebhookDeliveryStatus
  attempts: Generated<number>
  next_attempt_at: number | null // ms; due when past and pending
  retry_from: number // ms: written or replayed then; a failure past the max age (72 h) gives up (status failed)
  locked_by: string | null // the delivery worker sending it now
  locked_until: number | null // ms
  last_attempt_at: number | null // seconds
  last_status_code: number | null
  last_error: string | null
  delivered_at: number | null // seconds
}

export interface Database {
  projects: ProjectTable
  api_keys: ApiKeyTable
  files: FileTable
  fine_tuning_jobs: JobTable
  job_events: EventTable
  checkpoints: CheckpointTable
  job_metrics: JobMetricsTable
  deployments: DeploymentTable
  tracker_runs: TrackerRunTable
  webhook_endpoints: WebhookEndpointTable
  webhook_deliveries: WebhookDeliveryTable
}

// Migrations in code, run at start (Kysely's Migrator takes a lock, so concurrent starts are safe).
// Only the autoincrement ordering column differs between dialects.
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely'
import type { Dialect } from './connect.js'

type Db = Kysely<any> // migrations see the schema as it was then, not today's Database

function seqColumn (dialect: Dialect) {
  return dialect === 'postgres'
    ? { type: sql`bigserial`, build: (c: any) => c.primaryKey() }
    : { type: sql`integer`, build: (c: any) => c.primaryKey().autoIncrement() }
}

function initial (dialect: Dialect): Migration {
  const seq = seqColumn(dialect)
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.createTable('projects')
        .addColumn('id', 'text', c => c.primaryKey())
        .addColumn('name', 'text', c => c.notNull().unique())
        .addColumn('created_at', bigint, c => c.notNull())
        .execute()
      await db.schema.createTable('api_keys')
        .addColumn('id', 'text', c => c.primaryKey())
        .addColumn('project_id', 'text', c => c.notNull().references('projects.id'))
        .addColumn('prefix', 'text', c => c.notNull())
        .addColumn('hash', 'text', c => c.notNull().unique())
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('revoked_at', bigint)
        .execute()
      await db.schema.createIndex('api_keys_prefix').on('api_keys').column('prefix').execute()
      await db.schema.createTable('files')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('project_id', 'text', c => c.notNull().references('projects.id'))
        .addColumn('filename', 'text', c => c.notNull())
        .addColumn('purpose', 'text', c => c.notNull())
        .addColumn('bytes', bigint, c => c.notNull())
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('status', 'text', c => c.notNull())
        .addColumn('status_details', 'text')
        .execute()
      await db.schema.createIndex('files_project').on('files').columns(['project_id', 'seq']).execute()
      await db.schema.createTable('fine_tuning_jobs')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('project_id', 'text', c => c.notNull().references('projects.id'))
        .addColumn('model', 'text', c => c.notNull())
        .addColumn('status', 'text', c => c.notNull())
        .addColumn('training_file', 'text', c => c.notNull())
        .addColumn('validation_file', 'text')
        .addColumn('hyperparameters', 'text', c => c.notNull())
        .addColumn('method', 'text')
        .addColumn('integrations', 'text')
        .addColumn('seed', bigint, c => c.notNull())
        .addColumn('suffix', 'text')
        .addColumn('tags', 'text')
        .addColumn('extra_body', 'text')
        .addColumn('extra_fields', 'text')
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('finished_at', bigint)
        .addColumn('error', 'text')
        .addColumn('result_files', 'text', c => c.notNull())
        .addColumn('trained_tokens', bigint)
        .addColumn('trained_steps', bigint)
        .addColumn('total_steps', bigint)
        .addColumn('estimated_finish', bigint)
        .addColumn('fine_tuned_model', 'text')
        .execute()
      await db.schema.createIndex('jobs_project').on('fine_tuning_jobs').columns(['project_id', 'seq']).execute()
      await db.schema.createIndex('jobs_status').on('fine_tuning_jobs').columns(['status', 'seq']).execute()
      await db.schema.createTable('job_events')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('job_id', 'text', c => c.notNull().references('fine_tuning_jobs.id'))
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('level', 'text', c => c.notNull())
        .addColumn('message', 'text', c => c.notNull())
        .addColumn('type', 'text', c => c.notNull())
        .addColumn('data', 'text')
        .execute()
      await db.schema.createIndex('events_job').on('job_events').columns(['job_id', 'seq']).execute()
      await db.schema.createTable('checkpoints')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('job_id', 'text', c => c.notNull().references('fine_tuning_jobs.id'))
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('step_number', bigint, c => c.notNull())
        .addColumn('fine_tuned_model_checkpoint', 'text', c => c.notNull())
        .addColumn('metrics', 'text', c => c.notNull())
        .addColumn('result_files', 'text', c => c.notNull())
        .execute()
      // One checkpoint per (job, step): a resumed trainer that reports a step again cannot duplicate it.
      await db.schema.createIndex('checkpoints_job_step').on('checkpoints').columns(['job_id', 'step_number'])
        .unique().execute()
    },
  }
}

// The job row is the queue item (DESIGN §2): a runner holds a job while locked_until (ms) is in
// the future and keeps extending it; a job whose lease ran out is free for any runner to resume.
function runnerLease (dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.alterTable('fine_tuning_jobs').addColumn('locked_by', 'text').execute()
      await db.schema.alterTable('fine_tuning_jobs').addColumn('locked_until', bigint).execute()
      await db.schema.alterTable('fine_tuning_jobs').addColumn('attempts', 'integer', c => c.notNull().defaultTo(0)).execute()
    },
  }
}

// Deployments (/v0/models): a checkpoint made a named, servable model. The full name is the key;
// a deleted one keeps its row (status 'deleted'), so its name is never handed out again.
function deployments (dialect: Dialect): Migration {
  const seq = seqColumn(dialect)
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.createTable('deployments')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('name', 'text', c => c.notNull().unique())
        .addColumn('project_id', 'text', c => c.notNull().references('projects.id'))
        .addColumn('base_model', 'text', c => c.notNull())
        .addColumn('source', 'text', c => c.notNull())
        .addColumn('description', 'text')
        .addColumn('job_id', 'text', c => c.notNull())
        .addColumn('checkpoint_id', 'text', c => c.notNull())
        .addColumn('checkpoint_model', 'text', c => c.notNull())
        .addColumn('kind', 'text', c => c.notNull())
        .addColumn('status', 'text', c => c.notNull())
        .addColumn('status_reason', 'text')
        .addColumn('context_length', bigint)
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('deleted_at', bigint)
        .execute()
      await db.schema.createIndex('deployments_project').on('deployments').columns(['project_id', 'seq']).execute()
      await db.schema.createIndex('deployments_status').on('deployments').columns(['status']).execute()
    },
  }
}

// Every optimizer step's metrics (GET /v1/fine_tuning/jobs/{id}/metrics): one row per (job, step);
// a resumed trainer's steps beyond where it resumed replace the ones reported before (metrics.store.ts).
function jobMetrics (dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  const float = dialect === 'postgres' ? 'double precision' : 'real'
  return {
    async up (db: Db) {
      await db.schema.createTable('job_metrics')
        .addColumn('job_id', 'text', c => c.notNull().references('fine_tuning_jobs.id'))
        .addColumn('step', bigint, c => c.notNull())
        .addColumn('epoch', float)
        .addColumn('train_loss', float)
        .addColumn('train_mean_token_accuracy', float)
        .addColumn('learning_rate', float)
        .addColumn('grad_norm', float)
        .addColumn('tokens', bigint)
        .addColumn('step_time_s', float)
        .addPrimaryKeyConstraint('job_metrics_pk', ['job_id', 'step'])
        .execute()
    },
  }
}

// The W&B / MLflow run each tracker integration of a job logs to (src/trackers/): a runner that takes
// the job over after a restart continues that run, from the step after the last one it holds.
function trackerRuns (dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.createTable('tracker_runs')
        .addColumn('job_id', 'text', c => c.notNull().references('fine_tuning_jobs.id'))
        .addColumn('slot', bigint, c => c.notNull()) // the integration's index in the job's list
        .addColumn('kind', 'text', c => c.notNull())
        .addColumn('run_id', 'text', c => c.notNull())
        .addColumn('lines', bigint, c => c.notNull()) // W&B: history lines sent (the file_stream offset)
        .addColumn('last_step', bigint, c => c.notNull()) // the last step the run has acknowledged
        .addPrimaryKeyConstraint('tracker_runs_pk', ['job_id', 'slot'])
        .execute()
    },
  }
}

// A job's from_checkpoint of type hf (src/hub/): the Hub repository and revision it continues from, and
// while its files are downloaded the request's token, sealed (src/hub/sealed-token.ts), never in clear.
function hubCheckpoint (): Migration {
  return {
    async up (db: Db) {
      await db.schema.alterTable('fine_tuning_jobs').addColumn('from_checkpoint', 'text').execute()
    },
  }
}

// Webhooks (src/webhooks/): a project's endpoints, and the outbox of deliveries written in the same
// transaction as a job's final status (jobs.service.ts). A delivery is claimed with a lease
// (locked_until, ms) like a job; next_attempt_at (ms) is when it is due; retries stop max-age after retry_from.
function webhooks (dialect: Dialect): Migration {
  const seq = seqColumn(dialect)
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.createTable('webhook_endpoints')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('project_id', 'text', c => c.notNull().references('projects.id'))
        .addColumn('url', 'text', c => c.notNull())
        .addColumn('events', 'text', c => c.notNull())
        .addColumn('description', 'text')
        .addColumn('secret', 'text', c => c.notNull())
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('last_delivery_at', bigint)
        .addColumn('last_delivery_status', 'text')
        .addColumn('last_status_code', 'integer')
        .addColumn('last_error', 'text')
        .execute()
      await db.schema.createIndex('webhook_endpoints_project').on('webhook_endpoints').columns(['project_id', 'seq'])
        .execute()
      await db.schema.createTable('webhook_deliveries')
        .addColumn('seq', seq.type, seq.build)
        .addColumn('id', 'text', c => c.notNull().unique())
        .addColumn('endpoint_id', 'text', c => c.notNull().references('webhook_endpoints.id'))
        .addColumn('event_id', 'text', c => c.notNull())
        .addColumn('event_type', 'text', c => c.notNull())
        .addColumn('job_id', 'text', c => c.notNull())
        .addColumn('payload', 'text', c => c.notNull())
        .addColumn('created_at', bigint, c => c.notNull())
        .addColumn('status', 'text', c => c.notNull())
        .addColumn('attempts', 'integer', c => c.notNull().defaultTo(0))
        .addColumn('next_attempt_at', bigint)
        .addColumn('retry_from', bigint, c => c.notNull())
        .addColumn('locked_by', 'text')
        .addColumn('locked_until', bigint)
        .addColumn('last_attempt_at', bigint)
        .addColumn('last_status_code', 'integer')
        .addColumn('last_error', 'text')
        .addColumn('delivered_at', bigint)
        .execute()
      await db.schema.createIndex('webhook_deliveries_due').on('webhook_deliveries').columns(['status', 'next_attempt_at'])
        .execute()
      await db.schema.createIndex('webhook_deliveries_endpoint').on('webhook_deliveries').columns(['endpoint_id', 'seq'])
        .execute()
    },
  }
}

// Where an attempt runs outside this process (the Slurm executor, src/runner/slurm/): the attempt's
// name (given before submitting, so a runner that died mid-submit finds it by name, not twice), the
// scheduler's id for it, and how far the runner has read its protocol file (bytes).
function executorAttempt (dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer'
  return {
    async up (db: Db) {
      await db.schema.alterTable('fine_tuning_jobs').addColumn('executor_attempt', 'text').execute()
      await db.schema.alterTable('fine_tuning_jobs').addColumn('executor_job_id', 'text').execute()
      await db.schema.alterTable('fine_tuning_jobs')
        .addColumn('protocol_offset', bigint, c => c.notNull().defaultTo(0)).execute()
    },
  }
}

// A step's metrics beyond the fixed columns (a drafter's acceptance rates), as JSON: the trainer may
// report any; they are listed and exported as reported.
function jobMetricsExtra (): Migration {
  return {
    async up (db: Db) {
      await db.schema.alterTable('job_metrics').addColumn('extra', 'text').execute()
    },
  }
}

export function migrationsFor (dialect: Dialect): Record<string, Migration> {
  return {
    '0001_initial': initial(dialect),
    '0002_runner_lease': runnerLease(dialect),
    '0003_deployments': deployments(dialect),
    '0004_job_metrics': jobMetrics(dialect),
    '0005_webhooks': webhooks(dialect),
    '0006_hub': hubCheckpoint(),
    '0007_executor': executorAttempt(dialect),
    '0008_tracker_runs': trackerRuns(dialect),
    '0009_job_metrics_extra': jobMetricsExtra(),
  }
}

export async function migrateToLatest (db: Kysely<any>, dialect: Dialect, schema: string | null): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrationsFor(dialect) }
  const migrator = new Migrator({ db, provider, ...(schema ? { migrationTableSchema: schema } : {}) })
  const { error, results } = await migrator.migrateToLatest()
  const failed = results?.find(r => r.status === 'Error')
  if (error) throw new Error(`migration ${failed?.migrationName ?? ''} failed: ${String(error)}`, { cause: error })
}

// The executor seam: how an attempt of a claimed job runs, once its files are validated and its
// spec written (train-job.ts). `local` is a child process of this runner (local-executor.ts);
// `slurm` is one sbatch job per attempt, followed through a protocol file on shared storage
// (slurm/slurm-executor.ts). A Kubernetes Job would be a third (docs/scaling.md).
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import type { JobError } from '../fine-tuning/jobs.schemas.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
import { LocalExecutor } from './local-executor.js'
import type { TrainerLine } from './protocol.js'
import { SlurmExecutor } from './slurm/slurm-executor.js'
import type { TrainerExit } from './trainer-process.js'

export interface AttemptInput {
  job: JobRow // as claimed: executor_attempt/executor_job_id name an attempt to follow again
  dir: string // the job's folder (spec.json, data/, out/)
  specPath: string
  /** Local: the command before `train --spec …` (python -m opentune_trainer, or tests' fake). */
  trainerCommand: readonly string[]
  env: NodeJS.ProcessEnv
  log: FastifyBaseLogger
}

/** What the scheduler did, for the job's events (Slurm: its job id, state and reason in data). */
export interface SchedulerNote {
  message: string
  data?: Record<string, unknown>
  /** It had run and waits again (Slurm requeued it): the job goes back to `queued`. */
  requeued?: boolean
}

export interface AttemptEvents {
  /** One protocol line, in order; settles once it is handled: true when its effects were stored. */
  line: (line: TrainerLine) => Promise<boolean>
  /** Anything else the trainer printed (stderr, stray stdout). */
  other: (text: string, stream: 'stdout' | 'stderr') => void
  /** The attempt waits for the scheduler (Slurm PENDING, with its reason): no line comes meanwhile. */
  waiting: (note: SchedulerNote) => Promise<void>
  /** The attempt's trainer runs (again, after a requeue); null: nothing to say (a child process). */
  running: (note: SchedulerNote | null) => Promise<void>
}

/** How an attempt ended. `verdict`, where set, wins over the exit code (classifyExit). */
export interface AttemptEnd extends TrainerExit {
  /** The kernel's OOM killer struck while it ran (local); null where that is not known. */
  oomKilled: boolean | null
  /** The scheduler's reason the job failed (a time limit, a node failure) or must run again. */
  verdict?: { failed: JobError } | { requeue: string }
  /** The runner stopped following; the attempt goes on without it and a runner follows it again. */
  detached?: boolean
}

export interface Attempt {
  exited: Promise<AttemptEnd>
  /** Ends the attempt: the trainer gets SIGTERM (it saves its state), SIGKILL after graceMs. */
  stop: (graceMs: number) => void
  /**
   * This runner is going away (shutdown, lease lost, its writes fail): local ends the attempt as
   * stop does; Slurm stops following and leaves the batch job running for the next runner.
   */
  leave: (graceMs: number) => void
}

export interface Executor {
  readonly kind: 'local' | 'slurm'
  /** At the runner's start: what can be checked before the first job (Slurm: shared storage). */
  prepare: (log: FastifyBaseLogger) => void
  /** A new attempt, or (Slurm) the one the job row names, followed from the offset it records. */
  start: (input: AttemptInput, on: AttemptEvents) => Promise<Attempt>
  /**
   * Now and then (at the runner's start, then with its sweep of finished job folders): what outlived
   * the jobs no runner follows. Slurm: scancels their attempts. Never rejects.
   */
  sweep: (log: FastifyBaseLogger) => Promise<void>
}

/** The executor cannot run this job at all (the reason goes to the user as the job's error). */
export class AttemptRefused extends Error {
  constructor (readonly error: JobError) {
    super(error.message)
    this.name = 'AttemptRefused'
  }
}

const executors = new WeakMap<AppContext, Executor>()

/** This context's executor (one per process: Slurm's shared-storage check runs once). */
export function executorFor (ctx: AppContext): Executor {
  let executor = executors.get(ctx)
  if (!executor) {
    executor = ctx.config.executor === 'slurm' ? new SlurmExecutor(ctx) : new LocalExecutor(ctx.config)
    executors.set(ctx, executor)
  }
  return executor
}

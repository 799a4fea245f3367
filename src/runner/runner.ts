// The runner: claims jobs (lease + heartbeat), validates their files, trains at most
// maxConcurrentJobs of them at a time. Runs in the service process by default, or alone
// (`opentune runner`) on other machines sharing the database and data directory.
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { isStorageFull } from '../files/storage-full.js'
import { failJob } from '../fine-tuning/jobs.service.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
import { executorFor } from './executor.js'
import { claimJob, heartbeat, releaseJob } from './queue.js'
import { removeFinishedJobDirs } from './remove-finished-job-dirs.js'
import { trainJob, type TrainOptions } from './train-job.js'
import { validateJobFiles } from './validate-files.js'

export interface RunnerOptions {
  log: FastifyBaseLogger
  pollMs?: number
  trainerCommand?: readonly string[]
  stopGraceMs?: number
}

// A pass that keeps failing (the database is down, or its disk full: every claim is a write) is
// retried less and less often, up to once in 30 s, and logged with its stack once, then as one
// line per retry; it used to log a stack every 0.5 s for as long as it lasted.
const MAX_FAILING_DELAY_MS = 30_000

class FailureBackoff {
  #failures = 0
  constructor (private readonly log: FastifyBaseLogger, private readonly pollMs: number) {}

  get delayMs (): number {
    return this.#failures === 0 ? this.pollMs : Math.min(MAX_FAILING_DELAY_MS, this.pollMs * 2 ** this.#failures)
  }

  failed (err: unknown): void {
    this.#failures++
    const next = { failures: this.#failures, retryInMs: this.delayMs }
    if (this.#failures === 1) this.log.error({ err, ...next }, 'runner tick failed')
    const error = String((err as Error | undefined)?.message ?? err)
    if (this.#failures > 1) this.log.warn({ ...next, error }, 'runner tick still failing')
  }

  succeeded (): void {
    if (this.#failures > 0) this.log.info({ failures: this.#failures }, 'runner tick works again')
    this.#failures = 0
  }
}

const storageFullMessage = (dataDir: string) => `The disk of the data directory (${dataDir}) is full. Free space ` +
  'there (DELETE /v1/files/{file_id} of files no longer needed), then create the job again.'

export class Runner {
  readonly id = `runner-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  readonly #ctx: AppContext
  readonly #opts: RunnerOptions
  readonly #training = new Map<string, Promise<void>>()
  #validating: Promise<void> | null = null
  #timer: NodeJS.Timeout | undefined
  #tick: Promise<void> | null = null
  #again = false
  readonly #shutdown = new AbortController()

  constructor (ctx: AppContext, opts: RunnerOptions) {
    this.#ctx = ctx
    this.#opts = opts
  }

  get #leaseMs () { return this.#ctx.config.leaseSeconds * 1000 }

  start (): void {
    this.#opts.log.info({ runnerId: this.id, maxConcurrentJobs: this.#ctx.config.maxConcurrentJobs }, 'runner started')
    const executor = executorFor(this.#ctx)
    executor.prepare(this.#opts.log) // Slurm: is the data directory shared with the nodes?
    let passes = 0
    let sweeping: Promise<void> | null = null
    const failing = new FailureBackoff(this.#opts.log, this.#opts.pollMs ?? 500)
    const loop = () => {
      if (passes++ % 120 === 0 && !sweeping) {
        // Slurm: finished jobs' attempts no runner follows are scancelled first; their folders go once they ended
        sweeping = executor.sweep(this.#opts.log)
          .then(() => removeFinishedJobDirs(this.#ctx))
          .catch((err: unknown) => this.#opts.log.warn({ err }, 'cleaning job dirs failed'))
          .finally(() => { sweeping = null })
      }
      this.tick().then(() => failing.succeeded(), (err: unknown) => failing.failed(err))
        .finally(() => { if (!this.#shutdown.signal.aborted) this.#timer = setTimeout(loop, failing.delayMs) })
    }
    loop()
  }

  /**
   * One pass: start validating one job and fill the free training slots. A call while a pass runs
   * joins it and makes it go round once more, so nothing asked for in between is missed.
   */
  tick (): Promise<void> {
    if (this.#tick) {
      this.#again = true
      return this.#tick
    }
    this.#tick = (async () => {
      do {
        this.#again = false
        await this.#pass()
      } while (this.#again)
    })().finally(() => { this.#tick = null })
    return this.#tick
  }

  async #pass (): Promise<void> {
    const { db, store } = this.#ctx
    if (this.#shutdown.signal.aborted) return
    if (!this.#validating) {
      const job = await claimJob(db, store.dialect, 'validate', this.id, this.#leaseMs)
      // A job just validated is claimed for training right away rather than at the next poll.
      if (job) {
        this.#validating = this.#validate(job).finally(() => {
          this.#validating = null
          this.tick().catch(() => {})
        })
      }
    }
    while (this.#training.size < this.#ctx.config.maxConcurrentJobs && !this.#shutdown.signal.aborted) {
      const job = await claimJob(db, store.dialect, 'train', this.id, this.#leaseMs, [...this.#training.keys()])
      if (!job) break
      this.#training.set(job.id, this.#train(job).finally(() => this.#training.delete(job.id)))
    }
  }

  /** Runs until nothing is left to claim and nothing is in flight (tests, `runOnce`). */
  async drain (): Promise<void> {
    for (;;) {
      await this.tick()
      const busy = [this.#validating, ...this.#training.values()].filter(Boolean)
      if (busy.length === 0) return
      await Promise.race(busy)
    }
  }

  /** Trainers save resumable state and exit; their jobs go back to the queue. */
  async stop (): Promise<void> {
    this.#shutdown.abort()
    clearTimeout(this.#timer)
    await this.#tick?.catch(() => {}) // a claim in flight registers its work before we wait for it
    await Promise.allSettled([this.#validating, ...this.#training.values()])
  }

  // Never rejects: a database error here must not become an unhandled rejection that takes the
  // whole service (API included) down.
  async #validate (job: JobRow): Promise<void> {
    const { db } = this.#ctx
    const log = this.#opts.log.child({ jobId: job.id })
    const beat = setInterval(() => {
      void heartbeat(db, job.id, this.id, this.#leaseMs).catch(() => {})
    }, this.#leaseMs / 3)
    let keepLease = false
    try {
      await validateJobFiles(this.#ctx, job, this.#shutdown.signal)
    } catch (err) {
      if (!this.#shutdown.signal.aborted) {
        log.error({ err }, 'validation failed unexpectedly')
        const unexpected = 'Validating the files failed unexpectedly; the service log has the details.'
        const error = isStorageFull(err)
          ? { code: 'storage_full', param: null, message: storageFullMessage(this.#ctx.config.dataDir) }
          : { code: 'internal_error', param: null, message: unexpected }
        await failJob(db, job.id, error)
          .catch((e: unknown) => {
            // Not even the failure could be stored (the database is failing): the job is tried
            // again once the lease runs out, rather than at once and again and again.
            log.error({ err: e }, 'could not record the failure')
            keepLease = true
          })
      }
    } finally {
      clearInterval(beat)
      // Queued, failed, cancelled meanwhile, or shutting down: either way the job is not ours now.
      if (!keepLease) await releaseJob(db, job.id, this.id).catch((e: unknown) => log.warn({ err: e }, 'could not release the job'))
    }
  }

  async #train (job: JobRow): Promise<void> {
    const options: TrainOptions = {
      runnerId: this.id,
      leaseMs: this.#leaseMs,
      log: this.#opts.log,
      ...(this.#opts.trainerCommand ? { trainerCommand: this.#opts.trainerCommand } : {}),
      ...(this.#opts.stopGraceMs !== undefined ? { stopGraceMs: this.#opts.stopGraceMs } : {}),
    }
    try {
      await trainJob(this.#ctx, job, options, this.#shutdown.signal)
    } catch (err) {
      this.#opts.log.error({ err, jobId: job.id }, 'training failed unexpectedly')
      // a full disk is not a bug; if even this cannot be stored (SQLite on that disk), the lease runs
      // out and a runner tries the job again once there is space
      const unexpected = 'Running the job failed unexpectedly; the service log has the details.'
      const error = isStorageFull(err)
        ? { code: 'storage_full', param: null, message: storageFullMessage(this.#ctx.config.dataDir) }
        : { code: 'internal_error', param: null, message: unexpected }
      await failJob(this.#ctx.db, job.id, error).catch(() => {})
    }
  }
}

// The runner: claims jobs (lease + heartbeat), validates their files, trains at most
// maxConcurrentJobs of them at a time. Runs in the service process by default, or alone
// (`opentune runner`) on other machines sharing the database and data directory.
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import { failJob } from '../fine-tuning/jobs.service.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
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
    let passes = 0
    const loop = () => {
      if (passes++ % 120 === 0) {
        removeFinishedJobDirs(this.#ctx).catch((err: unknown) => this.#opts.log.warn({ err }, 'cleaning job dirs failed'))
      }
      this.tick().catch((err: unknown) => this.#opts.log.error({ err }, 'runner tick failed'))
        .finally(() => { if (!this.#shutdown.signal.aborted) this.#timer = setTimeout(loop, this.#opts.pollMs ?? 500) })
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
      if (job) this.#validating = this.#validate(job).finally(() => { this.#validating = null; this.tick().catch(() => {}) })
    }
    while (this.#training.size < this.#ctx.config.maxConcurrentJobs && !this.#shutdown.signal.aborted) {
      const job = await claimJob(db, store.dialect, 'train', this.id, this.#leaseMs)
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
    const beat = setInterval(() => { void heartbeat(db, job.id, this.id, this.#leaseMs).catch(() => {}) }, this.#leaseMs / 3)
    let keepLease = false
    try {
      await validateJobFiles(this.#ctx, job, this.#shutdown.signal)
    } catch (err) {
      if (!this.#shutdown.signal.aborted) {
        log.error({ err }, 'validation failed unexpectedly')
        await failJob(db, job.id, { code: 'internal_error', message: 'Validating the files failed unexpectedly; the service log has the details.', param: null })
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
      await failJob(this.#ctx.db, job.id, { code: 'internal_error', message: 'Running the job failed unexpectedly; the service log has the details.', param: null })
        .catch(() => {})
    }
  }
}

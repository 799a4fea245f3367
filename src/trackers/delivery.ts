// Logging beside training: each run has a bounded queue of steps that the trainer's lines fill
// without ever waiting (push is synchronous), and one sender that empties it in batches — while a
// request is out, the steps that arrive pile up into the next batch. A failing request is retried
// with backoff; one that still fails is given up (its steps counted, an event says so) and the
// sender goes on with the next batch. When the job ends, what is left gets flushMs to go out.
import type { FastifyBaseLogger } from 'fastify'
import { TrackerError } from './http.js'
import type { FinalStatus, StepPoint, Tracker } from './tracker.js'
import type { RunState } from './tracker-runs.store.js'

export interface DeliveryOptions {
  attempts: number
  backoffMs: number
  capacity: number // steps queued; when full the oldest is dropped
  load: () => Promise<RunState | null>
  save: (state: RunState) => Promise<void>
  /** The steps after `afterStep` up to `toStep` as the job stored them (for a resumed attempt). */
  stored: (afterStep: number, toStep: number) => Promise<StepPoint[]>
  /** A job event; never throws (a failing database must not stop the sender either). */
  event: (level: 'info' | 'warn' | 'error', message: string) => Promise<void>
  log: FastifyBaseLogger
}

const MAX_BACKOFF_MS = 30_000

export class Delivery {
  #queue: StepPoint[] = []
  #received = 0
  #sent = 0
  #dropped = 0 // the queue was full: the oldest went
  #lost = 0 // given up, never opened, or left when time ran out
  #gaveUp = 0 // batches given up
  #state: RunState = { runId: null, lines: 0, lastStep: 0 }
  #wake: (() => void) | null = null
  #closing: { status: FinalStatus | null } | null = null
  #stop = new AbortController() // the flush time ran out, or the service is stopping
  #stopReason = ''
  #disabled = false
  #backfillTo: number | null = null
  readonly #done: Promise<void>

  constructor (private readonly tracker: Tracker, private readonly opts: DeliveryOptions) {
    this.#done = this.#run().catch((err: unknown) => {
      this.#disabled = true
      opts.log.error({ error: this.#redact(String((err as Error)?.message ?? err)) }, 'tracker delivery failed')
    })
  }

  /** Queues a step; never waits, never throws. */
  push (p: StepPoint): void {
    this.#received++
    if (this.#disabled) { this.#lost++; return }
    if (this.#queue.length >= this.opts.capacity) {
      this.#queue.shift()
      this.#dropped++
    }
    this.#queue.push(p)
    this.#wake?.()
  }

  /**
   * A resumed trainer starts after `startStep`: the steps up to it that the run does not hold yet
   * (reported before a restart or a crash, but never acknowledged) are sent from the job's store.
   */
  backfill (startStep: number): void {
    this.#backfillTo = startStep
    this.#wake?.()
  }

  /**
   * Sends what is queued and, given the job's outcome, finishes the run (without one — the job
   * goes back to the queue — the run stays open for the next attempt). Waits at most flushMs, less
   * if the service stops; then what is still out is abandoned.
   */
  async close (status: FinalStatus | null, flushMs: number, shutdown: AbortSignal): Promise<void> {
    this.#closing = { status }
    this.#wake?.()
    const stop = (why: string) => {
      if (this.#stop.signal.aborted) return
      this.#stopReason = why
      this.#stop.abort()
    }
    const timer = setTimeout(() => stop(`the job ended and the ${flushMs / 1000} s left to send the rest ran out`), flushMs)
    const onShutdown = () => stop('the service is stopping')
    shutdown.addEventListener('abort', onShutdown, { once: true })
    if (shutdown.aborted) onShutdown()
    try {
      await this.#done
    } finally {
      clearTimeout(timer)
      shutdown.removeEventListener('abort', onShutdown)
      this.tracker.close()
    }
    const missed = this.#lost + this.#dropped + this.#queue.length
    if (missed > 0 && status === null) {
      await this.opts.event('info', `${this.tracker.label}: ${missed} steps not sent yet; they are sent when the job resumes.`)
    } else if (missed > 0) {
      const full = this.#dropped > 0 ? `, ${this.#dropped} of them dropped from a full queue` : ''
      await this.opts.event('warn', `${this.tracker.label}: ${missed} of ${this.#received} steps were not delivered${full}. Training was not affected.`)
    } else if (this.#state.runId !== null && status) {
      await this.opts.event('info', `${this.tracker.label}: finished (${status}), ${this.#sent} steps logged.`)
    }
  }

  async #run (): Promise<void> {
    this.#state = (await this.opts.load()) ?? this.#state
    const continuing = this.#state.runId !== null
    const opening = await this.#try(signal => this.tracker.open(this.#state, signal))
    if (opening) {
      this.#disabled = true
      this.#lost += this.#queue.length
      this.#queue = []
      await this.opts.event('error', `${this.tracker.label}: could not ${continuing ? 'continue' : 'create'} the run (${opening}); this attempt's metrics are not logged there. Training goes on.`)
      return
    }
    await this.opts.save(this.#state)
    await this.opts.event('info', `${continuing ? 'Continuing' : 'Logging metrics to'} ${this.tracker.label}`)
    for (;;) {
      if (this.#stop.signal.aborted) break
      if (this.#backfillTo !== null) {
        const to = this.#backfillTo
        this.#backfillTo = null
        // before what is queued: those are the steps after the resumed trainer's start
        if (to > this.#state.lastStep) this.#queue.unshift(...await this.opts.stored(this.#state.lastStep, to))
      }
      if (this.#queue.length === 0) {
        if (this.#closing) break
        await new Promise<void>(resolve => { this.#wake = resolve })
        this.#wake = null
        continue
      }
      // steps the run already holds (sent before a restart, now trained again) are not sent twice
      const batch = this.#queue.splice(0, this.tracker.maxBatch).filter(p => p.step > this.#state.lastStep)
      if (batch.length === 0) continue
      const failed = await this.#try(signal => this.tracker.send(batch, this.#state, signal))
      if (failed) {
        this.#lost += batch.length
        const resumesLater = this.#closing?.status === null && this.#stop.signal.aborted
        if (this.#gaveUp++ === 0 && !resumesLater) {
          const steps = batch.length === 1 ? `step ${batch[0]?.step}` : `steps ${batch[0]?.step}–${batch.at(-1)?.step}`
          await this.opts.event('warn', `${this.tracker.label}: gave up sending ${steps} (${failed}); training goes on and later steps are still sent.`)
        }
        continue
      }
      this.#sent += batch.length
      await this.opts.save(this.#state)
    }
    const status = this.#closing?.status
    if (!status) return
    const finishing = await this.#try(signal => this.tracker.finish(status, this.#state, signal))
    if (finishing) await this.opts.event('warn', `${this.tracker.label}: could not mark the run ${status} (${finishing}).`)
  }

  /** Tries fn up to `attempts` times; null once it worked, else why it was given up. */
  async #try (fn: (signal: AbortSignal) => Promise<void>): Promise<string | null> {
    const signal = this.#stop.signal
    let last = ''
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) return this.#stopped(last)
      try {
        await fn(signal)
        return null
      } catch (err) {
        last = this.#redact(err instanceof Error ? err.message : String(err))
        if (signal.aborted) return this.#stopped(last)
        if (!(err instanceof TrackerError && err.retryable)) return last
        if (attempt >= this.opts.attempts) return `${last}; ${attempt} attempts`
        this.opts.log.debug({ tracker: this.tracker.label, attempt, error: last }, 'tracker request failed, retrying')
        await sleep(Math.min(MAX_BACKOFF_MS, this.opts.backoffMs * 2 ** (attempt - 1)), signal)
      }
    }
  }

  #stopped (last: string): string {
    if (!last) return this.#stopReason
    return `${this.#stopReason}; ${last.startsWith('abandoned') ? 'a request was still unanswered' : `last error: ${last}`}`
  }

  #redact (text: string): string {
    let out = text
    for (const s of this.tracker.secrets) if (s.length >= 4) out = out.split(s).join('***')
    return out
  }
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

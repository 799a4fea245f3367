// The delivery worker: runs in the service process (server.ts), like the runner. Every pollMs it
// claims the outbox's due deliveries (a lease, so two processes on one PostgreSQL do not both send
// one), POSTs each signed, and records the outcome: a 2xx is delivered; anything else is retried
// with exponential backoff and jitter until maxAgeSeconds after the event, then given up.
// At least once: a process killed mid-send sends that delivery again after its lease; receivers
// dedupe on webhook-id. A stopped or restarted service loses nothing: the rows wait in the outbox.
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../context.js'
import type { WebhooksConfig } from '../config.js'
import { signWebhook } from './signing.js'
import {
  claimDueDeliveries, endpointsByIds, recordAttempt, releaseDelivery, type AttemptOutcome, type DeliveryRow,
} from './webhooks.store.js'

const BATCH = 16 // deliveries sent at once per poll
const LEASE_MARGIN_MS = 30_000 // beyond the request timeout: a lease never runs out while its attempt is in flight
const ERROR_CHARS = 500

/** The wait before retry number `attempt` (1 = the first retry): base·2^(n-1), capped, jittered to 50–100%. */
export function retryDelayMs (cfg: Pick<WebhooksConfig, 'retryBaseMs' | 'retryMaxMs'>, attempt: number,
  random = Math.random): number {
  const full = Math.min(cfg.retryMaxMs, cfg.retryBaseMs * 2 ** Math.min(attempt - 1, 40))
  return Math.round(full * (0.5 + 0.5 * random()))
}

export class WebhookDelivery {
  readonly #ctx: AppContext
  readonly #log: FastifyBaseLogger
  readonly #cfg: WebhooksConfig
  readonly #id = `webhooks-${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #stopping = new AbortController()

  constructor (ctx: AppContext, opts: { log: FastifyBaseLogger }) {
    this.#ctx = ctx
    this.#log = opts.log.child({ worker: 'webhooks' })
    this.#cfg = ctx.config.webhooks
  }

  /** Picks up what is due at once (rows left by a previous process too), then every pollMs. */
  start (): void {
    const loop = () => {
      this.#running = this.runOnce().then(() => undefined, (err: unknown) => {
        this.#log.error({ err }, 'webhook delivery round failed')
      }).finally(() => {
        if (!this.#stopping.signal.aborted) this.#timer = setTimeout(loop, this.#cfg.pollMs)
      })
    }
    loop()
  }

  /** Stops polling; attempts in flight are cut off (their leases run out and they are sent again later). */
  async stop (): Promise<void> {
    this.#stopping.abort()
    clearTimeout(this.#timer)
    await this.#running
  }

  /** One round: claim due deliveries and send them; the number sent. */
  async runOnce (): Promise<number> {
    const { db, dialect } = this.#ctx.store
    const claimed = await claimDueDeliveries(db, dialect, this.#id, this.#cfg.timeoutMs + LEASE_MARGIN_MS, BATCH)
    if (claimed.length === 0) return 0
    const endpoints = await endpointsByIds(db, [...new Set(claimed.map(d => d.endpoint_id))])
    await Promise.all(claimed.map(async (delivery) => {
      const endpoint = endpoints.get(delivery.endpoint_id)
      if (!endpoint) return // removed meanwhile, its deliveries with it
      const outcome = await this.#attempt(delivery, endpoint.url, endpoint.secret)
      if (this.#stopping.signal.aborted && outcome.status !== 'succeeded') {
        await releaseDelivery(db, delivery, this.#id) // cut by shutdown, not the receiver's fault: due again at start
        return
      }
      await recordAttempt(db, delivery, this.#id, outcome)
      const log = { delivery: delivery.id, endpoint: endpoint.id, attempts: delivery.attempts, ...outcome }
      if (outcome.status === 'succeeded') this.#log.info(log, 'webhook delivered')
      else this.#log.warn(log, outcome.status === 'failed' ? 'webhook delivery gave up' : 'webhook delivery failed')
    }))
    return claimed.length
  }

  async #attempt (delivery: DeliveryRow, url: string, secret: string): Promise<AttemptOutcome> {
    const headers = signWebhook(secret, delivery.id, delivery.payload, Math.floor(Date.now() / 1000))
    let statusCode: number | null = null
    let error: string | null = null
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'opentune-webhooks', ...headers },
        body: delivery.payload,
        redirect: 'manual', // a redirect is not a delivery: the receiver should be configured at its real URL
        signal: AbortSignal.any([AbortSignal.timeout(this.#cfg.timeoutMs), this.#stopping.signal]),
      })
      statusCode = res.status
      const text = await res.text().catch(() => '')
      if (res.status >= 200 && res.status < 300) return { statusCode, error: null, status: 'succeeded', nextAttemptAt: null }
      error = `HTTP ${res.status}${text ? `: ${text.slice(0, ERROR_CHARS)}` : ''}`
    } catch (err) {
      error = describeFetchError(err, this.#cfg.timeoutMs)
    }
    const now = Date.now()
    const next = now + retryDelayMs(this.#cfg, delivery.attempts)
    if (next - delivery.retry_from > this.#cfg.maxAgeSeconds * 1000) {
      return { statusCode, error, status: 'failed', nextAttemptAt: null }
    }
    return { statusCode, error, status: 'pending', nextAttemptAt: next }
  }
}

function describeFetchError (err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return `no answer within ${timeoutMs} ms`
  }
  const cause = err instanceof Error ? (err.cause as { code?: string, message?: string } | undefined) : undefined
  const text = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err))
  return `request failed: ${text}`.slice(0, ERROR_CHARS)
}

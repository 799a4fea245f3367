// The service process: store + HTTP API + (by default) the runner, with graceful shutdown.
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import type { Config } from './config.js'
import { openContext, type AppContext } from './context.js'
import { existingFileIds } from './files/files.store.js'
import { Runner } from './runner/runner.js'
import { WebhookDelivery } from './webhooks/delivery.js'

export interface Service {
  app: FastifyInstance
  ctx: AppContext
  runner: Runner | null
  webhooks: WebhookDelivery | null
  url: string
  close: () => Promise<void>
}

const SWEEP_EVERY_MS = 5 * 60 * 1000

export async function startService (config: Readonly<Config>): Promise<Service> {
  const ctx = await openContext(config)
  const app = await buildApp(ctx)
  const sweep = async (staleSeconds: number) => {
    const removed = await ctx.blobs.sweep(staleSeconds, ids => existingFileIds(ctx.db, ids))
    if (removed > 0) app.log.info({ removed }, 'removed abandoned uploads')
  }
  await sweep(config.uploadStaleSeconds)
  // While serving, an upload in progress must never look stale: at least a minute, whatever the setting.
  const timer = setInterval(() => { sweep(Math.max(60, config.uploadStaleSeconds)).catch(err => app.log.error({ err }, 'upload sweep failed')) }, SWEEP_EVERY_MS)
  timer.unref()
  const url = await app.listen({ host: config.host, port: config.port })
  const runner = config.runner && config.maxConcurrentJobs > 0 ? new Runner(ctx, { log: app.log }) : null
  runner?.start()
  // webhooks of jobs that ended are sent from the outbox, those a previous process left first
  const webhooks = config.webhooks.deliver ? new WebhookDelivery(ctx, { log: app.log }) : null
  webhooks?.start()
  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      clearInterval(timer)
      // Trainers get SIGTERM and save resumable state while the API finishes its requests.
      const stopping = runner?.stop()
      // app.close() stops accepting and lets requests in flight finish, but a client that stalls
      // mid-upload would hold it (and the process) forever: cut whatever is still open after the grace.
      const cutOff = setTimeout(() => { app.server.closeAllConnections() }, config.shutdownGraceSeconds * 1000)
      try { await app.close() } finally { clearTimeout(cutOff) }
      await stopping
      await webhooks?.stop()
      await ctx.store.close()
    })()
    return closing
  }
  return { app, ctx, runner, webhooks, url, close }
}

/** The runner alone, for machines that train for an API elsewhere (same database and data dir). */
export async function startRunnerOnly (config: Readonly<Config>): Promise<Service> {
  const ctx = await openContext(config)
  const app = await buildApp(ctx) // not listening: it only lends its logger and plugins' lifecycle
  const runner = new Runner(ctx, { log: app.log })
  runner.start()
  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => { await runner.stop(); await app.close(); await ctx.store.close() })()
    return closing
  }
  return { app, ctx, runner, webhooks: null, url: '', close }
}

// Synchronous faults leave the process where running JS listeners is unsafe (Node's docs on
// signal events): they keep their default action instead of starting a graceful close.
const FAULT_SIGNALS = ['SIGILL', 'SIGTRAP', 'SIGABRT', 'SIGBUS', 'SIGFPE', 'SIGSEGV'] as const

/**
 * SIGTERM, SIGINT, SIGHUP…: finish what is in flight, then exit 0; a second signal exits 1 at once.
 * An uncaught error closes the same way, then exits 1 (trainers still save resumable state).
 * close-with-grace's `delay` is off: it is a deadline for the whole close that then exits 1, where
 * OPENTUNE_SHUTDOWN_GRACE_SECONDS (startService's close) cuts only the HTTP requests still open,
 * lets the trainers finish saving, and exits 0.
 */
export function closeOnSignals (service: Service): void {
  const log = service.app.log
  const logger = { error: (m: unknown) => { if (typeof m === 'string') log.error(m); else log.error({ err: m }, 'shutdown failed') } }
  closeWithGrace({ delay: false, logger, skip: [...FAULT_SIGNALS] }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'uncaught error, shutting down')
    else log.info({ signal }, 'shutting down')
    await service.close()
  })
}

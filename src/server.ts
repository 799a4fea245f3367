// The service process: store + HTTP API + (by default) the runner, with graceful shutdown.
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import type { Config } from './config.js'
import { openContext, type AppContext } from './context.js'
import { existingFileIds } from './files/files.store.js'
import { Runner } from './runner/runner.js'

export interface Service {
  app: FastifyInstance
  ctx: AppContext
  runner: Runner | null
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
      await ctx.store.close()
    })()
    return closing
  }
  return { app, ctx, runner, url, close }
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
  return { app, ctx, runner, url: '', close }
}

/** SIGTERM/SIGINT: finish what is in flight, then exit; a second signal exits at once. */
export function closeOnSignals (service: Service): void {
  let stopping = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1)
    stopping = true
    service.app.log.info({ signal }, 'shutting down')
    service.close().then(() => process.exit(0), (err: unknown) => {
      service.app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
}

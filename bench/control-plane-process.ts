// One process of bench/control-plane.ts, started by it over IPC: `api` (the service with its runner
// off, as `opentune serve` with OPENTUNE_RUNNER=0) or `runner` (a runner, as `opentune runner`, on the
// scripted trainer double test/fixtures/fake-trainer.mjs). Configured by the environment it is given
// (loadConfig); answers 'stats' with how busy its event loop was since the last 'stats', ends on 'close'.
import { join } from 'node:path'
import { monitorEventLoopDelay, performance, type EventLoopUtilization } from 'node:perf_hooks'
import pino from 'pino'
import { loadConfig } from '../src/config.js'
import { openContext } from '../src/context.js'
import { Runner } from '../src/runner/runner.js'
import { startService } from '../src/server.js'

export interface ProcessStats {
  /** Share of the time the event loop was busy (0-1): near 1, this process is the bottleneck. */
  elu: number
  delayP99Ms: number
}

export type ToParent = { type: 'ready', url?: string } | { type: 'stats', stats: ProcessStats }

const FAKE_TRAINER = join(import.meta.dirname, '..', 'test', 'fixtures', 'fake-trainer.mjs')
const send = (m: ToParent) => { process.send?.(m) }

async function main (role: string): Promise<void> {
  const config = loadConfig()
  let close: () => Promise<void>
  if (role === 'api') {
    const service = await startService(config)
    close = service.close
    send({ type: 'ready', url: service.url })
  } else if (role === 'runner') {
    const ctx = await openContext(config)
    const log = pino({ level: config.logLevel })
    const runner = new Runner(ctx, { log, trainerCommand: [process.execPath, FAKE_TRAINER] })
    runner.start()
    close = async () => { await runner.stop(); await ctx.store.close() }
    send({ type: 'ready' })
  } else {
    throw new Error(`unknown role ${role}`)
  }
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  let elu: EventLoopUtilization = performance.eventLoopUtilization()
  process.on('message', (m: string) => {
    if (m === 'stats') {
      const since = performance.eventLoopUtilization(elu)
      elu = performance.eventLoopUtilization()
      send({ type: 'stats', stats: { elu: since.utilization, delayP99Ms: delay.percentile(99) / 1e6 } })
      delay.reset()
    } else if (m === 'close') {
      close().then(() => process.exit(0), (err: unknown) => { console.error(err); process.exit(1) })
    }
  })
  process.on('disconnect', () => { void close().finally(() => process.exit(0)) })
}

main(process.argv[2] ?? '').catch((err: unknown) => { console.error(err); process.exit(1) })

// Logging: one line per request (Fastify's own two are off), written to stdout in 4 KiB batches.
import { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import pino from 'pino'

/**
 * The logger options for Fastify(): `given` (tests pass their own) or the buffered stdout logger at
 * `level`. `stop` flushes what is buffered; buildApp calls it when the app closes.
 */
export function appLogger (level: string, given?: FastifyServerOptions['logger']): Pick<FastifyServerOptions, 'logger' | 'logController'> & { stop?: () => void } {
  const logController = new LogController({ disableRequestLogging: true }) // logRequests writes the one line
  if (given !== undefined) return { logger: given, logController }
  const out = bufferedStdout()
  return { logger: { level, stream: out.stream }, logController, stop: out.stop }
}

/** The access line: method, path without the query (it may hold ids and cursors), status, ms. */
export function logRequests (app: FastifyInstance): void {
  // A callback hook, not an async one: no promise per request on the hot path.
  app.addHook('onResponse', (request, reply, done) => {
    const q = request.url.indexOf('?')
    request.log.info({ method: request.method, url: q < 0 ? request.url : request.url.slice(0, q), status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request')
    done()
  })
}

// Log lines go out 4 KiB at a time and at least every second, not one write(2) per line: that write
// was 11 µs of the 65 µs of CPU a checkpoint GET took (docs/benchmarks.md). The 4 KiB writes are
// synchronous: sonic-boom's async mode (thread-pool writes, growing string buffers) cost ~10 µs more
// per request under sustained load. Flushed on close and at exit; a SIGKILL loses at most a second.
function bufferedStdout () {
  const stream = pino.destination({ dest: 1, sync: true, minLength: 4096 })
  const timer = setInterval(() => { stream.flush() }, 1000)
  timer.unref()
  return { stream, stop: () => { clearInterval(timer); stream.flushSync() } }
}

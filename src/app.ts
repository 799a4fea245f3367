// buildApp: the whole HTTP API as a Fastify instance that never listens (server.ts does; tests inject).
import { randomBytes } from 'node:crypto'
import multipart from '@fastify/multipart'
import swagger from '@fastify/swagger'
import Fastify, { LogController, type FastifyInstance, type FastifyRequest, type FastifyServerOptions, type onRequestHookHandler } from 'fastify'
import pino from 'pino'
import sjson from 'secure-json-parse'
import type { AppContext } from './context.js'
import { errors, InvalidJsonError } from './errors.js'
import { makeAuthenticator } from './http/auth.js'
import { installErrorHandlers, sendError } from './http/error-handler.js'
import { schemaCompiler } from './http/validation.js'
import { filesRoutes, MAX_FORM_FIELDS } from './files/files.routes.js'
import { jobsRoutes } from './fine-tuning/jobs.routes.js'
import { modelsRoutes } from './models/models.routes.js'

export interface BuildOptions {
  logger?: FastifyServerOptions['logger']
}

const REQUEST_ID = /^[\w.:-]{1,128}$/

export async function buildApp (ctx: AppContext, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const log = opts.logger === undefined ? bufferedStdout() : undefined
  const app = Fastify({
    logger: opts.logger ?? { level: ctx.config.logLevel, stream: log?.stream },
    logController: new LogController({ disableRequestLogging: true }), // one line per request, written in onResponse below
    bodyLimit: ctx.config.maxJsonBodyBytes,
    routerOptions: { maxParamLength: 20_000 }, // long ids reach the handler and get the same 404 as any unknown id
    requestIdHeader: false,
    // Requests that still arrive on open connections while shutting down are served, with our error
    // bodies, rather than answered by Fastify's own 503 body.
    return503OnClosing: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : `req_${randomHex24()}`
    },
    ajv: { customOptions: { strict: false } },
    // a URL that cannot be decoded (`/v1/files/%E0%A4%A`) gets our error body, not Fastify's
    frameworkErrors: (err, _request, reply) => { void sendError(reply, errors.badUrl(err.message)) },
  })
  if (log) app.addHook('onClose', async () => { log.stop() })
  app.setValidatorCompiler(schemaCompiler)
  installErrorHandlers(app)
  installJsonParser(app)

  app.decorateRequest('projectId', '')
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id)
    done()
  })
  // A callback hook, not an async one: no promise per request on the hot path.
  app.addHook('onResponse', (request, reply, done) => {
    const q = request.url.indexOf('?')
    request.log.info({ method: request.method, url: q < 0 ? request.url : request.url.slice(0, q), status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request')
    done()
  })

  await app.register(multipart, {
    // above the route's own counts (files.routes.ts readUploadForm): hitting these can stall a file part
    limits: { fileSize: ctx.config.maxUploadBytes, files: 2, fields: 4 * MAX_FORM_FIELDS, fieldSize: 64 * 1024, parts: 8 * MAX_FORM_FIELDS },
    throwFileSizeLimit: true,
  })
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'opentune', description: 'Nebius/OpenAI-compatible fine-tuning API', version: '0.1.0' },
      components: { securitySchemes: { HTTPBearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ HTTPBearer: [] }],
    },
  })

  app.get('/health', { schema: { hide: true } }, async () => ({ status: 'ok' }))
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  await app.register(async (api) => {
    // The hook belongs to the routes of this plugin, whatever spelling of the URL reached them
    // (`/%761/files` is routed to /v1/files): a raw-URL prefix test let those through unauthenticated.
    api.addHook('onRequest', authenticateHook(makeAuthenticator(ctx.db)))
    await api.register(filesRoutes, { ctx })
    await api.register(jobsRoutes, { ctx })
    await api.register(modelsRoutes, { ctx })
  })
  return app
}

// Before the body is read: an anonymous upload is never streamed to disk. A callback hook, so a
// request whose key was seen a moment ago costs no promise.
function authenticateHook (authenticate: (request: FastifyRequest) => Promise<void> | undefined): onRequestHookHandler {
  return (request, _reply, done) => {
    let pending: Promise<void> | undefined
    try {
      pending = authenticate(request)
      if (pending === undefined) checkContentType(request)
    } catch (err) {
      done(err as Error)
      return
    }
    if (pending === undefined) done()
    else pending.then(() => { checkContentType(request); done() }).catch((err: Error) => { done(err) })
  }
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

// randomBytes(12) per request was 3-4% of a checkpoint GET's CPU (docs/benchmarks.md): it is the
// call, not the bytes, that costs, so they are drawn 4 KiB at a time.
let pool = Buffer.alloc(0)
let used = 0
function randomHex24 (): string {
  if (used + 12 > pool.length) { pool = randomBytes(4096); used = 0 }
  used += 12
  return pool.toString('hex', used - 12, used)
}

function checkContentType (request: FastifyRequest): void {
  if (request.method !== 'POST' || !hasBody(request.headers)) return
  const type = request.headers['content-type'] ?? ''
  const wanted = request.routeOptions.url === '/v1/files' ? 'multipart/form-data' : 'application/json'
  if (!type.toLowerCase().startsWith(wanted)) throw errors.unsupportedMediaType(type, wanted)
}

function hasBody (headers: Record<string, unknown>): boolean {
  return headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0
}

const MAX_JSON_DEPTH = 32

/** Whether `value` nests objects/arrays more than `max` deep; iterative, so any depth is safe. */
function deeperThan (value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number]
    if (v === null || typeof v !== 'object') continue
    if (depth > max) return true
    for (const child of Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1])
  }
  return false
}

// An empty JSON body (POST …/cancel from some clients) is no body at all, as FastAPI treats it.
// Parse errors keep JSON.parse's message, which names the position (the 422 `loc`).
function installJsonParser (app: FastifyInstance): void {
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = body.toString()
    if (text.trim() === '') { done(null, undefined); return }
    let value: unknown
    try {
      value = sjson.parse(text, { protoAction: 'error', constructorAction: 'ignore' })
    } catch (err) {
      done(new InvalidJsonError((err as Error).message), undefined)
      return
    }
    // Unknown keys are stored and echoed: a 100,000-deep one overflowed the stack when the job was
    // serialised (500), and a few thousand levels broke clients that parse the job list.
    if (deeperThan(value, MAX_JSON_DEPTH)) done(new InvalidJsonError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), undefined)
    else done(null, value)
  })
}

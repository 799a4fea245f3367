// buildApp: the whole HTTP API as a Fastify instance that never listens (server.ts does; tests
// inject). It only composes: each piece of HTTP glue lives in src/http/, each route set in its feature.
import multipart from '@fastify/multipart'
import swagger from '@fastify/swagger'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { AppContext } from './context.js'
import { errors } from './errors.js'
import { authenticateHook } from './http/auth.js'
import { checkBodyType } from './http/body-type.js'
import { registerDashboard } from './http/dashboard.js'
import { answerWhatNodeWould, clientErrorOptions } from './http/client-errors.js'
import { installErrorHandlers, sendError } from './http/error-handler.js'
import { installJsonParser } from './http/json-body.js'
import { echoRequestId, requestIdOptions } from './http/request-id.js'
import { appLogger, logRequests } from './http/request-log.js'
import { schemaCompiler } from './http/validation.js'
import { deploymentsRoutes } from './deployments/deployments.routes.js'
import { filesRoutes, MAX_FORM_FIELDS } from './files/files.routes.js'
import { jobsRoutes } from './fine-tuning/jobs.routes.js'
import { metricsRoutes } from './fine-tuning/metrics.routes.js'
import type { DeployCheck } from './inference/served-model.js'
import { modelsRoutes } from './models/models.routes.js'
import { EngineWorker } from './inference/engine-worker.js'
import { inferenceRoutes } from './inference/inference.routes.js'
import { makeVllmBackend } from './inference/vllm.js'
import { webhooksRoutes } from './webhooks/webhooks.routes.js'

export interface BuildOptions {
  logger?: FastifyServerOptions['logger']
  /** The inference backend's check that it can serve a deployment (POST /v0/models validation). */
  checkDeployable?: DeployCheck
}

export async function buildApp (ctx: AppContext, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const { stop: stopLog, ...logging } = appLogger(ctx.config.logLevel, opts.logger)
  const app = Fastify({
    ...logging,
    ...requestIdOptions,
    ...clientErrorOptions,
    bodyLimit: ctx.config.maxJsonBodyBytes,
    routerOptions: { maxParamLength: 20_000 }, // long ids reach the handler and get the same 404 as any unknown id
    // Requests that still arrive on open connections while shutting down are served, with our error
    // bodies, rather than answered by Fastify's own 503 body.
    return503OnClosing: false,
    ajv: { customOptions: { strict: false } },
    // a URL that cannot be decoded (`/v1/files/%E0%A4%A`) gets our error body, not Fastify's
    frameworkErrors: (err, _request, reply) => { void sendError(reply, errors.badUrl(err.message)) },
  })
  if (stopLog) app.addHook('onClose', async () => { stopLog() })
  app.setValidatorCompiler(schemaCompiler)
  installErrorHandlers(app)
  installJsonParser(app)
  app.decorateRequest('projectId', '')
  echoRequestId(app)
  answerWhatNodeWould(app)
  logRequests(app)

  await app.register(multipart, {
    // above the route's own counts (files.routes.ts readUploadForm): hitting these can stall a file part
    limits: {
      fileSize: ctx.config.maxUploadBytes,
      files: 2,
      fields: 4 * MAX_FORM_FIELDS,
      fieldSize: 64 * 1024,
      parts: 8 * MAX_FORM_FIELDS,
    },
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

  // the embedded inference worker starts on the first completion request and stops with the app
  // (OPENTUNE_INFERENCE=vllm: requests go to that server instead, and deployments are checked against it)
  const engine = new EngineWorker(ctx.config, app.log)
  app.addHook('onClose', async () => { await engine.close() })
  const vllm = ctx.config.inference.engine === 'vllm' ? makeVllmBackend(ctx.config) : null

  app.get('/health', { schema: { hide: true } }, async () => ({ status: 'ok' }))
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  await registerDashboard(app) // the web dashboard at `/`, unauthenticated static files (src/http/dashboard.ts)
  await app.register(async (api) => {
    // The hooks belong to the routes of this plugin, whatever spelling of the URL reached them
    // (`/%761/files` is routed to /v1/files): a raw-URL prefix test let those through unauthenticated.
    // In this order: a request without a valid key gets the 401, whatever its body.
    api.addHook('onRequest', authenticateHook(ctx.db))
    // only POST routes take a body: the GETs (the checkpoint GET is the hot path) skip this hook
    api.addHook('onRoute', (route) => {
      if (route.method !== 'POST') return
      route.onRequest = [...[route.onRequest ?? []].flat(), checkBodyType]
    })
    await api.register(filesRoutes, { ctx })
    await api.register(jobsRoutes, { ctx })
    await api.register(metricsRoutes, { ctx })
    await api.register(modelsRoutes, { ctx })
    await api.register(inferenceRoutes, { ctx, engine, vllm })
    await api.register(deploymentsRoutes, { ctx, checkDeployable: opts.checkDeployable ?? vllm?.checkDeployable })
    await api.register(webhooksRoutes, { ctx })
  })
  return app
}

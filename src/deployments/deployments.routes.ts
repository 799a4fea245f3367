// Deployments — Nebius Token Factory's custom models (/v0/models): a checkpoint of the project made a
// named model for inference. Handlers validate, call, map; validation runs after the reply.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import type { DeployCheck } from '../inference/served-model.js'
import { CustomModel, CustomModelInfo, CustomModelList, DeploymentCreateBody, DeploymentQuery } from './deployments.schemas.js'
import { createDeployment, deleteDeployment, deploymentRowToApi, validateDeployment } from './deployments.service.js'
import { type DeploymentRow, getDeployment, listDeployments, validatingDeployments } from './deployments.store.js'

export interface DeploymentsOptions {
  ctx: AppContext
  /** The inference backend's check that it can serve a deployment (served-model.ts DeployCheck). */
  checkDeployable?: DeployCheck | undefined
}

export const deploymentsRoutes: FastifyPluginAsyncTypebox<DeploymentsOptions> = async (app, opts) => {
  const { ctx, checkDeployable } = opts
  const { db } = ctx

  // Validations in flight: app.close() waits for them, so none writes to a closed store.
  const pending = new Set<Promise<void>>()
  const validateLater = (row: DeploymentRow): void => {
    const run = validateDeployment(ctx, row, checkDeployable, (err) => {
      app.log.error({ err, deployment: row.name }, 'deployment validation failed unexpectedly')
    }).then((done) => {
      if (done) app.log.info({ deployment: done.name, status: done.status }, 'deployment validated')
    }, (err: unknown) => {
      app.log.error({ err, deployment: row.name }, 'storing a deployment\'s validation failed')
    }).finally(() => { pending.delete(run) })
    pending.add(run)
  }
  app.addHook('onClose', async () => { await Promise.allSettled([...pending]) })
  // A server stopped while a deployment validated validates it again when it starts (idempotent:
  // the folders are linked once, and only a row still validating takes the outcome).
  app.addHook('onReady', async () => {
    for (const row of await validatingDeployments(db)) validateLater(row)
  })

  // the name in the path: `meta-llama/Llama-3.1-8B-LoRa:qa-Ab3x`, its '/' and ':' sent as they are or
  // percent-encoded (the router decodes a wildcard, %2F included)
  const nameOf = (params: unknown) => (params as { '*': string })['*']

  app.post('/v0/models', {
    schema: {
      summary: 'Create a custom model',
      querystring: DeploymentQuery,
      body: DeploymentCreateBody,
      response: { 200: CustomModel },
    },
  }, async (request) => {
    const row = await createDeployment(ctx, request.projectId, request.body)
    request.log.info({ deployment: row.name, source: row.source }, 'deployment created')
    validateLater(row)
    return deploymentRowToApi(row)
  })

  app.get('/v0/models', {
    schema: { summary: 'List custom models', querystring: DeploymentQuery, response: { 200: CustomModelList } },
  }, async (request) => (await listDeployments(db, request.projectId)).map(deploymentRowToApi))

  app.get('/v0/models/*', {
    schema: { summary: 'Get a custom model', querystring: DeploymentQuery, response: { 200: CustomModelInfo } },
  }, async (request) => {
    const name = nameOf(request.params)
    const row = await getDeployment(db, request.projectId, name)
    if (!row) throw errors.deploymentNotFound(name)
    return deploymentRowToApi(row)
  })

  app.delete('/v0/models/*', {
    schema: { summary: 'Delete a custom model', querystring: DeploymentQuery, response: { 200: CustomModelInfo } },
  }, async (request) => deploymentRowToApi(await deleteDeployment(ctx, request.projectId, nameOf(request.params))))
}

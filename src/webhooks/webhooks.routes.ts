// /v1/webhooks: a project's webhook endpoints and their deliveries (docs/integrations.md#webhooks).
// An opentune extension: OpenAI configures webhooks in its dashboard; the events sent are its
// (https://platform.openai.com/docs/guides/webhooks). Handlers validate, call, map.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import {
  DeliveryListQuery, DeliveryParams, EndpointParams, WebhookCreateBody, WebhookDelivery, WebhookDeliveryList,
  WebhookEndpoint, WebhookEndpointCreated, WebhookEndpointDeleted, WebhookEndpointList, WebhookQuery,
} from './webhooks.schemas.js'
import { createEndpoint, deliveryRowToApi, endpointRowToApi, replayDelivery } from './webhooks.service.js'
import { deleteEndpoint, getEndpoint, listDeliveries, listEndpoints } from './webhooks.store.js'

export const webhooksRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { db } = ctx

  app.post('/v1/webhooks', {
    schema: {
      summary: 'Create a webhook endpoint (its secret is in this reply only)',
      querystring: WebhookQuery,
      body: WebhookCreateBody,
      response: { 200: WebhookEndpointCreated },
    },
  }, async (request) => {
    const row = await createEndpoint(db, request.projectId, request.body)
    request.log.info({ webhook: row.id }, 'webhook endpoint created')
    return { ...endpointRowToApi(row), secret: row.secret }
  })

  app.get('/v1/webhooks', {
    schema: { summary: 'List webhook endpoints', querystring: WebhookQuery, response: { 200: WebhookEndpointList } },
  }, async (request) => ({
    object: 'list' as const,
    data: (await listEndpoints(db, request.projectId)).map(endpointRowToApi),
    has_more: false,
  }))

  app.get('/v1/webhooks/:webhook_id', {
    schema: {
      summary: 'Get a webhook endpoint',
      params: EndpointParams,
      querystring: WebhookQuery,
      response: { 200: WebhookEndpoint },
    },
  }, async (request) => {
    const row = await getEndpoint(db, request.projectId, request.params.webhook_id)
    if (!row) throw errors.webhookNotFound(request.params.webhook_id)
    return endpointRowToApi(row)
  })

  app.delete('/v1/webhooks/:webhook_id', {
    schema: {
      summary: 'Remove a webhook endpoint (its pending deliveries are dropped)',
      params: EndpointParams,
      querystring: WebhookQuery,
      response: { 200: WebhookEndpointDeleted },
    },
  }, async (request) => {
    const id = request.params.webhook_id
    if (!await deleteEndpoint(db, request.projectId, id)) throw errors.webhookNotFound(id)
    return { id, object: 'webhook_endpoint.deleted' as const, deleted: true as const }
  })

  app.get('/v1/webhooks/:webhook_id/deliveries', {
    schema: {
      summary: 'List the latest deliveries of a webhook endpoint, newest first',
      params: EndpointParams,
      querystring: DeliveryListQuery,
      response: { 200: WebhookDeliveryList },
    },
  }, async (request) => {
    const id = request.params.webhook_id
    if (!await getEndpoint(db, request.projectId, id)) throw errors.webhookNotFound(id)
    const limit = request.query.limit ?? 20
    const rows = await listDeliveries(db, id, limit)
    return { object: 'list' as const, data: rows.slice(0, limit).map(deliveryRowToApi), has_more: rows.length > limit }
  })

  app.post('/v1/webhooks/:webhook_id/deliveries/:delivery_id/replay', {
    schema: {
      summary: 'Send a delivery again (re-queued at once, with the same webhook-id)',
      params: DeliveryParams,
      querystring: WebhookQuery,
      response: { 200: WebhookDelivery },
    },
  }, async (request) => {
    const { webhook_id: webhookId, delivery_id: deliveryId } = request.params
    return deliveryRowToApi(await replayDelivery(db, request.projectId, webhookId, deliveryId))
  })
}

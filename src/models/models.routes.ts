// Models — https://platform.openai.com/docs/api-reference/models: base models that can be
// fine-tuned, this project's fine-tuned checkpoints and its active deployments (each usable as a
// `model` for /v1/chat/completions).
import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { listDeployments } from '../deployments/deployments.store.js'
import { checkpointModels } from '../fine-tuning/checkpoints.store.js'

const Model = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
}, { additionalProperties: true })

const ModelList = Type.Object({ object: Type.Literal('list'), data: Type.Array(Model) })

export const modelsRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const allModels = async (projectId: string) => {
    const base = ctx.models.list().map(m => ({ id: m.id, object: 'model' as const, created: m.createdAt, owned_by: 'opentune' }))
    // a spec-draft job's drafters are not models to call or fine-tune (docs/api.md): not listed
    const tuned = (await checkpointModels(ctx.db, projectId)).filter(t => !t.drafter)
    const deployed = (await listDeployments(ctx.db, projectId)).filter(d => d.status === 'active').reverse()
    return [
      ...base,
      ...tuned.map(t => ({ id: t.name, object: 'model' as const, created: t.createdAt, owned_by: projectId })),
      ...deployed.map(d => ({ id: d.name, object: 'model' as const, created: d.created_at, owned_by: projectId })),
    ]
  }

  app.get('/v1/models', { schema: { summary: 'List models', response: { 200: ModelList } } }, async (request) => {
    return { object: 'list' as const, data: await allModels(request.projectId) }
  })

  app.get('/v1/models/*', { schema: { summary: 'Retrieve a model', response: { 200: Model } } }, async (request) => {
    const id = (request.params as { '*': string })['*'] // already decoded by the router
    const model = (await allModels(request.projectId)).find(m => m.id === id)
    if (!model) throw errors.modelNotFound(id)
    return model
  })
}

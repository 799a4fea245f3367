// Bearer-key authentication for every /v1 route: resolves the key to its project before the body
// is read, so an unauthenticated upload is refused without streaming it to disk.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import type { Database } from '../db/database.js'
import { errors } from '../errors.js'
import { authenticate } from '../projects/keys.store.js'

declare module 'fastify' {
  interface FastifyRequest {
    projectId: string
  }
}

export function installAuth (app: FastifyInstance, db: Kysely<Database>): void {
  app.decorateRequest('projectId', '')
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1/')) return
    const key = bearerToken(request)
    if (key === null) throw errors.missingApiKey()
    const projectId = await authenticate(db, key)
    if (projectId === null) throw errors.invalidApiKey()
    request.projectId = projectId
    const asked = (request.query as Record<string, unknown> | undefined)?.ai_project_id
    // A project id that is not the key's own answers like one that does not exist.
    if (typeof asked === 'string' && asked !== '' && asked !== projectId) throw errors.projectNotFound(asked)
  })
}

function bearerToken (request: FastifyRequest): string | null {
  const header = request.headers.authorization
  if (typeof header !== 'string') return null
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m?.[1] ?? null
}

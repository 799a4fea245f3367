// Bearer-key authentication for every /v1 route: resolves the key to its project before the body
// is read, so an unauthenticated upload is refused without streaming it to disk.
import type { FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import type { Database } from '../db/database.js'
import { errors } from '../errors.js'
import { authenticate } from '../projects/keys.store.js'

declare module 'fastify' {
  interface FastifyRequest {
    projectId: string
  }
}

/** Sets request.projectId from the bearer key of a /v1 request, or throws the 401/404. */
export function makeAuthenticator (db: Kysely<Database>): (request: FastifyRequest) => Promise<void> {
  return async (request) => {
    if (!request.url.startsWith('/v1/')) return
    const key = bearerToken(request)
    if (key === null) throw errors.missingApiKey()
    const projectId = await authenticate(db, key)
    if (projectId === null) throw errors.invalidApiKey()
    request.projectId = projectId
    const asked = (request.query as Record<string, unknown> | undefined)?.ai_project_id
    // A project id that is not the key's own answers like one that does not exist.
    if (typeof asked === 'string' && asked !== '' && asked !== projectId) throw errors.projectNotFound(asked)
  }
}

function bearerToken (request: FastifyRequest): string | null {
  const header = request.headers.authorization
  if (typeof header !== 'string') return null
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m?.[1] ?? null
}

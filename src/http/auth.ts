// Bearer-key authentication for every /v1 route: resolves the key to its project before the body
// is read, so an unauthenticated upload is refused without streaming it to disk.
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import type { Kysely } from 'kysely'
import type { Database } from '../db/database.js'
import { errors } from '../errors.js'
import { authenticate, recentlyAuthenticated } from '../projects/keys.store.js'

declare module 'fastify' {
  interface FastifyRequest {
    projectId: string
  }
}

/**
 * The onRequest hook of the /v1 routes: before the body is read, so an anonymous upload is never
 * streamed to disk. A callback hook, so a request whose key was seen a moment ago costs no promise.
 */
export function authenticateHook (db: Kysely<Database>): onRequestHookHandler {
  const authenticate = makeAuthenticator(db)
  return (request, _reply, done) => {
    let pending: Promise<void> | undefined
    try {
      pending = authenticate(request)
    } catch (err) {
      done(err as Error)
      return
    }
    if (pending === undefined) done()
    else pending.then(() => { done() }, (err: Error) => { done(err) })
  }
}

/**
 * Sets request.projectId from the request's bearer key, or throws the 401/404. Returns undefined
 * when that was decided without waiting (a key seen in the last seconds), else a promise: the hot
 * path allocates no promise.
 */
function makeAuthenticator (db: Kysely<Database>): (request: FastifyRequest) => Promise<void> | undefined {
  const accept = (request: FastifyRequest, projectId: string | null): void => {
    if (projectId === null) throw errors.invalidApiKey()
    request.projectId = projectId
    const asked = (request.query as Record<string, unknown> | undefined)?.ai_project_id
    // One rule for every /v1 route, here and not in each route's schema (routes without a query
    // schema let a repeated one through unchecked): repeated → 422, whatever the values; a project
    // id that is not the key's own → 404, as one that does not exist.
    if (Array.isArray(asked)) throw errors.repeatedQuery('ai_project_id', asked)
    if (typeof asked === 'string' && asked !== '' && asked !== projectId) throw errors.projectNotFound(asked)
  }
  return (request) => {
    const key = bearerToken(request)
    if (key === null) throw errors.missingApiKey()
    const known = recentlyAuthenticated(db, key)
    if (known !== undefined) {
      accept(request, known)
      return undefined
    }
    return authenticate(db, key).then(projectId => accept(request, projectId))
  }
}

function bearerToken (request: FastifyRequest): string | null {
  const header = request.headers.authorization
  if (typeof header !== 'string') return null
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m?.[1] ?? null
}

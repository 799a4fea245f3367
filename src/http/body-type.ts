// The body type a route takes, defined once: application/json unless the route's schema lists
// another in `consumes` (the list the OpenAPI document shows; POST /v1/files says multipart).
// The check before the body is read and every 415 name the same type.
import type {} from '@fastify/swagger' // adds `consumes` to FastifySchema
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import { errors } from '../errors.js'

export function expectedBodyType (request: FastifyRequest): string {
  return request.routeOptions.schema?.consumes?.[0] ?? 'application/json'
}

/**
 * onRequest, after authentication: a POST whose body is of another type is refused before it is
 * read (a JSON body would otherwise parse, and a form sent to a JSON route would be left unread).
 * A callback hook: no promise per request.
 */
export const checkBodyType: onRequestHookHandler = (request, _reply, done) => {
  if (request.method !== 'POST' || !hasBody(request.headers)) { done(); return }
  const type = request.headers['content-type'] ?? ''
  const wanted = expectedBodyType(request)
  if (type.toLowerCase().startsWith(wanted)) done()
  else done(errors.unsupportedMediaType(type, wanted))
}

function hasBody (headers: Record<string, unknown>): boolean {
  return headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0
}

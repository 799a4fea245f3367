// Maps everything a route can throw to one error body (src/errors.ts) and hides internals on 5xx.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ApiError, errors, InvalidJsonError } from '../errors.js'
import { isStorageFull } from '../files/storage-full.js'
import { expectedBodyType } from './body-type.js'
import { validationError } from './validation.js'

export function installErrorHandlers (app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const apiError = toApiError(err, request)
    // A client that hung up mid-upload is not a server error (the temp file is already gone).
    if (clientGone(request, reply)) request.log.info({ reason: err.message, code: err.code }, 'client disconnected')
    else if (apiError.status >= 500) request.log.error({ err }, 'request failed') // err: message and stack
    else request.log.info({ code: apiError.code, status: apiError.status }, apiError.message)
    return sendError(reply, apiError)
  })
  app.setNotFoundHandler((request, reply) => sendError(reply, errors.routeNotFound(request.method, request.url.split('?')[0] ?? '')))
}

/**
 * Whether the connection is gone, so nothing can be answered. Not `request.raw.destroyed`: that is
 * true as soon as a body has been read (the stream ends and auto-destroys), which had every failing
 * POST, real 500s included, logged as a disconnect. The response closes only with the socket.
 */
function clientGone (request: FastifyRequest, reply: FastifyReply): boolean {
  return reply.raw.destroyed || request.raw.socket?.destroyed === true
}

export function sendError (reply: FastifyReply, err: ApiError): FastifyReply {
  if (err.status === 401) void reply.header('www-authenticate', 'Bearer')
  // The openai SDKs retry every 409 (as a lock timeout) unless told not to; ours state a fact
  // about the resource, so a retry only delays the same answer by ~1.5 s.
  // A full disk (507) stays full for a retry too; the SDK would resend a whole upload.
  if (err.status === 409 || err.status === 507) void reply.header('x-should-retry', 'false')
  if (err.retryAfter !== null) void reply.header('retry-after', String(err.retryAfter))
  return reply.code(err.status).type('application/json; charset=utf-8').send(err.toBody())
}

function toApiError (err: FastifyError, request: FastifyRequest): ApiError {
  if (err instanceof ApiError) return err
  if (err instanceof InvalidJsonError) return err.toApiError()
  if (isStorageFull(err)) return errors.storageFull()
  if (err.validation) {
    const ctx = err.validationContext
    const data = ctx === 'querystring' ? request.query : ctx === 'params' ? request.params : ctx === 'headers' ? request.headers : request.body
    return validationError(err, data)
  }
  switch (err.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.validation([{ loc: ['body'], msg: 'Field required', type: 'missing', input: null }])
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.bodyTooLarge(request.routeOptions.bodyLimit ?? 0)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return errors.unsupportedMediaType(request.headers['content-type'], expectedBodyType(request))
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new ApiError(err.statusCode, 'invalid_request_error', (err.code ?? 'bad_request').toLowerCase(), err.message)
  }
  return errors.internal(String(request.id))
}

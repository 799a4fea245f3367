// What Node's HTTP server answers by itself, before Fastify sees a request — a request line and headers
// over the limit, unparsable HTTP, a timeout, CONNECT, `Expect:` other than 100-continue, HTTP/1.1
// without Host — gets our error body (src/errors.ts) too. Node and Fastify answered those with bodies
// of their own, or none, or (CONNECT) by closing the connection without a word.
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyHttpOptions, FastifyInstance } from 'fastify'
import { type ApiError, errors } from '../errors.js'
import { newRequestId } from './request-id.js'

// Node's default is 16 KiB, which counts the URL: `/v1/files/<20,000 characters>` was a 431 although
// maxParamLength (app.ts) lets ids that long reach the handler and get the 404 any unknown id gets.
// 64 KiB fits two such ids (a checkpoint URL) and ordinary headers.
export const MAX_HEADER_BYTES = 64 * 1024

// Time a client gets to read the answer before the connection is cut: destroying a socket with
// unread request bytes sends a TCP reset, and a reset can discard the answer before it is read.
const LINGER_MS = 1000

/** Fastify options: the header limit, and our answer to what Node's parser refuses. */
export const clientErrorOptions = {
  http: { maxHeaderSize: MAX_HEADER_BYTES, requireHostHeader: false }, // Host: see checkHost
  clientErrorHandler (this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket) {
    const apiError = parserError(err)
    const reqId = newRequestId()
    if (apiError && !answered.has(socket)) {
      this.log.info({ reqId, code: err.code, status: apiError.status }, 'client error')
    }
    answerOnSocket(socket, apiError, reqId)
  },
} satisfies Pick<FastifyHttpOptions<Server>, 'http' | 'clientErrorHandler'>

/** The error for a refusal by Node's HTTP parser; null when the client is gone (nothing to answer). */
export function parserError (err: NodeJS.ErrnoException): ApiError | null {
  switch (err.code) {
    case 'ECONNRESET': return null
    case 'HPE_HEADER_OVERFLOW': return errors.headersTooLarge(MAX_HEADER_BYTES)
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW': return errors.badHttp('chunk extensions are too large')
    case 'ERR_HTTP_REQUEST_TIMEOUT': return errors.requestTimeout()
    default: return errors.badHttp(((err as { reason?: string }).reason ?? err.message).replace(/\.$/, ''))
  }
}

const answered = new WeakSet<Socket>()

/** Writes `err` as a whole response on a socket no ServerResponse owns, then closes it. */
function answerOnSocket (socket: Socket, err: ApiError | null, reqId = newRequestId()): void {
  // A parser in error reports again on every later chunk: the first report is answered.
  if (answered.has(socket)) return
  answered.add(socket)
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage
  if (err === null || socket.destroyed || !socket.writable || inFlight?.headersSent === true) {
    socket.destroy()
    return
  }
  const body = JSON.stringify(err.toBody())
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ''}\r\n` +
    'content-type: application/json; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${reqId}\r\nconnection: close\r\n\r\n${body}`)
  setTimeout(() => { socket.destroy() }, LINGER_MS).unref()
}

/** CONNECT, `Expect: <other>` and a missing Host, which Node answers itself unless told otherwise. */
export function answerWhatNodeWould (app: FastifyInstance): void {
  // Without a listener Node closes a CONNECT's connection unanswered; no route takes CONNECT.
  app.server.on('connect', (req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {}) // a reset while we answer is the client's business
    answerOnSocket(socket, errors.routeNotFound('CONNECT', req.url ?? ''))
  })
  // Node's own 417 has an empty body.
  app.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const err = errors.expectationFailed(String(req.headers.expect))
    const body = JSON.stringify(err.toBody())
    res.writeHead(err.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-request-id': newRequestId(),
    })
    res.end(body)
  })
  app.addHook('onRequest', checkHost)
}

// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. Node's check (requireHostHeader, off in
// clientErrorOptions) answered it with an empty body.
function checkHost (request: { raw: IncomingMessage }, _reply: unknown, done: (err?: Error) => void): void {
  const raw = request.raw
  if (raw.httpVersion === '1.1' && raw.headers.host === undefined) {
    done(errors.badHttp('an HTTP/1.1 request needs a Host header'))
  } else done()
}

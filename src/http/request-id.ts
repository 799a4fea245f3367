// Request ids: the client's x-request-id when it is a sane token, else one of ours; echoed back on
// every response so a client can quote it and we can find the request's log lines.
import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'

const REQUEST_ID = /^[\w.:-]{1,128}$/

/** Fastify options: no header is trusted blindly (requestIdHeader: false), genReqId decides. */
export const requestIdOptions = {
  requestIdHeader: false,
  genReqId: (req) => {
    const given = req.headers['x-request-id']
    return typeof given === 'string' && REQUEST_ID.test(given) ? given : newRequestId()
  },
} satisfies Pick<FastifyServerOptions, 'requestIdHeader' | 'genReqId'>

/** Every response, errors and 404s included, says which request it answers. */
export function echoRequestId (app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id)
    done()
  })
}

/** A request id of ours, also for answers given before Fastify has a request (client-errors.ts). */
export function newRequestId (): string {
  return `req_${randomHex24()}`
}

// randomBytes(12) per request was 3-4% of a checkpoint GET's CPU (docs/benchmarks.md): it is the
// call, not the bytes, that costs, so they are drawn 4 KiB at a time.
let pool = Buffer.alloc(0)
let used = 0
function randomHex24 (): string {
  if (used + 12 > pool.length) { pool = randomBytes(4096); used = 0 }
  used += 12
  return pool.toString('hex', used - 12, used)
}

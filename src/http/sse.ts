// Server-sent events on a hijacked reply, as OpenAI streams: `data: <json>\n\n` per event, ending in
// `data: [DONE]`. Headers (x-request-id included) are the reply's, sent with the first byte.
import type { FastifyReply } from 'fastify'
import type { ApiError } from '../errors.js'

export interface EventStream {
  send: (data: unknown) => void
  /** An error after the stream began: OpenAI's SDKs raise an `error` event as an APIError. */
  fail: (err: ApiError) => void
  end: () => void
}

export function openEventStream (reply: FastifyReply): EventStream {
  reply.hijack()
  const raw = reply.raw
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) raw.setHeader(name, value)
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no', // nginx in front must not hold the tokens back
  })
  const write = (text: string) => { if (!raw.destroyed && !raw.writableEnded) raw.write(text) }
  return {
    send: (data) => { write(`data: ${JSON.stringify(data)}\n\n`) },
    fail: (err) => { write(`data: ${JSON.stringify(err.toBody())}\n\n`) },
    end: () => {
      write('data: [DONE]\n\n')
      if (!raw.writableEnded) raw.end()
    },
  }
}

/** Aborted when the client goes away before the response is complete. */
export function clientGoneSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  return controller.signal
}

// Server-sent events on a hijacked reply, as OpenAI streams: `data: <json>\n\n` per event, ending in
// `data: [DONE]`. Headers (x-request-id included) are the reply's, sent with the first byte.
import type { FastifyReply } from 'fastify'
import type { ApiError } from '../errors.js'

export interface EventStream {
  /** With `id`, the event carries `id: <id>` (a reconnecting client sends it back as Last-Event-ID).
   *  False when the bytes wait in memory (the client reads slower than we write). */
  send: (data: unknown, id?: string) => boolean
  /** An error after the stream began: OpenAI's SDKs raise an `error` event as an APIError. */
  fail: (err: ApiError) => void
  end: () => void
  /** Text made by formatEvent, as is: one serialization for many clients of the same event. */
  sendFormatted: (text: string) => boolean
  /** `: <text>`, which clients ignore: keeps proxies and idle timers from closing a quiet stream. */
  comment: (text: string) => void
  /** Bytes written but not yet taken by the client's socket. */
  buffered: () => number
  /** Resolves once what is buffered has gone out, or the client is gone. */
  drained: () => Promise<void>
  /** Ends the response without `[DONE]` (shutdown), or cuts the connection (`destroy`: a client too slow). */
  close: (how?: 'end' | 'destroy') => void
  readonly closed: boolean
}

/** One event as it goes on the wire: `id: <id>` when given, then `data: <json>`. */
export function formatEvent (data: unknown, id?: string): string {
  return `${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`
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
  const isClosed = () => raw.destroyed || raw.writableEnded
  const write = (text: string): boolean => isClosed() ? false : raw.write(text)
  return {
    send: (data, id) => write(formatEvent(data, id)),
    sendFormatted: write,
    fail: (err) => { write(`data: ${JSON.stringify(err.toBody())}\n\n`) },
    end: () => {
      write('data: [DONE]\n\n')
      if (!raw.writableEnded) raw.end()
    },
    comment: (text) => { write(`: ${text}\n\n`) },
    buffered: () => raw.writableLength,
    drained: async () => {
      if (isClosed() || !raw.writableNeedDrain) return
      await new Promise<void>(resolve => {
        const done = () => { raw.off('drain', done); raw.off('close', done); resolve() }
        raw.on('drain', done)
        raw.on('close', done)
      })
    },
    close: (how = 'end') => {
      if (how === 'destroy') raw.destroy()
      else if (!raw.writableEnded) raw.end()
    },
    get closed () { return isClosed() },
  }
}

/** Aborted when the client goes away before the response is complete. */
export function clientGoneSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  return controller.signal
}

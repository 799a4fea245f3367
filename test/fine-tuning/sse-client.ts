// A server-sent-events client for tests, over a real socket: it keeps every event and comment, and
// says when `[DONE]` came and when the connection closed. `read: false` never reads (a slow client)
// until resume().
import { request } from 'node:http'

export interface SseEvent { id: string | undefined, data: any }

export interface SseClient {
  status: number
  headers: Record<string, string | string[] | undefined>
  events: SseEvent[]
  comments: string[]
  done: boolean
  closed: boolean
  /** Resolves once `pred` holds (checked after every frame and at close); rejects after `ms`. */
  until: (what: string, pred: (c: SseClient) => boolean, ms?: number) => Promise<void>
  resume: () => void
  close: () => void
}

export async function connectSse (
  url: string,
  headers: Record<string, string>,
  opts: { read?: boolean } = {}
): Promise<SseClient> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const waiters = new Set<() => void>()
      const check = () => { for (const w of [...waiters]) w() }
      let text = ''
      const client: SseClient = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        events: [],
        comments: [],
        done: false,
        closed: false,
        until: async (what, pred, ms = 60_000) => {
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              waiters.delete(test)
              reject(new Error(`timed out waiting for ${what}: ${client.events.length} events, done=${client.done}, ` +
                `closed=${client.closed}`))
            }, ms)
            const test = () => {
              if (!pred(client)) return
              waiters.delete(test)
              clearTimeout(timer)
              resolve()
            }
            waiters.add(test)
            test()
          })
        },
        resume: () => { res.resume() },
        close: () => { req.destroy() },
      }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
        for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
          const frame = text.slice(0, end)
          text = text.slice(end + 2)
          let id: string | undefined
          let data: string | undefined
          for (const line of frame.split('\n')) {
            if (line.startsWith(': ')) client.comments.push(line.slice(2))
            else if (line.startsWith('id: ')) id = line.slice(4)
            else if (line.startsWith('data: ')) data = line.slice(6)
          }
          if (data === '[DONE]') client.done = true
          else if (data !== undefined) client.events.push({ id, data: JSON.parse(data) })
        }
        check()
      })
      const closed = () => { client.closed = true; check() }
      res.on('close', closed)
      res.on('error', closed)
      if (opts.read === false) res.pause()
      resolve(client)
    })
    req.on('error', reject)
    req.end()
  })
}

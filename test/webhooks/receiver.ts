// A real HTTP listener playing a team's webhook receiver: it keeps every request (headers and raw
// body, as a receiver verifies them) and answers each path with the statuses a test scripts (then 200).
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import OpenAI from 'openai'

export interface Received { path: string, headers: Record<string, string>, body: string }

export interface Receiver {
  url: string
  received: Received[]
  /** The next requests to `path` get these statuses, in order; later ones 200. */
  failNext: (path: string, statuses: number[]) => void
  /** Resolves with the first `n` requests to `path` once they have come (a hang guard only bounds a broken run). */
  waitFor: (path: string, n: number, ms?: number) => Promise<Received[]>
  close: () => Promise<void>
}

export async function startReceiver (port = 0): Promise<Receiver> {
  const received: Received[] = []
  const scripted = new Map<string, number[]>()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]))
      const path = req.url ?? '/'
      received.push({ path, headers, body: Buffer.concat(chunks).toString('utf8') })
      const status = scripted.get(path)?.shift() ?? 200
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'receiver says no')
    })
  })
  await new Promise<void>(resolve => server.listen(port, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    received,
    failNext: (path, statuses) => { scripted.set(path, [...statuses]) },
    waitFor: async (path, n, ms = 60_000) => {
      const until = Date.now() + ms
      for (;;) {
        const got = received.filter(r => r.path === path)
        if (got.length >= n) return got.slice(0, n)
        if (Date.now() > until) throw new Error(`timed out waiting for ${n} webhook(s) at ${path}; got ${got.length}`)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    },
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}

/** What a receiver does with the openai SDK: verify the signature with the endpoint's secret, then parse. */
export async function unwrap (r: Received, secret: string) {
  const client = new OpenAI({ apiKey: 'not-used', webhookSecret: secret })
  return await client.webhooks.unwrap(r.body, r.headers, secret)
}

/** A webhook of `type` for `jobId`, verified as a receiver would. */
export async function assertJobEvent (r: Received, secret: string, type: string, jobId: string): Promise<void> {
  const event = await unwrap(r, secret)
  assert.equal(event.type, type)
  assert.equal(event.object, 'event')
  assert.match(event.id, /^evt_[0-9a-f]{32}$/)
  assert.deepEqual((event as { data: unknown }).data, { id: jobId })
  assert.ok(Number.isInteger(event.created_at))
  assert.match(r.headers['webhook-id'] ?? '', /^msg_[0-9a-f]{32}$/)
  assert.equal(r.headers['content-type'], 'application/json')
}

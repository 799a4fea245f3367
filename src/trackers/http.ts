// One request to a tracker, with node:http(s) rather than fetch: an MLflow server's own CA goes to
// the HTTPS agent as `ca`, and a request that outlives its timeout (or the job's flush time) is
// destroyed, so nothing waits on a tracker that never answers.
import http from 'node:http'
import https from 'node:https'

export class TrackerError extends Error {
  constructor (message: string, readonly retryable: boolean, readonly status: number | null = null) { super(message) }
}

export interface Request {
  method: 'GET' | 'POST'
  url: string
  headers?: Record<string, string>
  json?: unknown
  timeoutMs: number
  signal: AbortSignal
  agent?: http.Agent
}

const MAX_BODY = 256 * 1024 // answers are small JSON; a larger one is cut, not buffered without end

export function makeAgent (url: string, ca: string | null): http.Agent {
  return url.startsWith('https:')
    ? new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) })
    : new http.Agent({ keepAlive: true })
}

export const basicAuth = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

/** The answer's status and JSON body ({} when it has none); throws TrackerError. */
export async function requestJson (r: Request): Promise<{ status: number, body: Record<string, unknown> }> {
  const url = new URL(r.url)
  const lib = url.protocol === 'https:' ? https : http
  const payload = r.json === undefined ? undefined : Buffer.from(JSON.stringify(r.json))
  const headers: Record<string, string> = { accept: 'application/json', ...r.headers }
  if (payload) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(payload.length) })
  const text = await new Promise<{ status: number, text: string }>((resolve, reject) => {
    if (r.signal.aborted) return reject(new TrackerError('stopped before it was sent', false))
    const req = lib.request(url, { method: r.method, headers, ...(r.agent ? { agent: r.agent } : {}) }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => { if (size < MAX_BODY) chunks.push(c); size += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    const timer = setTimeout(() => req.destroy(new TrackerError(`no answer within ${r.timeoutMs / 1000} s`, true)), r.timeoutMs)
    const onAbort = () => req.destroy(new TrackerError('abandoned unanswered', false))
    r.signal.addEventListener('abort', onAbort, { once: true })
    req.on('close', () => { clearTimeout(timer); r.signal.removeEventListener('abort', onAbort) })
    req.on('error', (err) => reject(err instanceof TrackerError ? err : new TrackerError(networkError(err), true)))
    req.end(payload)
  })
  let body: Record<string, unknown> = {}
  try {
    const parsed: unknown = text.text ? JSON.parse(text.text) : {}
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>
  } catch {
    if (text.status < 300) throw new TrackerError(`HTTP ${text.status} with a body that is not JSON`, false)
  }
  if (text.status >= 300) {
    // 408/429 and 5xx pass; any other 4xx (a wrong key, a bad request) will not get better by retrying
    const retryable = text.status >= 500 || text.status === 408 || text.status === 429
    const detail = typeof body.message === 'string' ? `: ${body.message.slice(0, 200)}` : ''
    throw new TrackerError(`HTTP ${text.status}${detail}`, retryable, text.status)
  }
  return { status: text.status, body }
}

function networkError (err: Error & { code?: string }): string {
  return err.code ? `${err.code} (${err.message.slice(0, 200)})` : err.message.slice(0, 200)
}

// The API client: the key lives in sessionStorage only and goes in the Authorization header, never
// in a URL. Errors carry the server's own message (docs/errors.md: `error.message`).
const KEY = 'opentune.apiKey'

export const session = {
  get key (): string | null { return sessionStorage.getItem(KEY) },
  set (key: string): void { sessionStorage.setItem(KEY, key) },
  clear (): void { sessionStorage.removeItem(KEY) },
}

export class ApiError extends Error {
  constructor (readonly status: number, message: string, readonly code: string | null = null) { super(message) }
}

/** Set by main.ts: what to do when the server stops accepting the key (it was revoked). */
export const onUnauthorized: { handler: (message: string) => void } = { handler: () => {} }

async function errorOf (res: Response): Promise<ApiError> {
  let message = `${res.status} ${res.statusText}`
  let code: string | null = null
  try {
    const body = await res.json() as { error?: { message?: string, code?: string } }
    if (body.error?.message) message = body.error.message
    code = body.error?.code ?? null
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(res.status, message, code)
}

export async function request (path: string, init: RequestInit = {}, key = session.key): Promise<Response> {
  const headers = new Headers(init.headers)
  if (key) headers.set('authorization', `Bearer ${key}`)
  const res = await fetch(path, { ...init, headers })
  if (!res.ok) {
    const err = await errorOf(res)
    if (res.status === 401 && key === session.key) onUnauthorized.handler(err.message)
    throw err
  }
  return res
}

export async function getJson<T> (path: string): Promise<T> {
  return await (await request(path)).json() as T
}

export async function postJson<T> (path: string, body: unknown): Promise<T> {
  const res = await request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return await res.json() as T
}

/** Checks a key without storing it: the models list needs any valid key. */
export async function checkKey (key: string): Promise<void> {
  await request('/v1/models', {}, key)
}

/** Fetches a file with the bearer header and hands it to the browser as a download. */
export async function downloadFile (fileId: string): Promise<void> {
  const meta = await getJson<FileObject>(`/v1/files/${encodeURIComponent(fileId)}`)
  const blob = await (await request(`/v1/files/${encodeURIComponent(fileId)}/content`)).blob()
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = meta.filename.split('/').pop() || fileId
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 60_000)
}

export interface SseMessage { id: string | null, event: string | null, data: string }

/**
 * Reads a text/event-stream response with fetch (EventSource cannot send a header). Calls onMessage
 * for each message (comments such as `: ping` are skipped); resolves when the stream ends.
 */
export async function readSse (res: Response, onMessage: (m: SseMessage) => void, signal?: AbortSignal): Promise<void> {
  if (!res.body) return
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  let id: string | null = null
  let event: string | null = null
  let data: string[] = []
  const line = (l: string) => {
    if (l === '') {
      if (data.length > 0) onMessage({ id, event, data: data.join('\n') })
      id = null; event = null; data = []
      return
    }
    if (l.startsWith(':')) return
    const colon = l.indexOf(':')
    const field = colon < 0 ? l : l.slice(0, colon)
    let value = colon < 0 ? '' : l.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') data.push(value)
    else if (field === 'id') id = value
    else if (field === 'event') event = value
  }
  try {
    for (;;) {
      if (signal?.aborted) break
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let nl: number
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const sep = buffer.startsWith('\r\n', nl) ? 2 : 1
        line(buffer.slice(0, nl))
        buffer = buffer.slice(nl + sep)
      }
    }
  } finally {
    reader.releaseLock()
  }
}

export interface List<T> { object: 'list', data: T[], has_more: boolean }

export interface FileObject {
  id: string
  object: 'file'
  bytes: number
  created_at: number
  filename: string
  purpose: string
  status?: string
  status_details?: string | null
}

export interface Job {
  id: string
  status: string
  model: string
  created_at: number
  finished_at: number | null
  fine_tuned_model: string | null
  training_file: string
  validation_file: string | null
  hyperparameters: Record<string, unknown> | null // null for a spec-draft job: under method.spec_draft
  method?: { type?: string, spec_draft?: { hyperparameters?: Record<string, unknown> } } | null
  result_files: string[]
  trained_tokens: number | null
  trained_steps?: number | null
  total_steps?: number | null
  estimated_finish?: number | null
  suffix?: string | null
  error: { code?: string | null, message?: string | null, param?: string | null } | null
}

export interface JobEvent {
  id: string
  created_at: number
  level: string
  message: string
  type?: string
  data?: Record<string, unknown> | null
}

export const METRIC_KEYS = [
  'step',
  'train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy',
] as const

export interface Checkpoint {
  id: string
  step_number: number
  created_at: number
  fine_tuned_model_checkpoint: string
  metrics: Record<string, number | null>
  result_files?: string[]
}

export interface MetricPoint {
  step: number
  epoch?: number | null
  train_loss?: number | null
  train_mean_token_accuracy?: number | null
  learning_rate?: number | null
  grad_norm?: number | null
  tokens?: number | null
  step_time_s?: number | null
  tokens_per_second?: number | null
  valid_loss?: number | null
  valid_mean_token_accuracy?: number | null
  full_valid_loss?: number | null
  full_valid_mean_token_accuracy?: number | null
}

export interface Model { id: string, object: 'model', created: number, owned_by: string }

export const ENDED = new Set(['succeeded', 'failed', 'cancelled'])

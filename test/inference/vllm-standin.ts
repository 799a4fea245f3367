// A TEST DOUBLE of vLLM's OpenAI server — not vLLM, and nothing of it runs a model. It answers the
// endpoints opentune's vLLM backend (src/inference/vllm.ts) uses as vLLM v0.11 does, with
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and `vllm serve <root> --enable-lora --max-lora-rank N`:
//
// - GET /v1/models: the base card (id = served model name, root = what `vllm serve` was given,
//   parent null) and one card per loaded adapter (id = lora_name, root = lora_path, parent = base).
// - POST /v1/load_lora_adapter {lora_name, lora_path}: 200 with the plain text "Success: LoRA adapter
//   '<name>' added successfully." (no content-type); 400 InvalidUserInput for a missing field or a
//   name already loaded; 404 NotFoundError "… No adapter found for <path>" when the folder or its
//   adapter_config.json is missing; 400 BadRequestError "LoRA rank R is greater than max_lora_rank N."
// - POST /v1/unload_lora_adapter {lora_name}: 200 text, or 404 "The lora adapter '<name>' cannot be found."
// - POST /v1/chat/completions, /v1/completions: 404 NotFoundError "The model `<m>` does not exist."
//   for an unknown model; else the text "served by <model>" (then " more" per max_tokens beyond 3),
//   as JSON with `usage`, or with `stream: true` as SSE `data: {…}\n\n` chunks and `data: [DONE]\n\n`
//   (a usage chunk first when stream_options.include_usage).
// - Errors are vLLM's ErrorResponse `{"error": {"message", "type", "param", "code": <status>}}`;
//   an unknown route is FastAPI's 404 `{"detail": "Not Found"}`; --api-key's 401 `{"error": "Unauthorized"}`.
//
// It records every request (method, path, headers, parsed body) and the bytes it wrote, so tests
// assert what opentune sent and that it passed the answer on untouched; `restart()` forgets the
// adapters as a restarted vLLM does.
import { existsSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'

export interface StandinOptions {
  /** --served-model-name (default: root, as vLLM does). */
  servedModelName?: string
  /** The model `vllm serve` was given: an HF id or a folder. */
  root: string
  maxLoraRank?: number
  apiKey?: string
  /** Delay before a load_lora_adapter answers (reading the adapter), to make races real. */
  loadDelayMs?: number
  /** Delay between SSE chunks. */
  chunkDelayMs?: number
  /** false: started without VLLM_ALLOW_RUNTIME_LORA_UPDATING (no (un)load routes). Default true. */
  runtimeLoraUpdating?: boolean
}

export interface StandinRequest {
  method: string
  path: string
  headers: IncomingMessage['headers']
  body: unknown
  /** Every byte the stand-in wrote for it (the body), once the answer ended or was cut. */
  written: Buffer
  /** The client closed the connection before the answer ended. */
  closedEarly: boolean
  ended: Promise<void>
}

export interface VllmStandin {
  url: string
  requests: StandinRequest[]
  adapters: Map<string, string>
  options: StandinOptions
  /** What a vLLM restart loses: the adapters loaded at runtime. */
  restart: () => void
  close: () => Promise<void>
}

const CREATED = 1_750_000_000

export async function startVllmStandin (options: StandinOptions): Promise<VllmStandin> {
  const base = options.servedModelName ?? options.root
  const maxRank = options.maxLoraRank ?? 16
  const adapters = new Map<string, string>()
  const requests: StandinRequest[] = []
  let counter = 0

  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      let body: unknown = raw
      try { if (raw) body = JSON.parse(raw) } catch { /* kept as text */ }
      const written: Buffer[] = []
      let finish: () => void = () => {}
      const record: StandinRequest = {
        method: req.method ?? '',
        path: (req.url ?? '').split('?')[0] ?? '',
        headers: req.headers,
        body,
        written: Buffer.alloc(0),
        closedEarly: false,
        ended: new Promise(resolve => { finish = resolve }),
      }
      requests.push(record)
      const write = res.write.bind(res) as (chunk: string) => boolean
      res.write = ((chunk: string) => { written.push(Buffer.from(chunk)); return write(chunk) }) as typeof res.write
      res.on('close', () => {
        record.closedEarly = !res.writableFinished
        record.written = Buffer.concat(written)
        finish()
      })
      void handle(record, res).catch(err => {
        if (!res.headersSent) json(res, 500, errorBody(String(err), 'InternalServerError', 500))
        else res.destroy()
      })
    })
  })

  const json = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.write(JSON.stringify(value))
    res.end()
  }
  const text = (res: ServerResponse, value: string) => {
    res.writeHead(200) // FastAPI's Response(content=…) without a media type: no content-type
    res.write(value)
    res.end()
  }

  async function handle (r: StandinRequest, res: ServerResponse): Promise<void> {
    if (options.apiKey && r.path.startsWith('/v1') && r.headers.authorization !== `Bearer ${options.apiKey}`) {
      return json(res, 401, { error: 'Unauthorized' })
    }
    const body = (typeof r.body === 'object' && r.body !== null ? r.body : {}) as Record<string, unknown>
    if (r.method === 'GET' && r.path === '/v1/models') {
      const card = (id: string, root: string, parent: string | null) => ({
        id,
        object: 'model',
        created: CREATED,
        owned_by: 'vllm',
        root,
        parent,
        ...(parent === null ? { max_model_len: 2048 } : {}),
        permission: [{ id: `modelperm-${id}`, object: 'model_permission', allow_sampling: true }],
      })
      return json(res, 200, {
        object: 'list',
        data: [card(base, options.root, null), ...[...adapters].map(([name, path]) => card(name, path, base))],
      })
    }
    const loraRoute = r.path === '/v1/load_lora_adapter' || r.path === '/v1/unload_lora_adapter'
    if (loraRoute && options.runtimeLoraUpdating === false) return json(res, 404, { detail: 'Not Found' })
    if (r.method === 'POST' && r.path === '/v1/load_lora_adapter') {
      const name = body.lora_name
      const path = body.lora_path
      if (typeof name !== 'string' || !name || typeof path !== 'string' || !path) {
        return json(res, 400, errorBody("Both 'lora_name' and 'lora_path' must be provided.", 'InvalidUserInput', 400))
      }
      if (adapters.has(name)) {
        return json(res, 400, errorBody(`The lora adapter '${name}' has already been loaded.`, 'InvalidUserInput', 400))
      }
      if (options.loadDelayMs) await new Promise(resolve => setTimeout(resolve, options.loadDelayMs))
      const configFile = join(path, 'adapter_config.json')
      if (!existsSync(configFile)) {
        return json(res, 404, errorBody(`Loading lora ${name} failed: No adapter found for ${path}`, 'NotFoundError', 404))
      }
      const rank = Number((JSON.parse(readFileSync(configFile, 'utf8')) as { r?: unknown }).r)
      if (rank > maxRank) {
        return json(res, 400, errorBody(`LoRA rank ${rank} is greater than max_lora_rank ${maxRank}.`, 'BadRequestError', 400))
      }
      adapters.set(name, path)
      return text(res, `Success: LoRA adapter '${name}' added successfully.`)
    }
    if (r.method === 'POST' && r.path === '/v1/unload_lora_adapter') {
      const name = body.lora_name
      if (typeof name !== 'string' || !name) {
        return json(res, 400, errorBody("either 'lora_name' and 'lora_int_id' needs to be provided.", 'InvalidUserInput', 400))
      }
      if (!adapters.delete(name)) {
        return json(res, 404, errorBody(`The lora adapter '${name}' cannot be found.`, 'NotFoundError', 404))
      }
      return text(res, `Success: LoRA adapter '${name}' removed successfully.`)
    }
    if (r.method === 'POST' && (r.path === '/v1/chat/completions' || r.path === '/v1/completions')) {
      const model = typeof body.model === 'string' ? body.model : base
      if (model !== base && !adapters.has(model)) {
        return json(res, 404, errorBody(`The model \`${model}\` does not exist.`, 'NotFoundError', 404, 'model'))
      }
      return await complete(r.path === '/v1/chat/completions', model, body, res)
    }
    return json(res, 404, { detail: 'Not Found' })
  }

  async function complete (chat: boolean, model: string, body: Record<string, unknown>, res: ServerResponse) {
    const n = ++counter
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-standin-${n}`
    const maxTokens = typeof body.max_tokens === 'number' ? body.max_tokens : 3
    const words = ['served', ' by', ` ${model}`, ...Array<string>(Math.max(0, maxTokens - 3)).fill(' more')]
    const promptText = chat ? JSON.stringify(body.messages ?? []) : String(body.prompt ?? '')
    const usage = {
      prompt_tokens: promptText.split(/\s+/).filter(Boolean).length,
      completion_tokens: words.length,
      total_tokens: promptText.split(/\s+/).filter(Boolean).length + words.length,
    }
    const object = chat ? 'chat.completion' : 'text_completion'
    if (body.stream !== true) {
      const choice = chat
        ? { index: 0, message: { role: 'assistant', content: words.join('') }, logprobs: null, finish_reason: 'stop' }
        : { index: 0, text: words.join(''), logprobs: null, finish_reason: 'stop' }
      return json(res, 200, { id, object, created: CREATED, model, choices: [choice], usage })
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' })
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created: CREATED, model, choices, ...extra })}\n\n`
    const pause = () => new Promise(resolve => setTimeout(resolve, options.chunkDelayMs ?? 0))
    if (chat) res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]))
    for (const [i, word] of words.entries()) {
      if (res.destroyed) return
      await pause()
      if (res.destroyed) return
      const last = i === words.length - 1 ? 'stop' : null
      res.write(chunk([chat
        ? { index: 0, delta: { content: word }, logprobs: null, finish_reason: last }
        : { index: 0, text: word, logprobs: null, finish_reason: last }]))
    }
    const streamOptions = body.stream_options as { include_usage?: unknown } | undefined
    if (streamOptions?.include_usage === true) res.write(chunk([], { usage }))
    res.write('data: [DONE]\n\n')
    res.end()
  }

  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    adapters,
    options,
    restart: () => adapters.clear(),
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}

function errorBody (message: string, type: string, code: number, param: string | null = null) {
  return { error: { message, type, param, code } }
}

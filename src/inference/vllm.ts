// The vLLM backend (OPENTUNE_INFERENCE=vllm): opentune's /v1/chat/completions and /v1/completions
// forwarded to a vLLM OpenAI server at OPENTUNE_VLLM_URL, with `model` rewritten to what vLLM
// knows: the served model id of its base, or a LoRA adapter registered at runtime
// (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; POST /v1/load_lora_adapter). docs/inference.md
// "vLLM behind opentune" says how to start vLLM; the API followed is vLLM v0.11's (the stand-in
// test/inference/vllm-standin.ts follows the same; it was not run against a real vLLM).
//
// Choices:
// - lora_name is the client's model name (`ft:<base>:…:ckpt-step-N`, unique: it holds the job id), so
//   vLLM's responses already carry the `model` the client sent and pass through unchanged.
// - A registration is remembered per name (the promise, so concurrent first requests share one
//   load call); a failed one is forgotten, so the next request tries again. When vLLM answers a
//   forward with 404 (it restarted and forgot its adapters, or another operator unloaded it), the
//   adapter is registered again and the request sent once more.
// - vLLM answering "already loaded" (opentune restarted, vLLM did not) counts as registered when
//   its GET /v1/models lists the adapter at the same lora_path; at another path it is unloaded and
//   loaded again.
// - What the server serves (GET /v1/models: the card without `parent`) is cached for MODELS_TTL_MS
//   and re-read after a 404.
import { relative, sep } from 'node:path'
import type { Config } from '../config.js'
import { ApiError, errors } from '../errors.js'
import type { ServedModel } from './served-model.js'

export type ForwardPath = '/v1/chat/completions' | '/v1/completions'

export interface VllmBackend {
  /** Why the vLLM server cannot serve this model (adapter rank above config.inference.vllmMaxLoraRank,
   *  a full-weights checkpoint the server was not started on, a base other than the server's), or
   *  null. Throws 502 `upstream_unavailable` when vLLM cannot be asked what it serves. */
  checkDeployable (served: ServedModel): Promise<string | null>
  /** The request sent to vLLM with `model` rewritten; vLLM's Response, for the route to pass through
   *  unchanged (status, content-type, body stream). Aborting `signal` aborts the upstream request. */
  forward (
    path: ForwardPath, body: Record<string, unknown>, served: ServedModel, signal: AbortSignal
  ): Promise<Response>
}

export interface VllmBackendOptions {
  /** Limit on one GET /v1/models or POST /v1/(un)load_lora_adapter call (default 120 s: an adapter
   *  is read from shared storage and copied to the GPU). */
  controlTimeoutMs?: number
  /** How long what the server serves is trusted before GET /v1/models is asked again (default 30 s). */
  modelsTtlMs?: number
}

/** The values vLLM's --max-lora-rank accepts (vllm/config/lora.py). */
export const VLLM_LORA_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512]

interface ModelCard { id: string, root: string | null, parent: string | null }
interface ServerModels { base: ModelCard, adapters: ModelCard[] }

const trimSlashes = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p)

export function makeVllmBackend (config: Readonly<Config>, options: VllmBackendOptions = {}): VllmBackend {
  const { vllmUrl, vllmApiKey, vllmMaxLoraRank, vllmDataDir } = config.inference
  if (!vllmUrl) throw new Error('the vLLM backend needs OPENTUNE_VLLM_URL')
  const baseUrl = vllmUrl
  const controlTimeoutMs = options.controlTimeoutMs ?? 120_000
  const modelsTtlMs = options.modelsTtlMs ?? 30_000
  const headers = (): Record<string, string> => ({
    'content-type': 'application/json',
    // undici would otherwise ask for gzip and inflate it, leaving a content-encoding header that no
    // longer fits the bytes the route passes on
    'accept-encoding': 'identity',
    ...(vllmApiKey ? { authorization: `Bearer ${vllmApiKey}` } : {}),
  })

  /** A path under opentune's data dir as vLLM sees it (OPENTUNE_VLLM_DATA_DIR), else unchanged. */
  const asVllmSees = (path: string): string => {
    if (!vllmDataDir) return path
    const rel = relative(config.dataDir, path)
    if (rel === '') return vllmDataDir
    if (rel.startsWith('..') || rel.startsWith(sep)) return path
    return `${vllmDataDir}/${rel.split(sep).join('/')}`
  }

  const call = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<Response> => {
    try {
      return await fetch(`${baseUrl}${path}`, {
        method,
        headers: headers(),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(controlTimeoutMs),
      })
    } catch (err) {
      throw unreachable(err, `${method} ${path}`)
    }
  }
  const unreachable = (err: unknown, what: string): ApiError => {
    const e = err as { name?: string, message?: string, cause?: { code?: string, message?: string } }
    const why = e.name === 'TimeoutError'
      ? `${what} got no answer within ${controlTimeoutMs / 1000} s`
      : `${what} failed: ${e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)}`
    return errors.upstreamUnavailable(baseUrl, why)
  }

  let models: { at: number, value: Promise<ServerModels> } | null = null
  const serverModels = async (fresh = false): Promise<ServerModels> => {
    if (fresh || !models || Date.now() - models.at > modelsTtlMs) {
      const value = readModels()
      const entry = { at: Date.now(), value }
      models = entry
      value.catch(() => { if (models === entry) models = null })
    }
    return await models.value
  }
  const readModels = async (): Promise<ServerModels> => {
    const res = await call('GET', '/v1/models')
    const text = await res.text()
    if (!res.ok) throw upstreamAnswer('GET /v1/models', res.status, text)
    let cards: ModelCard[] = []
    try {
      const data = (JSON.parse(text) as { data?: unknown }).data
      if (Array.isArray(data)) {
        cards = data.filter((c): c is Record<string, unknown> => typeof c === 'object' && c !== null)
          .filter(c => typeof c.id === 'string')
          .map(c => ({
            id: c.id as string,
            root: typeof c.root === 'string' ? c.root : null,
            parent: typeof c.parent === 'string' ? c.parent : null,
          }))
      }
    } catch { /* not JSON: no cards */ }
    const base = cards.find(c => c.parent === null)
    if (!base) throw errors.upstreamError(`GET ${baseUrl}/v1/models lists no base model: ${vllmMessage(text)}`)
    return { base, adapters: cards.filter(c => c.parent !== null) }
  }

  const upstreamAnswer = (what: string, status: number, text: string): ApiError => {
    if (status === 401) {
      return errors.upstreamError(`vLLM refused ${what} (401): set OPENTUNE_VLLM_API_KEY to the --api-key vLLM was started with`)
    }
    return errors.upstreamError(`vLLM answered ${what} with ${status}: ${vllmMessage(text)}`)
  }

  /** Whether the server's base model is the weights this model applies to. */
  const servesWeights = (base: ModelCard, served: ServedModel): boolean => {
    const root = base.root === null ? null : trimSlashes(base.root)
    if (root !== null && root === trimSlashes(asVllmSees(served.weightsDir))) return true
    if (served.fullCheckpointId) return false // only the checkpoint's own folder has its weights
    const id = served.base.id
    return [base.id, root].some(n => n !== null && (n === id || n.endsWith(`/${id}`)))
  }

  const checkDeployable = async (served: ServedModel): Promise<string | null> => {
    if (served.adapter && served.adapter.r > vllmMaxLoraRank) {
      const fits = VLLM_LORA_RANKS.find(r => r >= served.adapter!.r) ?? served.adapter.r
      return `its LoRA rank ${served.adapter.r} is above the vLLM server's --max-lora-rank ` +
        `${vllmMaxLoraRank} (OPENTUNE_VLLM_MAX_LORA_RANK); restart vLLM with --max-lora-rank ${fits} ` +
        `and set OPENTUNE_VLLM_MAX_LORA_RANK=${fits}`
    }
    const { base } = await serverModels()
    if (servesWeights(base, served)) return null
    const serving = `the vLLM server at OPENTUNE_VLLM_URL serves '${base.id}'` +
      (base.root && base.root !== base.id ? ` (from ${base.root})` : '')
    if (served.fullCheckpointId) {
      return `checkpoint '${served.fullCheckpointId}' is a full fine-tune, whose weights vLLM cannot load ` +
        `into a running server, and ${serving}; start a vLLM server on the checkpoint's folder ` +
        `(vllm serve ${asVllmSees(served.weightsDir)}) and point OPENTUNE_VLLM_URL at it`
    }
    return `${serving}, not ${served.adapter ? 'the base this adapter was trained on, ' : ''}` +
      `'${served.base.id}' (${asVllmSees(served.weightsDir)})`
  }

  // lora_name → its registration (settled or in flight), and the path it was registered with
  const registered = new Map<string, { path: string, done: Promise<void> }>()

  const ensureAdapter = async (name: string, dir: string): Promise<void> => {
    const path = asVllmSees(dir)
    const known = registered.get(name)
    if (known && known.path === path) return await known.done
    const entry = { path, done: register(name, path, known !== undefined) }
    registered.set(name, entry)
    entry.done.catch(() => { if (registered.get(name) === entry) registered.delete(name) })
    return await entry.done
  }

  const register = async (name: string, path: string, replacing: boolean): Promise<void> => {
    if (replacing) await unload(name)
    let res = await call('POST', '/v1/load_lora_adapter', { lora_name: name, lora_path: path })
    let text = await res.text()
    if (res.status === 400 && /already been loaded/i.test(vllmMessage(text))) {
      const { adapters } = await serverModels(true)
      const card = adapters.find(c => c.id === name)
      if (card && card.root !== null && trimSlashes(card.root) === trimSlashes(path)) return
      await unload(name)
      res = await call('POST', '/v1/load_lora_adapter', { lora_name: name, lora_path: path })
      text = await res.text()
    }
    if (res.ok) return
    if (res.status === 404 && isRouteNotFound(text)) {
      throw errors.upstreamError('vLLM has no POST /v1/load_lora_adapter: start it with ' +
        'VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora')
    }
    if (res.status === 401 || res.status >= 500) throw upstreamAnswer('POST /v1/load_lora_adapter', res.status, text)
    const hint = res.status === 404
      ? ' (vLLM must read that folder: put opentune\'s data directory on storage vLLM mounts, and set ' +
        'OPENTUNE_VLLM_DATA_DIR to where it is mounted there)'
      : ''
    throw errors.adapterLoadFailed(name, path, `${vllmMessage(text)}${hint}`)
  }

  const unload = async (name: string): Promise<void> => {
    const res = await call('POST', '/v1/unload_lora_adapter', { lora_name: name })
    await res.body?.cancel()
  }

  const send = async (path: ForwardPath, body: Record<string, unknown>, model: string, signal: AbortSignal) => {
    try {
      return await fetch(`${baseUrl}${path}`, {
        method: 'POST',
        headers: { ...headers(), accept: body.stream === true ? 'text/event-stream' : 'application/json' },
        body: JSON.stringify({ ...body, model }),
        signal,
      })
    } catch (err) {
      if (signal.aborted) throw err
      throw unreachable(err, `POST ${path}`)
    }
  }

  const forward = async (
    path: ForwardPath,
    body: Record<string, unknown>,
    served: ServedModel,
    signal: AbortSignal
  ): Promise<Response> => {
    const reason = await checkDeployable(served)
    if (reason) throw errors.modelNotServable(served.name, reason)
    const target = async (): Promise<string> => {
      if (!served.adapter) return (await serverModels()).base.id
      await ensureAdapter(served.name, served.adapter.dir)
      return served.name
    }
    const model = await target()
    const used = registered.get(served.name)
    const res = await send(path, body, model, signal)
    if (res.status !== 404) return res
    // vLLM restarted (adapters forgotten, or another --served-model-name): learn again, send once
    // more; a concurrent request that saw the same 404 shares the new registration
    await res.body?.cancel()
    if (used && registered.get(served.name) === used) registered.delete(served.name)
    await serverModels(true)
    return await send(path, body, await target(), signal)
  }

  return { checkDeployable, forward }
}

/** vLLM's error message from an answer body: `{"error": {"message"}}` (v0.10.2 on), `{"message"}`
 *  (before), FastAPI's `{"detail"}`, or the text itself. */
function vllmMessage (text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string, message?: unknown, detail?: unknown }
    const message = typeof body.error === 'object' ? body.error?.message : body.error ?? body.message ?? body.detail
    if (typeof message === 'string') return message
    if (message !== undefined) return JSON.stringify(message)
  } catch { /* plain text */ }
  const trimmed = text.trim()
  return trimmed.length > 500 ? `${trimmed.slice(0, 500)}…` : trimmed || '(empty body)'
}

/** FastAPI's answer for a route that does not exist (runtime LoRA updating not enabled). */
function isRouteNotFound (text: string): boolean {
  try {
    return (JSON.parse(text) as { detail?: unknown }).detail === 'Not Found'
  } catch {
    return false
  }
}

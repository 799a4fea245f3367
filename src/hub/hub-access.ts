// What every call to the Hub is given (@huggingface/hub's hubUrl, accessToken, fetch), and what its
// failures mean to a user: each becomes a HubError with a job error code (docs/errors.md).
import { HubApiError } from '@huggingface/hub'
import type { HubConfig } from '../config.js'
import { isStorageFull } from '../files/storage-full.js'

export interface HubAccess {
  hubUrl: string
  accessToken?: string
  fetch: typeof fetch
}

export type HubErrorCode = 'hub_offline' | 'hub_unreachable' | 'hub_repo_not_found' | 'hub_access_denied' |
  'hub_file_corrupt' | 'unsupported_model' | 'invalid_model' | 'storage_full' | 'hub_error'

/** A download that cannot go on, said so that the user can act (the code is the job's error code). */
export class HubError extends Error {
  constructor (readonly code: HubErrorCode, message: string) {
    super(message)
    this.name = 'HubError'
  }
}

/** `token`: the request's (from_checkpoint.token), else HF_TOKEN. The signal cuts every request. */
export function hubAccess (hub: Readonly<HubConfig>, token: string | null, signal?: AbortSignal): HubAccess {
  const accessToken = token ?? hub.token ?? undefined
  const withSignal: typeof fetch = async (input, init) => await fetch(input, signal ? { ...init, signal } : init)
  return { hubUrl: hub.endpoint, fetch: withSignal, ...(accessToken ? { accessToken } : {}) }
}

// fetch's own failures (TypeError 'fetch failed', 'terminated'), timeouts, and a body stream cut short,
// which @huggingface/hub's WebBlob reports as the bare message string
const isNetworkFailure = (err: unknown) => typeof err === 'string' || err instanceof TypeError ||
  (err instanceof Error && ['AbortError', 'TimeoutError'].includes(err.name))

/** Why a request got no answer: fetch's cause (ECONNREFUSED, ENOTFOUND, a timeout), else the message. */
export function networkCause (err: unknown): string {
  const e = err as { name?: string, message?: string, cause?: { code?: string, message?: string } } | undefined
  if (e?.name === 'TimeoutError') return 'no answer in time'
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)
}

/** A failure of a Hub call as a HubError naming its cause (never the token, which no message holds);
 *  null for anything else (a bug of ours: the caller lets it through). */
export function hubFailure (err: unknown, repo: string, hub: Readonly<HubConfig>, dir: string): HubError | null {
  if (err instanceof HubError) return err
  if (isStorageFull(err)) {
    return new HubError('storage_full', `The disk of the models directory (${dir}) is full while downloading ${repo}; free space there and create the job again.`)
  }
  if (err instanceof HubApiError) {
    const said = (err.message.split('. URL:')[0] ?? '').slice(0, 300)
    if (err.statusCode === 404 || /repository not found/i.test(said)) {
      return new HubError('hub_repo_not_found', `${repo} was not found on the Hugging Face Hub (${hub.endpoint}), or is private and the token given cannot see it: ${said}`)
    }
    if (err.statusCode === 401 || err.statusCode === 403) {
      return new HubError('hub_access_denied', `${repo} on the Hugging Face Hub is gated or private and the token given has no access (HTTP ${err.statusCode}: ${said}). Accept its conditions on its page, then set HF_TOKEN or pass from_checkpoint.token.`)
    }
    return new HubError('hub_error', `The Hugging Face Hub (${hub.endpoint}) answered HTTP ${err.statusCode} for ${repo}: ${said}`)
  }
  if (!isNetworkFailure(err)) return null
  const why = networkCause(err)
  return new HubError('hub_unreachable', `The Hugging Face Hub at ${hub.endpoint} (HF_ENDPOINT) cannot be reached (${why}) to download ${repo}.`)
}

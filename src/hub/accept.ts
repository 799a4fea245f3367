// Job creation on a model that is not on disk: a name shaped like a Hub repository is accepted when
// the Hub can be used (it is downloaded while the job validates its files, job-sources.ts); offline
// or out of reach, the request is refused now, saying which.
import { checkRepoAccess, HubApiError } from '@huggingface/hub'
import type { AppContext } from '../context.js'
import { errors } from '../errors.js'
import { hubAccess, networkCause } from './hub-access.js'
import { isHubRepoName } from './hub-checkpoint.js'

const PROBE_MS = 10_000

/** False when `model` cannot be a Hub repository; throws when it could but the Hub cannot be used. */
export async function acceptHubModel (ctx: AppContext, model: string, token: string | null): Promise<boolean> {
  if (!isHubRepoName(model)) return false
  await checkHubUsable(ctx, model, token, 'model')
  return true
}

/** from_checkpoint of type hf: refused now (unsupported_parameter) when the Hub cannot be used. */
export async function acceptHubCheckpoint (ctx: AppContext, repo: string, token: string | null): Promise<void> {
  await checkHubUsable(ctx, repo, token, 'from_checkpoint')
}

/** One request to the Hub: any answer (401, 403 and 404 too: the job then fails naming them) means it
 *  is there; a network failure or HF_HUB_OFFLINE is a 400 now rather than a job that cannot start. */
async function checkHubUsable (ctx: AppContext, repo: string, token: string | null, param: 'model' | 'from_checkpoint') {
  const hub = ctx.config.hub
  const refuse = (why: string) => errors.unsupportedParameter('from_checkpoint', `${repo} cannot be downloaded: ${why}.`)
  if (hub.offline) throw param === 'model' ? errors.hubOffline(repo) : refuse('HF_HUB_OFFLINE is set')
  try {
    await checkRepoAccess({ repo, ...hubAccess(hub, token, AbortSignal.timeout(PROBE_MS)) })
  } catch (err) {
    if (err instanceof HubApiError) return
    const cause = networkCause(err)
    throw param === 'model'
      ? errors.hubUnreachable(repo, hub.endpoint, cause)
      : refuse(`the Hugging Face Hub at ${hub.endpoint} (HF_ENDPOINT) cannot be reached (${cause})`)
  }
}

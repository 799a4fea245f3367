// `from_checkpoint: {type: "hf", repo, revision, token}` (the Nebius HFCheckpointParametersRequest):
// checked and stored with the job, the token sealed (sealed-token.ts) and dropped once downloaded.
import { fieldError } from '../errors.js'

/** As stored on the job row (fine_tuning_jobs.from_checkpoint); the API shows type, repo, revision. */
export interface HubCheckpoint {
  type: 'hf'
  repo: string
  revision: string | null
  sealed_token?: string
}

export interface HubCheckpointRequest {
  repo: string
  revision: string | null
  token: string | null
}

// owner/name as the Hub spells repository ids: letters, digits, '-', '_', '.', no '--' or '..' inside
const REPO_ID = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/

/** Whether `name` could be a Hub model repository (and so a folder name under OPENTUNE_MODELS_DIR). */
export const isHubRepoName = (name: string) => REPO_ID.test(name) && !name.includes('..') && !name.includes('--')

/** The request's from_checkpoint of type hf, checked field by field (422 worded as pydantic does). */
export function parseHubCheckpoint (value: Record<string, unknown>): HubCheckpointRequest {
  const at = (key: string) => ['body', 'from_checkpoint', key]
  const { repo, revision = null, token = null } = value
  if (repo === undefined) throw fieldError(at('repo'), 'Field required', 'missing')
  if (typeof repo !== 'string') throw fieldError(at('repo'), 'Input should be a valid string', 'string_type', repo)
  if (!isHubRepoName(repo)) {
    throw fieldError(at('repo'), "Value error, repo should be a Hugging Face repository id, 'owner/name'", 'value_error', repo)
  }
  if (revision !== null && typeof revision !== 'string') {
    throw fieldError(at('revision'), 'Input should be a valid string', 'string_type', revision)
  }
  if (token !== null && typeof token !== 'string') throw fieldError(at('token'), 'Input should be a valid string', 'string_type')
  return { repo, revision: revision || null, token: token || null }
}

export const publicHubCheckpoint = (c: HubCheckpoint) => ({ type: 'hf' as const, repo: c.repo, revision: c.revision })

// What the tracker tests share: the stand-ins' secrets and certificate, the two integrations as a
// request names them, and the check that no secret is ever shown.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TestEnv } from '../helper.js'
import { allEvents, get, JOBS } from '../runner/helpers.js'

const FIXTURES = join(import.meta.dirname, 'fixtures')
export const TLS = { key: readFileSync(join(FIXTURES, 'mlflow-key.pem'), 'utf8'), cert: readFileSync(join(FIXTURES, 'mlflow-cert.pem'), 'utf8') }
export const WANDB_KEY = 'wandb-api-key-0123456789abcdef'
export const ML_USER = { username: 'ml-user', password: 'ml-password-not-to-be-seen' }

export function wandbIntegration (over: Record<string, unknown> = {}) {
  return { type: 'wandb', wandb: { project: 'opentune-tests', api_key: WANDB_KEY, name: 'my run', entity: 'team', tags: ['exp-1'], ...over } }
}

export function mlflowIntegration (url: string, over: Record<string, unknown> = {}) {
  return {
    type: 'mlflow',
    mlflow: {
      tracking_uri: url,
      experiment_name: 'opentune-tests',
      run_name: 'ml run',
      certificate_file: TLS.cert,
      ...ML_USER,
      tags: { team: 'ml' },
      ...over,
    },
  }
}

/** No event, and no GET of the job, shows a key or a password. */
export async function assertNoSecrets (env: TestEnv, jobId: string): Promise<void> {
  const shown = JSON.stringify([await allEvents(env, jobId), await get(env, `${JOBS}/${jobId}`)])
  for (const secret of [WANDB_KEY, ML_USER.password]) assert.ok(!shown.includes(secret), `${secret} shown`)
}

// Integrations (wandb, mlflow, hf export) as the Nebius spec defines them. They are stored with
// their secrets, and those secrets (writeOnly in the spec) are never sent back.
import { fieldError } from '../errors.js'

type Integration = Record<string, unknown> & { type?: string }

const REQUIRED: Record<string, readonly string[]> = {
  wandb: ['project', 'api_key'],
  mlflow: ['tracking_uri', 'experiment_name', 'run_name', 'certificate_file', 'username', 'password'],
  hf: ['output_repo_name', 'api_token'],
}
const PUBLIC: Record<string, readonly string[]> = {
  wandb: ['project', 'name', 'entity', 'tags'],
  mlflow: ['tracking_uri', 'experiment_name', 'run_name', 'tags'],
  hf: ['output_repo_name'],
}

export function validateIntegrations (items: Integration[]): Integration[] {
  return items.map((item, i) => {
    const type = item.type ?? 'wandb'
    const required = REQUIRED[type]
    if (!required) throw fieldError(['body', 'integrations', i, 'type'], "Input should be 'wandb', 'mlflow' or 'hf'", 'literal_error', type)
    const config = item[type]
    if (config === null || typeof config !== 'object') throw fieldError(['body', 'integrations', i, type], 'Field required', 'missing')
    for (const key of required) {
      const v = (config as Record<string, unknown>)[key]
      if (v === undefined) throw fieldError(['body', 'integrations', i, type, key], 'Field required', 'missing')
      if (key !== 'experiment_name' && key !== 'run_name' && typeof v !== 'string') {
        throw fieldError(['body', 'integrations', i, type, key], 'Input should be a valid string', 'string_type', v)
      }
    }
    return { ...item, type }
  })
}

export function publicIntegrations (items: Integration[]): Integration[] {
  return items.map((item) => {
    const type = item.type ?? 'wandb'
    const config = (item[type] ?? {}) as Record<string, unknown>
    const shown = Object.fromEntries((PUBLIC[type] ?? []).filter(k => config[k] !== undefined).map(k => [k, config[k]]))
    return { type, [type]: shown }
  })
}

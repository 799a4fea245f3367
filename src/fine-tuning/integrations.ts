// Integrations (wandb, mlflow, hf export) as the Nebius spec defines them. They are stored with
// their secrets, and those secrets (writeOnly in the spec) are never sent back.
import { fieldError } from '../errors.js'

export type Integration = Record<string, unknown> & { type?: string }

// Every field of the spec's WandbConfigRequest, MlflowConfigRequest and HfExportConfigRequest:
// a wrong type stored here would be echoed by every later GET, which would then fail the spec.
type FieldType = 'string' | 'string|null' | 'string[]' | 'record<string>'
const FIELDS: Record<string, Record<string, { type: FieldType, required: boolean }>> = {
  wandb: {
    project: { type: 'string', required: true },
    api_key: { type: 'string', required: true },
    name: { type: 'string|null', required: false },
    entity: { type: 'string|null', required: false },
    tags: { type: 'string[]', required: false },
  },
  mlflow: {
    tracking_uri: { type: 'string', required: true },
    experiment_name: { type: 'string|null', required: true },
    run_name: { type: 'string|null', required: true },
    certificate_file: { type: 'string', required: true },
    username: { type: 'string', required: true },
    password: { type: 'string', required: true },
    certificate_file_id: { type: 'string|null', required: false },
    tags: { type: 'record<string>', required: false },
  },
  hf: {
    output_repo_name: { type: 'string', required: true },
    api_token: { type: 'string', required: true },
  },
}
const PUBLIC: Record<string, readonly string[]> = {
  wandb: ['project', 'name', 'entity', 'tags'],
  mlflow: ['tracking_uri', 'experiment_name', 'run_name', 'tags'],
  hf: ['output_repo_name'],
}

export function validateIntegrations (items: Integration[]): Integration[] {
  return items.map((item, i) => {
    const type = item.type ?? 'wandb'
    // own keys only: FIELDS.toString is Object.prototype's, and such a job was stored, then every
    // list of the project's jobs failed to serialise it (500)
    const fields = Object.hasOwn(FIELDS, type) ? FIELDS[type] : undefined
    if (!fields) throw fieldError(['body', 'integrations', i, 'type'], "Input should be 'wandb', 'mlflow' or 'hf'", 'literal_error', type)
    const config = item[type]
    if (config === undefined || config === null) throw fieldError(['body', 'integrations', i, type], 'Field required', 'missing')
    if (typeof config !== 'object' || Array.isArray(config)) {
      throw fieldError(['body', 'integrations', i, type], 'Input should be a valid dictionary or object to extract fields from', 'model_attributes_type', config)
    }
    for (const [key, { type: want, required }] of Object.entries(fields)) {
      const loc = ['body', 'integrations', i, type, key]
      const v = (config as Record<string, unknown>)[key]
      if (v === undefined) {
        if (required) throw fieldError(loc, 'Field required', 'missing')
        continue
      }
      checkField(loc, want, v)
    }
    return { ...item, type }
  })
}

function checkField (loc: Array<string | number>, want: FieldType, v: unknown): void {
  const isString = (x: unknown) => typeof x === 'string'
  if (want === 'string|null' && v === null) return
  if (want === 'string' || want === 'string|null') {
    if (!isString(v)) throw fieldError(loc, 'Input should be a valid string', 'string_type', v)
  } else if (want === 'string[]') {
    if (!Array.isArray(v)) throw fieldError(loc, 'Input should be a valid list', 'list_type', v)
    const bad = v.findIndex(x => !isString(x))
    if (bad >= 0) throw fieldError([...loc, bad], 'Input should be a valid string', 'string_type', v[bad])
  } else {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw fieldError(loc, 'Input should be a valid dictionary', 'dict_type', v)
    const bad = Object.entries(v).find(([, x]) => !isString(x))
    if (bad) throw fieldError([...loc, bad[0]], 'Input should be a valid string', 'string_type', bad[1])
  }
}

export function publicIntegrations (items: Integration[]): Integration[] {
  return items.map((item) => {
    const type = item.type ?? 'wandb'
    const config = (item[type] ?? {}) as Record<string, unknown>
    const shown = Object.fromEntries((Object.hasOwn(PUBLIC, type) ? PUBLIC[type] ?? [] : [])
      .filter(k => config[k] !== undefined)
      .map(k => [k, config[k]]))
    return { type, [type]: shown }
  })
}

// Which base models the trainer can train: the rules are the trainer's own
// (trainer/opentune_trainer/supported_models.json, which its model.py checks every config.json
// against), read here so that a model it would refuse is refused when the job is created and left
// out of GET /v1/models. The check mirrors trainer/opentune_trainer/support.py reason for reason;
// trainer/tests/model_support_cases.json holds the cases both test suites run.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

interface SupportRules {
  model_types: string[]
  required: string[]
  rope_types: Record<string, string[]>
  fixed: Record<string, unknown>
  expert_fields: string[]
  sliding_window_types: string[]
  layer_types: string[]
}

export interface ModelSupport {
  /** Why the trainer cannot train a model with this config.json, or null when it can. */
  unsupportedReason: (config: unknown) => string | null
  /** What is supported, for error messages. */
  summary: string
}

type Config = Record<string, unknown>

const shown = (v: unknown) => JSON.stringify(v)
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)

export function loadModelSupport (trainerDir: string): ModelSupport {
  const rules = JSON.parse(readFileSync(join(trainerDir, 'opentune_trainer', 'supported_models.json'), 'utf8')) as SupportRules
  return {
    unsupportedReason: (config) => unsupportedReason(rules, config),
    summary: `model_type ${rules.model_types.join(', ')}; rope scaling ${Object.keys(rules.rope_types).join(', ')}; dense models (no mixture of experts)`,
  }
}

function unsupportedReason (rules: SupportRules, cfg: unknown): string | null {
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) return 'config.json is not a JSON object'
  const config = cfg as Config
  const type = config.model_type
  if (type === undefined || type === null) return 'config.json has no model_type'
  if (typeof type !== 'string' || !rules.model_types.includes(type)) return `model_type ${shown(type)} is not supported`
  for (const field of rules.expert_fields) {
    const v = config[field]
    if (isNumber(v) && v > 1) return `mixture-of-experts models (${field} ${shown(v)}) are not supported`
  }
  for (const field of rules.required) {
    const v = config[field]
    if (!(Number.isInteger(v) && (v as number) > 0)) return `config.json needs ${field} as a positive integer`
  }
  for (const [field, want] of Object.entries(rules.fixed)) {
    const v = config[field]
    if (v !== undefined && v !== null && v !== want) return `${field} ${shown(v)} is not supported (only ${shown(want)})`
  }
  return attentionReason(rules, config, type) ?? ropeReason(rules, config)
}

function attentionReason (rules: SupportRules, config: Config, type: string): string | null {
  if (!rules.sliding_window_types.includes(type) && config.use_sliding_window === true) {
    return `sliding-window attention (use_sliding_window) is not supported for ${type}`
  }
  const layers = config.layer_types
  if (Array.isArray(layers)) {
    const other = layers.find(t => !rules.layer_types.includes(t as string))
    if (other !== undefined) return `layer_types ${shown(other)} is not supported (only ${rules.layer_types.join(', ')})`
  }
  return null
}

function ropeReason (rules: SupportRules, config: Config): string | null {
  // as model.py reads it: transformers ≥ 5 writes `rope_parameters`, older ones `rope_scaling`
  const rope = truthy(config.rope_parameters) ?? truthy(config.rope_scaling) ?? {}
  if (typeof rope !== 'object' || Array.isArray(rope)) return 'rope_scaling is not a JSON object'
  const r = rope as Config
  const kind = truthy(r.rope_type) ?? truthy(r.type) ?? 'default'
  const needs = typeof kind === 'string' && Object.hasOwn(rules.rope_types, kind) ? rules.rope_types[kind] : undefined
  if (needs === undefined) return `rope scaling ${shown(kind)} is not supported`
  const missing = needs.filter(k => !isNumber(r[k]))
  return missing.length > 0 ? `rope scaling ${shown(kind)} needs ${missing.join(', ')} as numbers` : null
}

/** Python's `x or y`: an empty string, 0, false, null, {} or [] falls through to the next. */
function truthy (v: unknown): unknown {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return undefined
  if (Array.isArray(v) && v.length === 0) return undefined
  if (typeof v === 'object' && Object.keys(v).length === 0) return undefined
  return v
}

// Nebius SupervisedHParameters: types, ranges and defaults come from the one definition,
// trainer/opentune_trainer/hyperparameters.json, which the trainer checks its job spec against
// too, so the two can never accept different values. This file only names each key's TypeBox
// kind (for the static types) and refuses to start if the JSON says otherwise.
import { readFileSync } from 'node:fs'
import { Type, type Static, type TBoolean, type TInteger, type TNumber, type TOptional } from '@sinclair/typebox'

type Kind = 'integer' | 'number' | 'boolean'

interface Rule {
  type: Kind
  default: number | boolean
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
}

// src/fine-tuning and dist/fine-tuning are both two levels below the repository root
const SOURCE = new URL('../../trainer/opentune_trainer/hyperparameters.json', import.meta.url)
const SHARED = JSON.parse(readFileSync(SOURCE, 'utf8')) as { title: string, properties: Record<string, Rule> }

const KINDS = {
  batch_size: 'integer',
  learning_rate: 'number',
  n_epochs: 'integer',
  warmup_ratio: 'number',
  weight_decay: 'number',
  packing: 'boolean',
  max_grad_norm: 'number',
  context_length: 'integer',
  lora: 'boolean',
  lora_r: 'integer',
  lora_alpha: 'integer',
  lora_dropout: 'number',
} as const satisfies Record<string, Kind>

type Name = keyof typeof KINDS
type Schema<K extends Kind> = K extends 'integer' ? TInteger : K extends 'number' ? TNumber : TBoolean

function field<N extends Name> (name: N): TOptional<Schema<(typeof KINDS)[N]>> {
  const rule = SHARED.properties[name]
  if (rule?.type !== KINDS[name]) throw new Error(`${SOURCE.pathname}: ${name} must be of type ${KINDS[name]}`)
  const { type, ...options } = rule
  const schema = type === 'integer' ? Type.Integer(options) : type === 'number' ? Type.Number(options) : Type.Boolean(options)
  return Type.Optional(schema) as TOptional<Schema<(typeof KINDS)[N]>>
}

const unnamed = Object.keys(SHARED.properties).filter(k => !(k in KINDS))
if (unnamed.length > 0) throw new Error(`${SOURCE.pathname}: ${unnamed.join(', ')} not known to hyperparameters.ts`)

export const SupervisedHParameters = Type.Object({
  batch_size: field('batch_size'),
  learning_rate: field('learning_rate'),
  n_epochs: field('n_epochs'),
  warmup_ratio: field('warmup_ratio'),
  weight_decay: field('weight_decay'),
  packing: field('packing'),
  max_grad_norm: field('max_grad_norm'),
  context_length: field('context_length'),
  lora: field('lora'),
  lora_r: field('lora_r'),
  lora_alpha: field('lora_alpha'),
  lora_dropout: field('lora_dropout'),
}, { additionalProperties: true, title: SHARED.title })

export type Hyperparameters = Required<Static<typeof SupervisedHParameters>> & {
  [unknown: string]: unknown // kept and echoed, not used (an event says so)
}

export const HYPERPARAMETER_DEFAULTS: Readonly<Hyperparameters> = Object.freeze(Object.fromEntries(
  Object.entries(SHARED.properties).map(([k, v]) => [k, v.default])
) as Hyperparameters)

const KNOWN = new Set(Object.keys(HYPERPARAMETER_DEFAULTS))

/** Fills every default (`inherited` values, from a checkpoint continued, before the spec's);
 *  returns the names of keys we do not know (they are kept, not used). */
export function resolveHyperparameters (given: Static<typeof SupervisedHParameters> | null | undefined,
  inherited: Partial<Hyperparameters> = {}): { hyperparameters: Hyperparameters, unknown: string[] } {
  const supplied = given ?? {}
  const unknown = Object.keys(supplied).filter(k => !KNOWN.has(k))
  return { hyperparameters: { ...HYPERPARAMETER_DEFAULTS, ...inherited, ...supplied } as Hyperparameters, unknown }
}

// Nebius SpecDraftHParameters (the spec-draft method: an EAGLE-3 drafter): types, ranges and
// defaults come from the one definition, trainer/opentune_trainer/spec_draft_hyperparameters.json,
// which the trainer checks its job spec against too. As hyperparameters.ts does for supervised, this
// file only names each key's TypeBox kind and refuses to start if the JSON says otherwise.
import { readFileSync } from 'node:fs'
import { Type, type TSchema } from '@sinclair/typebox'
import { errors } from '../errors.js'

interface Rule {
  type: 'integer' | 'number' | 'boolean' | 'string' | 'object'
  default: unknown
  properties?: Record<string, Rule & { enum?: string[] }>
  'x-opentune-trained'?: string[] // values the spec allows that this server trains (others: 400)
  [keyword: string]: unknown
}

// src/fine-tuning and dist/fine-tuning are both two levels below the repository root
const SOURCE = new URL('../../trainer/opentune_trainer/spec_draft_hyperparameters.json', import.meta.url)
const SHARED = JSON.parse(readFileSync(SOURCE, 'utf8')) as { title: string, properties: Record<string, Rule> }

const LOSS_TYPES = ['kl', 'lk_alpha', 'lk_hybrid'] as const
export type SpecDraftLoss = typeof LOSS_TYPES[number]

const KINDS = {
  batch_size: 'integer',
  learning_rate: 'number',
  n_epochs: 'integer',
  warmup_ratio: 'number',
  weight_decay: 'number',
  packing: 'boolean',
  max_grad_norm: 'number',
  context_length: 'integer',
  architecture: 'string',
  num_decoding_heads: 'integer',
  loss: 'object',
  draft_vocab_size: 'integer',
  regenerate_responses: 'boolean',
} as const satisfies Record<string, Rule['type']>
type Name = keyof typeof KINDS

const ANNOTATIONS = new Set(['$comment', 'x-opentune', 'x-opentune-trained'])
const keywords = (rule: Rule) => Object.fromEntries(Object.entries(rule).filter(([k]) => !ANNOTATIONS.has(k) && k !== 'type' && k !== 'properties'))

function rule (name: Name): Rule {
  const r = SHARED.properties[name]
  if (r?.type !== KINDS[name]) throw new Error(`${SOURCE.pathname}: ${name} must be of type ${KINDS[name]}`)
  return r
}

function field (name: Exclude<Name, 'loss'>): TSchema {
  const r = rule(name)
  const options = keywords(r)
  switch (r.type) {
    case 'integer': return Type.Optional(Type.Integer(options))
    case 'number': return Type.Optional(Type.Number(options))
    case 'boolean': return Type.Optional(Type.Boolean(options))
    default: return Type.Optional(Type.String(options))
  }
}

// SpecDraftLossParams: the enum is the spec's, a value outside it a 422 (loc …loss.type)
function lossField () {
  const inner = rule('loss').properties?.type
  const listed = inner?.enum ?? []
  if (listed.length !== LOSS_TYPES.length || LOSS_TYPES.some(t => !listed.includes(t))) {
    throw new Error(`${SOURCE.pathname}: loss.type must list ${LOSS_TYPES.join(', ')}`)
  }
  const type = Type.Union(LOSS_TYPES.map(t => Type.Literal(t)), { default: inner?.default })
  return Type.Optional(Type.Object({ type: Type.Optional(type) }, { additionalProperties: true, title: 'SpecDraftLossParams' }))
}

const unnamed = Object.keys(SHARED.properties).filter(k => !(k in KINDS))
if (unnamed.length > 0) throw new Error(`${SOURCE.pathname}: ${unnamed.join(', ')} not known to spec-draft-hyperparameters.ts`)

export const SpecDraftHParameters = Type.Object({
  batch_size: field('batch_size'),
  learning_rate: field('learning_rate'),
  n_epochs: field('n_epochs'),
  warmup_ratio: field('warmup_ratio'),
  weight_decay: field('weight_decay'),
  packing: field('packing'),
  max_grad_norm: field('max_grad_norm'),
  context_length: field('context_length'),
  architecture: field('architecture'),
  num_decoding_heads: field('num_decoding_heads'),
  loss: lossField(),
  draft_vocab_size: field('draft_vocab_size'),
  regenerate_responses: field('regenerate_responses'),
}, { additionalProperties: true, title: SHARED.title })

// the request as the schema has checked it: known keys well typed, loss an object if there
type SpecDraftRequest = Partial<Omit<SpecDraftHyperparameters, 'loss'>> & { loss?: Record<string, unknown> }

export interface SpecDraftHyperparameters {
  batch_size: number
  learning_rate: number
  n_epochs: number
  warmup_ratio: number
  weight_decay: number
  packing: boolean
  max_grad_norm: number
  context_length: number
  architecture: string
  num_decoding_heads: number
  loss: { type: SpecDraftLoss, [unknown: string]: unknown }
  draft_vocab_size: number
  regenerate_responses: boolean
  [unknown: string]: unknown // kept and echoed, not used (an event says so)
}

export const SPEC_DRAFT_DEFAULTS: Readonly<SpecDraftHyperparameters> = Object.freeze(Object.fromEntries(
  Object.entries(SHARED.properties).map(([k, v]) => [k, v.default])
) as SpecDraftHyperparameters)

const KNOWN = new Set(Object.keys(SPEC_DRAFT_DEFAULTS))
const TRAINED_ARCHITECTURES = rule('architecture')['x-opentune-trained'] ?? []

/** Fills every default (loss.type too); returns the names of keys we do not know (kept, not used).
 *  An architecture the spec allows but this server does not train is a 400 naming it (`at` is
 *  where the hyperparameters sit in the request). */
export function resolveSpecDraftHyperparameters (given: SpecDraftRequest | null | undefined,
  at: string): { hyperparameters: SpecDraftHyperparameters, unknown: string[] } {
  const supplied = given ?? {}
  const loss = { ...SPEC_DRAFT_DEFAULTS.loss, ...supplied.loss }
  const unknown = [
    ...Object.keys(supplied).filter(k => !KNOWN.has(k)),
    ...Object.keys(loss).filter(k => k !== 'type').map(k => `loss.${k}`),
  ]
  const hyperparameters = { ...SPEC_DRAFT_DEFAULTS, ...supplied, loss } as SpecDraftHyperparameters
  if (!TRAINED_ARCHITECTURES.includes(hyperparameters.architecture)) {
    throw errors.unsupportedParameter(`${at}.architecture`, `this server trains ${TRAINED_ARCHITECTURES.map(a => `'${a}'`).join(', ')} drafters only (EAGLE-3), not '${hyperparameters.architecture}'.`)
  }
  return { hyperparameters, unknown }
}

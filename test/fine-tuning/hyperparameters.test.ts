// The one definition of the hyperparameters (trainer/opentune_trainer/hyperparameters.json, read by
// the API's schema and by the trainer's spec.py) is the Nebius spec's SupervisedHParameters.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import YAML from 'yaml'
import { HYPERPARAMETER_DEFAULTS, resolveHyperparameters, SupervisedHParameters } from '../../src/fine-tuning/hyperparameters.js'
import { SPEC_DRAFT_DEFAULTS, SpecDraftHParameters } from '../../src/fine-tuning/spec-draft-hyperparameters.js'

const ROOT = join(import.meta.dirname, '..', '..')
const KEYWORDS = ['type', 'minimum', 'maximum', 'exclusiveMinimum', 'default'] as const

type Props = Record<string, Record<string, unknown>>
const schemas = (YAML.parse(readFileSync(join(ROOT, 'spec', 'nebius-fine-tuning-openapi.yaml'), 'utf8')) as { components: { schemas: Record<string, { properties: Props }> } })
  .components.schemas
const nebius = schemas.SupervisedHParameters!.properties
const sharedFile = (name: string) => (JSON.parse(readFileSync(join(ROOT, 'trainer', 'opentune_trainer', name), 'utf8')) as { properties: Props }).properties
const shared = sharedFile('hyperparameters.json')

describe('hyperparameters.json', () => {
  it('has every SupervisedHParameters key with the spec\'s type, range and default', () => {
    assert.deepEqual(Object.keys(shared).sort(), Object.keys(nebius).sort())
    for (const [name, spec] of Object.entries(nebius)) {
      for (const k of KEYWORDS) assert.equal(shared[name]![k], spec[k], `${name}.${k}`)
    }
  })

  it('is the API\'s request schema and its defaults', () => {
    for (const [name, rule] of Object.entries(shared)) {
      const schema = (SupervisedHParameters.properties as Props)[name]!
      for (const k of KEYWORDS) assert.equal(schema[k], rule[k], `${name}.${k}`)
      assert.equal(HYPERPARAMETER_DEFAULTS[name], rule.default)
    }
    assert.equal(resolveHyperparameters({}).hyperparameters.lora_alpha, 8)
  })
})

describe('spec_draft_hyperparameters.json', () => {
  const draft = sharedFile('spec_draft_hyperparameters.json')
  const spec = schemas.SpecDraftHParameters!.properties
  const lossSpec = schemas.SpecDraftLossParams!.properties
  const ours = Object.keys(draft).filter(k => draft[k]!['x-opentune'] === true)

  it('has every SpecDraftHParameters key with the spec\'s type, range and default; only marked keys beyond', () => {
    assert.ok(ours.includes('draft_vocab_size'))
    assert.deepEqual(Object.keys(draft).filter(k => !ours.includes(k)).sort(), Object.keys(spec).sort(), 'what is not the spec\'s is marked')
    for (const [name, rule] of Object.entries(spec)) {
      if (name === 'loss') continue // a $ref to SpecDraftLossParams
      for (const k of [...KEYWORDS, 'exclusiveMaximum']) assert.equal(draft[name]![k], rule[k], `${name}.${k}`)
    }
    const loss = draft.loss as { type: string, properties: Props, default: unknown }
    assert.equal(loss.type, 'object')
    assert.deepEqual(loss.properties.type, { type: 'string', enum: lossSpec.type!.enum, default: lossSpec.type!.default })
    assert.deepEqual(loss.default, { type: lossSpec.type!.default }) // what an absent loss means
  })

  it('is the API\'s request schema and its defaults', () => {
    for (const [name, rule] of Object.entries(draft)) {
      if (name === 'loss') continue
      const schema = (SpecDraftHParameters.properties as Props)[name]!
      for (const k of [...KEYWORDS, 'exclusiveMaximum']) assert.equal(schema[k], rule[k], `${name}.${k}`)
      assert.equal(SPEC_DRAFT_DEFAULTS[name], rule.default)
    }
    assert.deepEqual(SPEC_DRAFT_DEFAULTS.loss, { type: 'kl' })
  })
})

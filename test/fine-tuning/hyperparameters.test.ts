// The one definition of the hyperparameters (trainer/opentune_trainer/hyperparameters.json, read by
// the API's schema and by the trainer's spec.py) is the Nebius spec's SupervisedHParameters.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import YAML from 'yaml'
import { HYPERPARAMETER_DEFAULTS, resolveHyperparameters, SupervisedHParameters } from '../../src/fine-tuning/hyperparameters.js'

const ROOT = join(import.meta.dirname, '..', '..')
const KEYWORDS = ['type', 'minimum', 'maximum', 'exclusiveMinimum', 'default'] as const

type Props = Record<string, Record<string, unknown>>
const nebius = (YAML.parse(readFileSync(join(ROOT, 'spec', 'nebius-fine-tuning-openapi.yaml'), 'utf8')) as { components: { schemas: Record<string, { properties: Props }> } })
  .components.schemas.SupervisedHParameters!.properties
const shared = (JSON.parse(readFileSync(join(ROOT, 'trainer', 'opentune_trainer', 'hyperparameters.json'), 'utf8')) as { properties: Props }).properties

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

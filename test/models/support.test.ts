// The service judges every config.json of trainer/tests/model_support_cases.json exactly as the
// trainer's support.py does (tests/test_support.py runs the same cases), from the one list.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { loadConfig } from '../../src/config.js'
import { loadModelSupport } from '../../src/models/support.js'

interface Case { name: string, set: Record<string, unknown>, reason: string | null }

const { trainerDir } = loadConfig({})
const { base, cases } = JSON.parse(readFileSync(join(trainerDir, 'tests', 'model_support_cases.json'), 'utf8')) as { base: Record<string, unknown>, cases: Case[] }
const support = loadModelSupport(trainerDir)

describe('model support (supported_models.json)', () => {
  for (const c of cases) {
    it(`${c.name}: ${c.reason ?? 'supported'}`, () => {
      const config = Object.fromEntries(Object.entries({ ...base, ...c.set }).filter(([, v]) => v !== null))
      assert.equal(support.unsupportedReason(config), c.reason)
    })
  }

  it('names what is supported', () => {
    assert.equal(support.summary, 'model_type llama, mistral, qwen2, qwen3; rope scaling default, linear, llama3; dense models (no mixture of experts)')
  })

  it('refuses a config.json that is not an object', () => {
    assert.equal(support.unsupportedReason([]), 'config.json is not a JSON object')
    assert.equal(support.unsupportedReason(null), 'config.json is not a JSON object')
  })
})

// The README.md pushed with a job's final checkpoint: a drafter's says what it is and for which model.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SPEC_DRAFT_DEFAULTS } from '../../src/fine-tuning/spec-draft-hyperparameters.js'
import { completeMetrics } from '../../src/fine-tuning/checkpoints.store.js'
import { modelCard } from '../../src/hub/model-card.js'

describe('model card', () => {
  it('calls a spec-draft job\'s checkpoint an EAGLE-3 drafter for its target, with vLLM\'s command and its metrics', () => {
    const target = 'ft:opentune/tiny-llama:main::ftjob-1:ckpt-step-36'
    const card = modelCard({
      repo: 'me/tiny-drafter',
      baseModel: 'opentune/tiny-llama',
      jobId: 'ftjob-2',
      checkpoint: 'ft:opentune/tiny-llama:main::ftjob-2:ckpt-step-12',
      step: 12,
      kind: 'drafter',
      target,
      trainingFile: 'train.jsonl',
      validationFile: null,
      hyperparameters: { ...SPEC_DRAFT_DEFAULTS, loss: { type: 'lk_hybrid' } },
      metrics: completeMetrics({ step: 12, train_loss: 0.5, valid_acceptance_length: 2.25 }),
    })
    assert.match(card, /^base_model: "opentune\/tiny-llama"$/m)
    assert.match(card, /^ {2}- eagle3$/m)
    assert.doesNotMatch(card, /library_name: peft|full-fine-tune/)
    assert.match(card, /An EAGLE-3 speculative-decoding drafter/)
    assert.ok(card.includes(`\`${target}\` (fine-tuned from \`opentune/tiny-llama\`)`), card)
    assert.ok(card.includes('--speculative-config \'{"method":"eagle3","model":"me/tiny-drafter","num_speculative_tokens":3}\''), card)
    assert.match(card, /^\| loss \| \{"type":"lk_hybrid"\} \|$/m)
    assert.match(card, /^\| valid_acceptance_length \| 2\.25 \|$/m)
  })
})

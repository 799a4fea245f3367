// What `npm run demo` shows, asserted: the built-in random-initialised opentune/tiny-llama, fine-tuned
// through the openai client on a dozen made-up facts (scripts/demo-qa.ts: the same questions and job
// settings as the demo), answers them exactly (greedy chat completions) where the base model does not.
// A real training run on CPU (~15 s on 2 cores) and the embedded inference engine.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import OpenAI from 'openai'
import { startService, type Service } from '../../src/server.js'
import { DEMO_JOB, QA_FILE, QA_PAIRS, askAll, exactCount } from '../../scripts/demo-qa.js'
import { sdkClient, testConfig } from '../helper.js'

const TRAINING_BOUND_MS = 5 * 60_000 // a generous bound for a run of ~15 s: a slow machine is not a failure

describe('the demo loop: fine-tune on made-up facts, then ask them through chat completions', () => {
  let service: Service
  let client: OpenAI
  let cleanup: () => Promise<void>

  before(async () => {
    const made = await testConfig('sqlite', { OPENTUNE_DEVICE: 'cpu' })
    cleanup = made.cleanup
    service = await startService({ ...made.config, port: 0 })
    client = await sdkClient(service, 'e2e')
  })
  after(async () => {
    await service.close()
    await cleanup()
  })

  it('the fine-tuned model answers ≥ 90% of the trained questions exactly, the base model ≤ 10%', async () => {
    assert.ok(QA_PAIRS.length >= 8, 'a dozen or so facts')
    const base = await askAll(client, DEMO_JOB.model)
    assert.equal(base.length, QA_PAIRS.length)

    const file = await client.files.create({ file: createReadStream(QA_FILE), purpose: 'fine-tune' })
    const created = await client.fineTuning.jobs.create({
      ...DEMO_JOB,
      training_file: file.id,
      hyperparameters: DEMO_JOB.hyperparameters as never,
    })
    const deadline = Date.now() + TRAINING_BOUND_MS
    let job = created
    while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      assert.ok(Date.now() < deadline, `still ${job.status} after ${TRAINING_BOUND_MS / 1000} s`)
      await new Promise(resolve => setTimeout(resolve, 250))
      job = await client.fineTuning.jobs.retrieve(created.id)
    }
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    assert.ok(job.fine_tuned_model)

    const tuned = await askAll(client, job.fine_tuned_model)
    const misses = (asked: typeof tuned) => asked.filter(a => !a.exact).map(a => `${a.question} → ${JSON.stringify(a.got)}`)
    assert.ok(exactCount(tuned) >= Math.ceil(0.9 * QA_PAIRS.length),
      `fine-tuned ${exactCount(tuned)}/${QA_PAIRS.length} exact; missed:\n${misses(tuned).join('\n')}`)
    assert.ok(exactCount(base) <= Math.floor(0.1 * QA_PAIRS.length), `base ${exactCount(base)}/${QA_PAIRS.length} exact`)
  })
})

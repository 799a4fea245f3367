import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, it } from 'node:test'
import { dataCheckCommand } from '../../src/data/check-command.js'
import { modelDir, writeJsonl } from './helpers.js'

const llama = modelDir('llama')
const GOOD = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] }

async function check (args: string[]): Promise<{ code: number, output: string }> {
  const out = new PassThrough()
  let output = ''
  out.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await dataCheckCommand(args, out)
  return { code, output }
}

describe('opentune data check', () => {
  it('prints the counts of a valid file, human-readable and as JSON', async () => {
    const file = writeJsonl([GOOD, GOOD, GOOD])
    const human = await check([file, '--model-dir', llama, '--batch-size', '2', '--context-length', '64'])
    assert.equal(human.code, 0)
    assert.match(human.output, /valid \(chat format\)\n {2}examples {9}3\n {2}tokens {11}\d+\n {2}trained tokens {3}9 \(/)
    assert.match(human.output, /rows {13}1 \(seq_len 64, packing on\)\n {2}steps per epoch {2}1 \(batch size 2\)/)
    const json = await check([file, '--model-dir', llama, '--no-packing', '--json'])
    const report = JSON.parse(json.output) as Record<string, unknown>
    assert.deepEqual({ ...report, tokens: 0 }, { file, ok: true, format: 'chat', examples: 3, rows: 3, tokens: 0, loss_tokens: 9, seq_len: 8192, packing: false, batch_size: 8, steps_per_epoch: 1 })
  })

  it('prints the problems and exits 1', async () => {
    const { code, output } = await check([writeJsonl([GOOD, 'nope', { text: 'x' }]), '--model-dir', llama])
    assert.equal(code, 1)
    assert.match(output, /invalid\nThe file has 2 problems:\nline 2: not valid JSON: .*\nline 3: this line is in the text format but the file is in the chat format/)
  })

  it('exits 2 on bad usage, a missing file or an unusable model folder', async () => {
    assert.equal((await check(['--model-dir', llama])).code, 2)
    assert.equal((await check([writeJsonl([GOOD]), '--model-dir', llama, '--batch-size', '0'])).code, 2)
    assert.equal((await check(['/nonexistent.jsonl', '--model-dir', llama])).code, 2)
    const noModel = await check([writeJsonl([GOOD]), '--model-dir', '/nonexistent'])
    assert.equal(noModel.code, 2)
    assert.match(noModel.output, /has no tokenizer\.json/)
  })
})

// The Nebius Custom Speculator rows ({"input_ids", "attention_mask", "labels"}, Hugging Face's names):
// input_ids is token_ids under another name, padding (attention_mask 0) is dropped with its labels,
// and a bad row is a line-numbered problem naming the field and index.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { prepareDataset } from '../../src/data/index.js'
import { loadModel, modelDir, readSplit, tempDir, writeJsonl } from './helpers.js'

const llama = modelDir('llama')

async function prepare (lines: unknown[]) {
  const outDir = join(tempDir(), 'train')
  const result = await prepareDataset({
    path: writeJsonl(lines),
    split: 'train',
    modelDir: llama,
    model: await loadModel(llama),
    contextLength: 64,
    packing: true,
    batchSize: 1,
    outDir,
  })
  return { result, outDir }
}

describe('input_ids / attention_mask / labels rows', () => {
  it('train as the token_ids rows with the padding left out', async () => {
    const { result, outDir } = await prepare([
      {
        input_ids: [128000, 10, 11, 12, 0, 0],
        attention_mask: [1, 1, 1, 1, 0, 0],
        labels: [-100, -100, 11, 12, -100, -100],
      },
      { input_ids: [128000, 20, 21], labels: [-100, 20, 21] },
      { token_ids: [128000, 30, 31] }, // the two names mix in one file: one format
    ])
    assert.ok(result.ok, JSON.stringify(result))
    const docs = readSplit(outDir).rows.flat()
    const byFirst = (t: number) => docs.find(d => d.tokens[1] === t)
    assert.deepEqual(byFirst(10), { tokens: [128000, 10, 11, 12], targets: [-100, 11, 12, -100] })
    assert.deepEqual(byFirst(20), { tokens: [128000, 20, 21], targets: [20, 21, -100] })
    assert.deepEqual(byFirst(30), { tokens: [128000, 30, 31], targets: [30, 31, -100] })
    assert.equal(result.stats.tokens, 10, 'padding is not counted')
  })

  it('name the field, the index and the line of what is wrong', async () => {
    const { result } = await prepare([
      { input_ids: [1, 2, 3], attention_mask: [1, 2, 1] },
      { input_ids: [1, 2, 3], attention_mask: [1, 1] },
      { input_ids: [1, 2], token_ids: [1, 2] },
      { input_ids: [1, 2], attention_mask: [0, 0] },
      { input_ids: [1, 128256, 2], attention_mask: [1, 1, 1] },
      { input_ids: [1, 2], labels: [2] },
      { input_ids: [1, 2], attention_mask: 'all' },
      { input_ids: [] },
      { input_ids: [1, 128256, 2, 3], attention_mask: [1, 0, 1, 1] }, // the padding id is never looked at
    ])
    assert.equal(result.ok, false)
    assert.deepEqual(result.ok ? [] : result.problems.map(p => [p.line, p.message, p.param]), [
      [1, 'attention_mask[1] must be 0 or 1 (got 2)', 'attention_mask[1]'],
      [2, '"attention_mask" has 2 entries but "input_ids" has 3; they must be aligned one to one', 'attention_mask'],
      [3, 'the line has both "token_ids" and "input_ids", two names for the same field; give one', 'input_ids'],
      [4, '"attention_mask" is 0 everywhere: the line has no tokens', 'attention_mask'],
      [5, 'input_ids[1] must be a token id in [0, 128256) (got 128256)', 'input_ids[1]'],
      [6, '"labels" has 1 entries but "input_ids" has 2; they must be aligned one to one', 'labels'],
      [7, '"attention_mask" must be an array of 0 and 1 (got "all")', 'attention_mask'],
      [8, '"input_ids" must be a non-empty array of token ids (got an array)', 'input_ids'],
    ])
  })
})

// The built-in model (models/opentune/tiny-llama: byte-level tokenizer, Llama-3-style template)
// goes through the same pipeline; skipped until its files exist.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { describe, it } from 'node:test'
import { loadModelTokenizer, prepareDataset } from '../../src/data/index.js'
import { readSplit, tempDir, trainedRuns, writeJsonl } from './helpers.js'

const dir = resolve(import.meta.dirname, '../../models/opentune/tiny-llama')
const present = existsSync(join(dir, 'tokenizer.json')) && existsSync(join(dir, 'tokenizer_config.json'))

describe('opentune/tiny-llama', { skip: present ? false : 'models/opentune/tiny-llama is not there yet' }, () => {
  it('templates, tokenizes and masks a chat, capped at its 1024 positions', async () => {
    const model = await loadModelTokenizer(dir)
    const outDir = join(tempDir(), 'train')
    const path = writeJsonl([{ messages: [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'Hi there' }, { role: 'assistant', content: 'Hello, friend!' }] }])
    const result = await prepareDataset({ path, split: 'train', modelDir: dir, model, contextLength: 8192, packing: true, batchSize: 8, outDir })
    assert.ok(result.ok, JSON.stringify(result))
    assert.equal(result.stats.seqLen, Math.min(8192, model.maxPositionEmbeddings ?? 8192))
    const { rows, manifest } = readSplit(outDir)
    assert.equal(manifest.vocab_size, model.vocabSize)
    const doc = rows[0]?.[0]
    assert.ok(doc !== undefined)
    assert.ok(doc.tokens.every((id) => id >= 0 && id < model.vocabSize))
    assert.equal(doc.tokens.filter((id) => id === model.bosId).length, 1, 'one BOS')
    const text = await model.tokenizer.decode(doc.tokens, false)
    assert.equal(text, '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello, friend!<|eot_id|>')
    const trained = await Promise.all(trainedRuns(doc).map((run) => model.tokenizer.decode(run, false)))
    assert.deepEqual(trained, ['Hello, friend!<|eot_id|>'])
  })
})

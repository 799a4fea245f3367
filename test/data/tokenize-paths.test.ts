// The fast paths are checked against the plain ones: the segment tokenizer against `encode`, the
// single-render span finder against the prefix-render one, the segment mode against whole texts.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ChatRenderer } from '../../src/data/chat-template.js'
import type { ChatExample } from '../../src/data/examples.js'
import { prepareDataset } from '../../src/data/index.js'
import { makeSpecialTokenFinder } from '../../src/data/special-tokens.js'
import { validateChat } from '../../src/data/validate-chat.js'
import { loadModel, modelDir, readSplit, tempDir, writeJsonl } from './helpers.js'

const dirs = { llama: modelDir('llama'), qwen: modelDir('qwen') }

const TEXTS = [
  'plain words', ' leading and trailing ', '\n\nafter newlines', 'x', '  ', 'émoji 😀 and 中文',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
  '<|im_start|>assistant\n<think>\n\n</think>\n\nOK<|im_end|>\n', 'a<|eot_id|><|eot_id|>b', '<|eot_id', 'tabs\tand\r\nCRLF',
  'Answer in one short line. '.repeat(3), 'Answer in one short line. '.repeat(3),
]

const CHATS = [
  [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }],
  [{ role: 'user', content: 'A?' }, { role: 'assistant', content: ' spaced ' }, { role: 'user', content: 'B?' }, { role: 'assistant', content: 'Two\nlines.' }],
  [{ role: 'user', content: 'Q' }, { role: 'assistant', content: 'first', weight: 0 }, { role: 'user', content: 'R' }, { role: 'assistant', content: 'second 😀' }],
]

for (const name of ['llama', 'qwen'] as const) {
  describe(`${name}: fast paths equal the plain ones`, () => {
    it('segment tokenizer = encode(text, addSpecialTokens: false), including cached repeats', async () => {
      const model = await loadModel(dirs[name])
      const segmenter = model.segmenter
      assert.ok(segmenter !== null, 'the exact fast path is available for this tokenizer')
      for (let round = 0; round < 3; round++) {
        const fast: number[][] = await segmenter.encodeAll(TEXTS)
        const plain = await Promise.all(TEXTS.map(async (text) =>
          (await model.tokenizer.encode(text, null, { addSpecialTokens: false })).getIds()))
        assert.deepEqual(fast, plain, `round ${round}`)
      }
    })

    it('one render with generation headers finds the same spans as per-message prefix renders', async () => {
      const model = await loadModel(dirs[name])
      const renderer = new ChatRenderer(model)
      const context = { vocabSize: model.vocabSize, findSpecialToken: makeSpecialTokenFinder(model.specialTokens) }
      for (const messages of CHATS) {
        const example = validateChat({ messages }, 1, context) as ChatExample
        const fast = renderer.render(example)
        const slow = (renderer as unknown as {
          spansFromPrefixes: (t: string, e: ChatExample, tpl: unknown) => unknown
        }).spansFromPrefixes(fast.text, example, model.chatTemplates.get('default'))
        assert.deepEqual(fast.spans, slow)
      }
    })

    it('segment mode and whole-text mode give the same documents', async () => {
      const model = await loadModel(dirs[name])
      const path = writeJsonl(CHATS.map((messages) => ({ messages })))
      const read = async (segmenter: typeof model.segmenter): Promise<unknown> => {
        const outDir = `${tempDir()}/train`
        const result = await prepareDataset({ path, split: 'train', modelDir: dirs[name], model: { ...model, segmenter }, contextLength: 512, packing: false, batchSize: 1, outDir })
        assert.ok(result.ok)
        return readSplit(outDir).rows
      }
      assert.deepEqual(await read(null), await read(model.segmenter))
    })
  })
}

// The four formats end to end: shards written, read back as the trainer reads them.
import assert from 'node:assert/strict'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, it } from 'node:test'
import { prepareDataset, type PrepareDatasetOptions } from '../../src/data/index.js'
import { loadModel, modelDir, readSplit, tempDir, trainedRuns, writeJsonl, type ReadDoc } from './helpers.js'

const llama = modelDir('llama')
const qwen = modelDir('qwen')

async function prepare (
  path: string,
  options: Partial<PrepareDatasetOptions> = {}
): Promise<{ rows: ReadDoc[][], docs: ReadDoc[], stats: unknown, outDir: string }> {
  const dir = options.modelDir ?? llama
  const outDir = options.outDir ?? join(tempDir(), 'train')
  const result = await prepareDataset({
    path,
    split: 'train',
    modelDir: dir,
    model: await loadModel(dir),
    contextLength: 4096,
    packing: false,
    batchSize: 4,
    outDir,
    ...options,
  })
  assert.ok(result.ok, JSON.stringify(result))
  const { rows, manifest } = readSplit(outDir)
  assert.equal(manifest.rows, result.stats.rows)
  assert.equal(manifest.tokens, result.stats.tokens)
  assert.equal(manifest.loss_tokens, result.stats.lossTokens)
  return { rows, docs: rows.flat(), stats: result.stats, outDir }
}

/** Every target is the next token of its own document (or -100), and the last position has none. */
function assertTargetsStayInDocument (doc: ReadDoc): void {
  doc.targets.forEach((target, i) => {
    if (target !== -100) assert.equal(target, doc.tokens[i + 1], `target ${i} is the next token`)
  })
  assert.equal(doc.targets.at(-1), -100)
}

async function decode (ids: number[], dir = llama): Promise<string> {
  return await (await loadModel(dir)).tokenizer.decode(ids, false)
}

describe('prompt/completion', () => {
  it('Llama: BOS + prompt + completion + EOS; trains the completion and EOS', async () => {
    const { docs } = await prepare(writeJsonl([{ prompt: 'Translate to French: cat\n', completion: 'chat' }]))
    const doc = docs[0] as ReadDoc
    assert.equal(await decode(doc.tokens), '<|begin_of_text|>Translate to French: cat\nchat<|eot_id|>')
    assert.deepEqual(await Promise.all(trainedRuns(doc).map((run) => decode(run))), ['chat<|eot_id|>'])
    assertTargetsStayInDocument(doc)
  })

  it('Qwen: no BOS (its tokenizer adds none), <|im_end|> as EOS', async () => {
    const { docs } = await prepare(writeJsonl([{ prompt: 'Q: 1+1?\nA:', completion: ' 2' }]), { modelDir: qwen })
    const doc = docs[0] as ReadDoc
    assert.equal(await decode(doc.tokens, qwen), 'Q: 1+1?\nA: 2<|im_end|>')
    assert.deepEqual(await Promise.all(trainedRuns(doc).map((run) => decode(run, qwen))), [' 2<|im_end|>'])
  })
})

describe('text', () => {
  it('trains every token after the first, ends with EOS, no double BOS when the text has one', async () => {
    const { docs } = await prepare(writeJsonl([{ text: 'The cat sat.' }, { text: '<|begin_of_text|>Already has BOS.' }]))
    const [plain, withBos] = docs as [ReadDoc, ReadDoc]
    assert.equal(await decode(plain.tokens), '<|begin_of_text|>The cat sat.<|eot_id|>')
    assert.deepEqual(plain.targets.slice(0, -1), plain.tokens.slice(1))
    assert.equal(await decode(withBos.tokens), '<|begin_of_text|>Already has BOS.<|eot_id|>')
    assertTargetsStayInDocument(plain)
  })
})

describe('pretokenized', () => {
  it('passes labels through unchanged, shifted by one (targets[i] = labels[i+1])', async () => {
    const { docs } = await prepare(writeJsonl([
      { token_ids: [128000, 10, 11, 12, 13], labels: [-100, -100, 11, 12, 13] },
      { token_ids: [128000, 20, 21] },
    ]))
    assert.deepEqual(docs[0], { tokens: [128000, 10, 11, 12, 13], targets: [-100, 11, 12, 13, -100] })
    assert.deepEqual(docs[1], { tokens: [128000, 20, 21], targets: [20, 21, -100] })
  })

  it('rejects ids outside the vocabulary and misaligned labels', async () => {
    const path = writeJsonl([
      { token_ids: [1, 128256] },
      { token_ids: [1, 2], labels: [2] },
      { token_ids: [1, 2], labels: [-100, -100] },
    ])
    const result = await prepareDataset({
      path,
      split: 'train',
      modelDir: llama,
      model: await loadModel(llama),
      contextLength: 64,
      packing: true,
      batchSize: 1,
    })
    assert.equal(result.ok, false)
    assert.deepEqual(result.ok ? [] : result.problems.map((p) => [p.line, p.message]), [
      [1, 'token_ids[1] must be a token id in [0, 128256) (got 128256)'],
      [2, '"labels" has 1 entries but "token_ids" has 2; they must be aligned one to one'],
      [3, 'the example has no trained tokens (every label is -100)'],
    ])
  })
})

describe('packing', () => {
  const texts = Array.from({ length: 60 }, (_, i) => ({ text: `Example ${i}: ` + 'lorem ipsum '.repeat(1 + (i * 7) % 23) }))

  it('keeps documents whole, rows within seq_len, targets inside their document', async () => {
    const path = writeJsonl(texts)
    const unpacked = await prepare(path, { contextLength: 64 })
    const packed = await prepare(path, { contextLength: 64, packing: true })
    assert.equal(unpacked.rows.length, 60)
    assert.ok(packed.rows.length < 40, `packed into ${packed.rows.length} rows`)
    for (const row of packed.rows) {
      const length = row.reduce((sum, doc) => sum + doc.tokens.length, 0)
      assert.ok(length >= 1 && length <= 64, `row of ${length} tokens`)
    }
    packed.docs.forEach(assertTargetsStayInDocument)
    const key = (doc: ReadDoc): string => JSON.stringify(doc)
    assert.deepEqual(packed.docs.map(key).sort(), unpacked.docs.map(key).sort(), 'the same documents, whole')
    assert.deepEqual(packed.stats, { format: 'text', examples: 60, rows: packed.rows.length, tokens: (packed.stats as { tokens: number }).tokens, lossTokens: (unpacked.stats as { lossTokens: number }).lossTokens, seqLen: 64, packing: true, stepsPerEpoch: Math.ceil(packed.rows.length / 4) })
  })

  it('splits large outputs into several shards that read back the same', async () => {
    const path = writeJsonl(texts)
    const one = await prepare(path, { contextLength: 64, packing: true })
    const many = await prepare(path, { contextLength: 64, packing: true, maxShardTokens: 200 })
    assert.ok(readSplit(many.outDir).manifest.shards.length > 3)
    assert.deepEqual(many.rows, one.rows)
  })
})

describe('context length and files', () => {
  it('caps seq_len at the model\'s max_position_embeddings and says so', async () => {
    const small = modelDir('llama', { max_position_embeddings: 32 })
    const ok = await prepare(writeJsonl([{ text: 'short' }]), { modelDir: small, contextLength: 8192 })
    assert.equal((ok.stats as { seqLen: number }).seqLen, 32)
    const result = await prepareDataset({ path: writeJsonl([{ text: 'word '.repeat(40) }]), split: 'valid', modelDir: small, model: await loadModel(small), contextLength: 8192, packing: true, batchSize: 1 })
    assert.match(result.ok ? '' : result.problems[0]?.message ?? '', /^the example is 43 tokens long, more than the context length of 32 \(the model's max_position_embeddings; context_length asked for 8192\); shorten or split it/)
  })

  it('accepts a BOM, CRLF line ends and a last line without newline', async () => {
    const path = join(tempDir(), 'crlf.jsonl')
    writeFileSync(path, '\uFEFF{"text": "one"}\r\n\r\n{"text": "two"}\r\n{"text": "three"}')
    const { docs } = await prepare(path)
    assert.deepEqual(await Promise.all(docs.map((doc) => decode(doc.tokens))), ['<|begin_of_text|>one<|eot_id|>', '<|begin_of_text|>two<|eot_id|>', '<|begin_of_text|>three<|eot_id|>'])
  })

  it('replaces an existing split folder and leaves no temp folders; a failed run writes nothing', async () => {
    const outDir = join(tempDir(), 'train')
    await prepare(writeJsonl([{ text: 'first' }]), { outDir })
    const second = await prepare(writeJsonl([{ text: 'second' }, { text: 'third' }]), { outDir })
    assert.equal(second.docs.length, 2)
    assert.deepEqual(readdirSync(dirname(outDir)), ['train'])
    const failedDir = join(tempDir(), 'valid')
    const failed = await prepareDataset({ path: writeJsonl(['oops']), split: 'valid', modelDir: llama, model: await loadModel(llama), contextLength: 64, packing: true, batchSize: 1, outDir: failedDir })
    assert.equal(failed.ok, false)
    assert.deepEqual(readdirSync(dirname(failedDir)), [])
  })

  it('gives the same shards and problems with the worker thread as without', async () => {
    const chats = Array.from({ length: 40 }, (_, i) => ({ messages: [{ role: 'user', content: `Question ${i}?` }, { role: 'assistant', content: `Answer ${i}.` }] }))
    const path = writeJsonl(chats)
    const inline = await prepare(path, { contextLength: 128, packing: true, workerThread: false })
    const threaded = await prepare(path, { contextLength: 128, packing: true, workerThread: true })
    assert.deepEqual(threaded.rows, inline.rows)
    assert.deepEqual(threaded.stats, inline.stats)
    const bad = writeJsonl([...chats.slice(0, 3), 'nope', { text: 'x' }])
    const results = await Promise.all([false, true].map(async (workerThread) => await prepareDataset({ path: bad, split: 'train', modelDir: llama, model: await loadModel(llama), contextLength: 128, packing: true, batchSize: 1, workerThread })))
    assert.deepEqual(results[1], results[0])
    assert.equal(results[0]?.ok, false)
  })

  it('stops when aborted and leaves nothing behind', async () => {
    const outDir = join(tempDir(), 'train')
    const controller = new AbortController()
    controller.abort(new Error('job cancelled'))
    await assert.rejects(prepareDataset({ path: writeJsonl([{ text: 'x' }]), split: 'train', modelDir: llama, model: await loadModel(llama), contextLength: 64, packing: true, batchSize: 1, outDir, signal: controller.signal }), /job cancelled/)
    assert.equal(existsSync(outDir), false)
    assert.deepEqual(readdirSync(dirname(outDir)), [])
  })
})

// Bad input: every case ends as a line-numbered problem, never a crash, and the file is read to the end.
import assert from 'node:assert/strict'
import { createWriteStream, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { describe, it } from 'node:test'
import { formatProblems, prepareDataset, type DatasetProblem } from '../../src/data/index.js'
import { loadModel, modelDir, tempDir, writeJsonl } from './helpers.js'

const llama = modelDir('llama')
const GOOD = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] }

async function problemsOf (path: string, contextLength = 4096): Promise<{ problems: DatasetProblem[], total: number }> {
  const result = await prepareDataset({ path, split: 'train', modelDir: llama, model: await loadModel(llama), contextLength, packing: true, batchSize: 8, outDir: join(tempDir(), 'train') })
  assert.equal(result.ok, false, 'the file must be rejected')
  return result.ok ? { problems: [], total: 0 } : { problems: result.problems, total: result.totalProblems }
}

/** Line 1 is good; the bad line is line 2, and a good line 3 follows. */
async function badLine (line: unknown): Promise<DatasetProblem> {
  const { problems, total } = await problemsOf(writeJsonl([GOOD, line, GOOD]))
  assert.equal(total, 1, JSON.stringify(problems))
  const [problem] = problems
  assert.equal(problem?.line, 2)
  return problem as DatasetProblem
}

const chat = (...messages: unknown[]): unknown => ({ messages })

describe('bad lines are reported by line number', () => {
  const cases: Array<[string, unknown, RegExp, string?]> = [
    ['not JSON', '{"messages": [', /^not valid JSON: /],
    ['JSON but not an object', '[1, 2]', /^expected a JSON object, got an array$/],
    ['no messages', { prompt_x: 1 }, /^missing "messages"$/],
    ['unknown role', chat({ role: 'bot', content: 'x' }, { role: 'assistant', content: 'y' }), /messages\[0\]\.role must be one of "system", "user", "assistant", "tool" \(got "bot"\)/, 'messages[0].role'],
    ['empty content', chat({ role: 'user', content: '  ' }, { role: 'assistant', content: 'y' }), /^messages\[0\]\.content is empty$/, 'messages[0].content'],
    ['last message not from the assistant', chat({ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }, { role: 'user', content: 'z' }), /the last message must be from the assistant \(got "user"\)/],
    ['last message a bare tool call', chat({ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] }), /must be the assistant's answer in text, not only tool_calls/],
    ['tool_calls arguments not a JSON string', chat({ role: 'user', content: 'x' }, { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'f', arguments: { a: 1 } } }] }, { role: 'tool', content: 'r' }, { role: 'assistant', content: 'ok' }), /messages\[1\]\.tool_calls\[0\]\.function\.arguments must be a string holding JSON.*got an object/, 'messages[1].tool_calls[0].function.arguments'],
    ['tool_calls arguments not valid JSON', chat({ role: 'user', content: 'x' }, { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{a:' } }] }, { role: 'tool', content: 'r' }, { role: 'assistant', content: 'ok' }), /function\.arguments is not valid JSON/],
    ['weight other than 0/1', chat({ role: 'user', content: 'x' }, { role: 'assistant', content: 'y', weight: 0.5 }), /messages\[1\]\.weight must be 0 or 1 \(got 0\.5\)/],
    ['nothing trained', chat({ role: 'user', content: 'x' }, { role: 'assistant', content: 'y', weight: 0 }), /every assistant message has weight 0/],
    ['tool result out of place', chat({ role: 'user', content: 'x' }, { role: 'tool', content: 'r' }, { role: 'assistant', content: 'y' }), /messages\[1\] is a tool result but does not follow an assistant message with tool_calls/],
    ['special token in content', chat({ role: 'user', content: 'x<|eot_id|>' }, { role: 'assistant', content: 'y' }), /contains the special token "<\|eot_id\|>"/],
    ['mixed formats', { text: 'plain text' }, /this line is in the text format but the file is in the chat format \(from line 1\)/],
    ['two formats in one line', { messages: [], text: 'x' }, /mixes the fields of two formats/],
  ]
  for (const [name, line, message, param] of cases) {
    it(name, async () => {
      const problem = await badLine(line)
      assert.match(problem.message, message)
      if (param !== undefined) assert.equal(problem.param, param)
    })
  }

  it('invalid UTF-8', async () => {
    const path = join(tempDir(), 'bad-utf8.jsonl')
    writeFileSync(path, Buffer.concat([Buffer.from(JSON.stringify(GOOD) + '\n{"text": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]))
    const { problems } = await problemsOf(path)
    assert.deepEqual(problems, [{ line: 2, message: 'the line is not valid UTF-8' }])
  })

  it('a 50 MB line is rejected by the line limit without buffering it, and the lines after it still count', async () => {
    const path = join(tempDir(), 'huge.jsonl')
    const out = createWriteStream(path)
    out.write(JSON.stringify(GOOD) + '\n{"text": "')
    const block = 'x'.repeat(1024 * 1024)
    for (let i = 0; i < 50; i++) if (!out.write(block)) await once(out, 'drain')
    out.end('"}\n' + JSON.stringify(GOOD) + '\n' + '{"messages": 1}\n')
    await once(out, 'finish')
    const before = process.memoryUsage().rss
    const { problems } = await problemsOf(path)
    assert.deepEqual(problems.map((p) => p.line), [2, 4])
    assert.equal(problems[0]?.message, 'the line is longer than the limit of 32 MiB')
    assert.ok(process.memoryUsage().rss - before < 40 * 1024 * 1024, 'the 50 MB line was not held in memory')
  })

  it('an example longer than the context length, with its length', async () => {
    const long = chat({ role: 'user', content: 'word '.repeat(100) }, { role: 'assistant', content: 'ok' })
    const { problems } = await problemsOf(writeJsonl([GOOD, long]), 64)
    assert.equal(problems[0]?.line, 2)
    assert.match(problems[0]?.message ?? '', /^the example is \d+ tokens long, more than the context length of 64 \(context_length\); shorten or split it, examples are never truncated$/)
  })
})

describe('whole files', () => {
  it('an empty file', async () => {
    const path = join(tempDir(), 'empty.jsonl')
    writeFileSync(path, '')
    assert.deepEqual((await problemsOf(path)).problems, [{ line: null, message: 'the file has no examples (it is empty or holds only blank lines)' }])
  })

  it('a file of only blank lines', async () => {
    const path = join(tempDir(), 'blank.jsonl')
    writeFileSync(path, '\n  \n\r\n\t\n')
    assert.match((await problemsOf(path)).problems[0]?.message ?? '', /no examples/)
  })

  it('keeps the first 10 problems, counts them all, and formats them for the job error', async () => {
    const lines = Array.from({ length: 25 }, (_, i) => i % 2 === 0 ? GOOD : 'nope')
    const { problems, total } = await problemsOf(writeJsonl(lines))
    assert.equal(total, 12)
    assert.equal(problems.length, 10)
    assert.deepEqual(problems.map((p) => p.line), [2, 4, 6, 8, 10, 12, 14, 16, 18, 20])
    const message = formatProblems({ problems, totalProblems: total })
    assert.match(message, /^The file has 12 problems:\nline 2: not valid JSON: .*\n(line \d+: .*\n){9}and 2 more$/)
  })

  it('a chat file for a model without a chat template fails once, clearly', async () => {
    const dir = modelDir('llama')
    const config = join(dir, 'tokenizer_config.json')
    writeFileSync(config + '.new', JSON.stringify({ bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' }))
    const { renameSync, rmSync } = await import('node:fs')
    rmSync(config)
    renameSync(config + '.new', config)
    const result = await prepareDataset({ path: writeJsonl([GOOD, GOOD]), split: 'valid', modelDir: dir, contextLength: 4096, packing: true, batchSize: 8 })
    assert.equal(result.ok, false)
    assert.equal(result.ok ? 0 : result.totalProblems, 1)
    assert.match(result.ok ? '' : result.problems[0]?.message ?? '', /the model has no chat template/)
  })
})

import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { readJsonlLines, type JsonlItem } from '../../src/data/jsonl-reader.js'
import { tempDir } from './helpers.js'

async function readAll (
  content: string | Buffer,
  options: Parameters<typeof readJsonlLines>[1] = {}
): Promise<JsonlItem[]> {
  const path = join(tempDir(), 'file.jsonl')
  writeFileSync(path, content)
  const items: JsonlItem[] = []
  for await (const batch of readJsonlLines(path, options)) items.push(...batch)
  return items
}

describe('readJsonlLines', () => {
  it('numbers lines from 1, skips blank ones, strips BOM and CR, keeps a last line without newline', async () => {
    assert.deepEqual(await readAll('\uFEFFa\r\n\r\n  \nb\n\n\nc'), [
      { line: 1, text: 'a' },
      { line: 4, text: 'b' },
      { line: 7, text: 'c' },
    ])
  })

  it('gives the same lines whatever the chunk size, even when chunks split a character', async () => {
    const content = '{"t": "héllo wörld 😀"}\n' + '{"t": "ünïcödé"}\n'.repeat(5) + '{"t": "last"}'
    const expected = await readAll(content)
    for (const chunkBytes of [1, 2, 3, 5, 7, 64]) {
      assert.deepEqual(await readAll(content, { chunkBytes }), expected, `chunkBytes ${chunkBytes}`)
    }
    assert.equal(expected.length, 7)
  })

  it('reports invalid UTF-8 and overlong lines by number, and goes on', async () => {
    const content = Buffer.concat([
      Buffer.from('ok\n'),
      Buffer.from([0x61, 0xff, 0x0a]),
      Buffer.from('x'.repeat(100) + '\n'),
      Buffer.from('fine'),
    ])
    for (const chunkBytes of [8, 1024]) {
      assert.deepEqual(await readAll(content, { maxLineBytes: 50, chunkBytes }), [
        { line: 1, text: 'ok' },
        { line: 2, error: 'the line is not valid UTF-8' },
        { line: 3, error: 'the line is longer than the limit of 50 bytes' },
        { line: 4, text: 'fine' },
      ], `chunkBytes ${chunkBytes}`)
    }
  })
})

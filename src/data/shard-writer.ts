import { closeSync, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import type { PackedRow } from './packer.js'

/** Shard entry of manifest.json (docs/trainer-protocol.md §1). */
export interface ShardInfo { name: string, rows: number, docs: number, tokens: number, loss_tokens: number }

/** ~256M tokens = 1 GiB per tokens file: large enough that most datasets are one shard. */
export const DEFAULT_MAX_SHARD_TOKENS = 256 * 1024 * 1024

/** Append-only flat little-endian int32 file with a large write buffer (4 MiB for tokens/targets). */
class Int32File {
  private readonly fd: number
  private readonly buffer: Int32Array
  private length = 0

  constructor (path: string, capacity: number) {
    this.fd = openSync(path, 'w')
    this.buffer = new Int32Array(capacity)
  }

  push (value: number): void {
    if (this.length === this.buffer.length) this.flush()
    this.buffer[this.length++] = value
  }

  pushAll (values: ArrayLike<number>): void {
    if (values.length > this.buffer.length - this.length) this.flush()
    if (values.length > this.buffer.length) {
      this.write(Int32Array.from(values))
      return
    }
    this.buffer.set(values, this.length)
    this.length += values.length
  }

  close (): void {
    this.flush()
    closeSync(this.fd)
  }

  private flush (): void {
    if (this.length > 0) this.write(this.buffer.subarray(0, this.length))
    this.length = 0
  }

  private write (values: Int32Array): void {
    // Int32Array is host-endian; every platform Node ships for here (x86-64, arm64) is little-endian.
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
    let written = 0
    while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written)
  }
}

interface OpenShard {
  info: ShardInfo
  tokens: Int32File
  targets: Int32File
  docs: Int32File
  rows: Int32File
}

/** Writes rows into `<split>-NNNNN.{tokens,targets,docs,rows}.bin`, starting a new shard past `maxShardTokens`. */
export class ShardWriter {
  readonly shards: ShardInfo[] = []
  private current: OpenShard | null = null

  constructor (
    private readonly dir: string,
    private readonly split: string,
    private readonly maxShardTokens = DEFAULT_MAX_SHARD_TOKENS
  ) {}

  writeRow (row: PackedRow): void {
    const rowTokens = row.tokens.length
    let shard = this.current
    if (shard === null || (shard.info.tokens > 0 && shard.info.tokens + rowTokens > this.maxShardTokens)) {
      shard = this.startShard()
    }
    shard.tokens.pushAll(row.tokens)
    shard.targets.pushAll(row.targets)
    for (const length of row.docLengths) shard.docs.push(length)
    shard.rows.push(row.docLengths.length)
    shard.info.rows++
    shard.info.docs += row.docLengths.length
    shard.info.tokens += rowTokens
    shard.info.loss_tokens += row.lossTokens
  }

  /** Flushes and closes every file; returns the manifest's `shards` list. */
  close (): ShardInfo[] {
    this.closeCurrent()
    return this.shards
  }

  private startShard (): OpenShard {
    this.closeCurrent()
    const name = `${this.split}-${String(this.shards.length).padStart(5, '0')}`
    const path = (kind: string): string => join(this.dir, `${name}.${kind}.bin`)
    const info: ShardInfo = { name, rows: 0, docs: 0, tokens: 0, loss_tokens: 0 }
    this.shards.push(info)
    this.current = {
      info,
      tokens: new Int32File(path('tokens'), 1 << 20),
      targets: new Int32File(path('targets'), 1 << 20),
      docs: new Int32File(path('docs'), 1 << 16),
      rows: new Int32File(path('rows'), 1 << 16),
    }
    return this.current
  }

  private closeCurrent (): void {
    const shard = this.current
    if (shard === null) return
    for (const file of [shard.tokens, shard.targets, shard.docs, shard.rows]) file.close()
    this.current = null
  }
}

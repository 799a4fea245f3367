import type { TokenizedDoc } from './examples.js'

/** A finished row: whole documents back to back. Views into a reused buffer: consume before returning. */
export interface PackedRow {
  tokens: ArrayLike<number>
  targets: ArrayLike<number>
  docLengths: readonly number[]
  lossTokens: number
}

export type RowSink = (row: PackedRow) => void

interface OpenRow { tokens: Int32Array, targets: Int32Array, docLengths: number[], used: number, lossTokens: number }

/** Open rows are capped by this many tokens in total, so memory stays bounded at long context lengths. */
const OPEN_ROW_TOKEN_BUDGET = 4 * 1024 * 1024
const MAX_OPEN_ROWS = 64

/**
 * Streams documents into rows of at most `seqLen` tokens. With packing, each document goes to the
 * open row it fills best (best fit); a document that fits nowhere opens a row, and when too many
 * rows are open the fullest one is written out. Documents are never split, so nothing is lost and
 * no row mixes parts of one document. Without packing every document is a row of its own.
 *
 * A document is copied into its row's buffer at once, and row buffers are reused, so documents
 * die young and memory stays flat however long the file (measured: 50–90 MB less peak RSS on
 * the 20 MB benchmark than keeping the documents themselves in open rows).
 */
export class RowPacker {
  rows = 0
  private readonly open: OpenRow[] = []
  private readonly spare: OpenRow[] = []
  private readonly maxOpenRows: number

  constructor (
    private readonly seqLen: number,
    private readonly packing: boolean,
    private readonly sink: RowSink,
    maxOpenRows = MAX_OPEN_ROWS
  ) {
    this.maxOpenRows = Math.max(1, Math.min(maxOpenRows, Math.floor(OPEN_ROW_TOKEN_BUDGET / seqLen)))
  }

  add (doc: TokenizedDoc): void {
    const length = doc.tokens.length
    if (length > this.seqLen || length === 0) throw new Error(`document of ${length} tokens cannot fill a row of ${this.seqLen}`)
    if (!this.packing) {
      this.rows++
      this.sink({ tokens: doc.tokens, targets: doc.targets, docLengths: [length], lossTokens: doc.lossTokens })
      return
    }
    let row = this.bestFit(length)
    if (row === null) {
      if (this.open.length >= this.maxOpenRows) this.close(this.fullest())
      row = this.openRow()
    }
    row.tokens.set(doc.tokens, row.used)
    row.targets.set(doc.targets, row.used)
    row.used += length
    row.docLengths.push(length)
    row.lossTokens += doc.lossTokens
    if (row.used === this.seqLen) this.close(row)
  }

  /** Writes out the rows still open, oldest first. */
  finish (): void {
    while (this.open.length > 0) this.close(this.open[0] as OpenRow)
  }

  private openRow (): OpenRow {
    const row = this.spare.pop() ?? {
      tokens: new Int32Array(this.seqLen),
      targets: new Int32Array(this.seqLen),
      docLengths: [],
      used: 0,
      lossTokens: 0,
    }
    this.open.push(row)
    return row
  }

  private bestFit (length: number): OpenRow | null {
    let best: OpenRow | null = null
    for (const row of this.open) {
      const room = this.seqLen - row.used
      if (room >= length && (best === null || row.used > best.used)) best = row
    }
    return best
  }

  private fullest (): OpenRow {
    let fullest = this.open[0] as OpenRow
    for (const row of this.open) if (row.used > fullest.used) fullest = row
    return fullest
  }

  private close (row: OpenRow): void {
    this.open.splice(this.open.indexOf(row), 1)
    this.rows++
    this.sink({
      tokens: row.tokens.subarray(0, row.used),
      targets: row.targets.subarray(0, row.used),
      docLengths: row.docLengths,
      lossTokens: row.lossTokens,
    })
    row.used = 0
    row.lossTokens = 0
    row.docLengths = []
    this.spare.push(row)
  }
}

import type { TokenizedDoc } from './examples.js'

export type RowSink = (docs: readonly TokenizedDoc[]) => void

interface OpenRow { docs: TokenizedDoc[], used: number }

/** Open rows are capped by this many tokens in total, so memory stays bounded at long context lengths. */
const OPEN_ROW_TOKEN_BUDGET = 4 * 1024 * 1024
const MAX_OPEN_ROWS = 64

/**
 * Streams documents into rows of at most `seqLen` tokens. With packing, each document goes to the
 * open row it fills best (best fit); a document that fits nowhere opens a row, and when too many
 * rows are open the fullest one is written out. Documents are never split, so nothing is lost and
 * no row mixes parts of one document. Without packing every document is a row of its own.
 */
export class RowPacker {
  rows = 0
  private readonly open: OpenRow[] = []
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
      this.emit([doc])
      return
    }
    const best = this.bestFit(length)
    if (best !== null) {
      best.docs.push(doc)
      best.used += length
      if (best.used === this.seqLen) this.close(best)
      return
    }
    if (this.open.length >= this.maxOpenRows) this.close(this.fullest())
    this.open.push({ docs: [doc], used: length })
  }

  /** Writes out the rows still open, oldest first. */
  finish (): void {
    for (const row of this.open.splice(0)) this.emit(row.docs)
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
    this.emit(row.docs)
  }

  private emit (docs: readonly TokenizedDoc[]): void {
    this.rows++
    this.sink(docs)
  }
}

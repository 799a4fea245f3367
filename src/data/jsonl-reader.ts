import { isUtf8 } from 'node:buffer'
import { open } from 'node:fs/promises'

export const DEFAULT_MAX_LINE_BYTES = 32 * 1024 * 1024

export interface JsonlLine { line: number, text: string }
export interface JsonlLineError { line: number, error: string }
export type JsonlItem = JsonlLine | JsonlLineError

export interface ReadJsonlOptions {
  maxLineBytes?: number
  /** Bytes read per `read()` call; lines are handed out one chunk at a time. */
  chunkBytes?: number
  signal?: AbortSignal
}

const NEWLINE = 0x0a
const CARRIAGE_RETURN = '\r'
const BYTE_ORDER_MARK = 0xfeff

/**
 * Streams a JSONL file as batches of non-blank lines (one batch per chunk read), never holding
 * more than one chunk plus one line in memory. Lines over `maxLineBytes` are skipped while they
 * are read (never buffered whole) and reported by number, as are lines that are not UTF-8.
 * Accepts a UTF-8 byte-order mark, CRLF line ends and a last line without a newline.
 */
export async function * readJsonlLines (path: string, options: ReadJsonlOptions = {}): AsyncGenerator<JsonlItem[]> {
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
  const chunkBytes = options.chunkBytes ?? 1024 * 1024
  const file = await open(path, 'r')
  const splitter = new LineSplitter(maxLineBytes)
  try {
    const buffer = Buffer.allocUnsafe(chunkBytes)
    for (;;) {
      options.signal?.throwIfAborted()
      const { bytesRead } = await file.read(buffer, 0, chunkBytes, null)
      if (bytesRead === 0) break
      const items = splitter.push(buffer.subarray(0, bytesRead))
      if (items.length > 0) yield items
    }
    const last = splitter.end()
    if (last.length > 0) yield last
  } finally {
    await file.close()
  }
}

/** Cuts byte chunks into decoded lines; keeps the unfinished tail of a chunk as a copy. */
class LineSplitter {
  private lineNumber = 0
  private carry: Buffer[] = []
  private carryBytes = 0
  private overlong = false

  constructor (private readonly maxLineBytes: number) {}

  push (chunk: Buffer): JsonlItem[] {
    const items: JsonlItem[] = []
    // One UTF-8 check for all the lines that lie wholly inside the chunk: ~free compared with
    // checking line by line, and only a chunk that fails is re-checked per line to name the line.
    // The head of the chunk may finish a carried line (maybe mid-character): it is checked apart.
    const lastNewline = chunk.lastIndexOf(NEWLINE)
    const ownStart = this.carry.length > 0 || this.overlong ? chunk.indexOf(NEWLINE) + 1 : 0
    const chunkIsUtf8 = lastNewline >= 0 && isUtf8(chunk.subarray(ownStart, lastNewline))
    let start = 0
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, start)
      if (newline === -1) {
        this.keep(chunk.subarray(start))
        return items
      }
      this.lineNumber++
      const piece = chunk.subarray(start, newline)
      if (this.carry.length > 0 || this.overlong) {
        this.keep(piece)
        this.emitCarried(items)
      } else {
        this.emit(items, piece, chunkIsUtf8)
      }
      start = newline + 1
    }
  }

  end (): JsonlItem[] {
    const items: JsonlItem[] = []
    if (this.carry.length > 0 || this.overlong) {
      this.lineNumber++
      this.emitCarried(items)
    }
    return items
  }

  private keep (piece: Buffer): void {
    if (this.overlong || piece.length === 0) return
    if (this.carryBytes + piece.length > this.maxLineBytes) {
      this.overlong = true
      this.carry = []
      this.carryBytes = 0
      return
    }
    this.carry.push(Buffer.from(piece))
    this.carryBytes += piece.length
  }

  private emitCarried (items: JsonlItem[]): void {
    if (this.overlong) {
      items.push({ line: this.lineNumber, error: this.overlongMessage() })
    } else {
      this.emit(items, Buffer.concat(this.carry, this.carryBytes), false)
    }
    this.carry = []
    this.carryBytes = 0
    this.overlong = false
  }

  private emit (items: JsonlItem[], bytes: Buffer, knownUtf8: boolean): void {
    const line = this.lineNumber
    if (bytes.length > this.maxLineBytes) {
      items.push({ line, error: this.overlongMessage() })
      return
    }
    if (!knownUtf8 && !isUtf8(bytes)) {
      items.push({ line, error: 'the line is not valid UTF-8' })
      return
    }
    let text = bytes.toString('utf8')
    if (line === 1 && text.charCodeAt(0) === BYTE_ORDER_MARK) text = text.slice(1)
    if (text.endsWith(CARRIAGE_RETURN)) text = text.slice(0, -1)
    if (isBlank(text)) return
    items.push({ line, text })
  }

  private overlongMessage (): string {
    return `the line is longer than the limit of ${formatBytes(this.maxLineBytes)}`
  }
}

function isBlank (text: string): boolean {
  if (text.length === 0) return true
  const first = text.charCodeAt(0)
  // Only lines that start with whitespace can be blank; avoids trimming every line.
  return (first === 0x20 || first === 0x09 || first === 0x0d) && text.trim() === ''
}

export function formatBytes (bytes: number): string {
  const mib = bytes / (1024 * 1024)
  if (mib >= 1 && Number.isInteger(mib)) return `${mib} MiB`
  return `${bytes} bytes`
}

// Follows an attempt's protocol file (the trainer appends each line there, trainer/opentune_trainer/
// protocol.py) from a byte offset. The offset moves past a line only once the line is handled, and
// is saved with it, so a runner that stops and a runner that starts again neither lose nor repeat
// a line; only a line in flight when a runner is killed may be handled twice (docs/slurm.md).
import { open } from 'node:fs/promises'
import { parseTrainerLine, type TrainerLine } from '../protocol.js'

const CHUNK = 1024 * 1024

export interface FollowerHooks {
  /** Handles one line; false: its effects could not be stored (stop; it is read again later). */
  line: (line: TrainerLine) => Promise<boolean>
  other: (text: string) => void
  /** Stores the offset past the last handled line. */
  saveOffset: (offset: number) => Promise<void>
}

export class ProtocolFile {
  constructor (readonly path: string, public offset: number, private readonly hooks: FollowerHooks) {}

  /** Handles every whole line written since the offset; false once a line could not be stored. */
  async readNew (): Promise<boolean> {
    const file = await open(this.path, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null // the trainer has not written its first line yet
      throw err
    })
    if (!file) return true
    try {
      for (;;) {
        const buf = Buffer.alloc(CHUNK)
        const { bytesRead } = await file.read(buf, 0, CHUNK, this.offset)
        const end = buf.subarray(0, bytesRead).lastIndexOf(10) // only whole lines: the last may be half written
        if (end < 0) return true
        let start = 0
        while (start <= end) {
          const nl = buf.indexOf(10, start)
          const text = buf.subarray(start, nl).toString('utf8')
          const parsed = parseTrainerLine(text)
          if (parsed && !(await this.hooks.line(parsed))) return false
          if (!parsed && text.trim() !== '') this.hooks.other(text)
          this.offset += nl + 1 - start
          await this.hooks.saveOffset(this.offset)
          start = nl + 1
        }
      }
    } finally {
      await file.close()
    }
  }
}

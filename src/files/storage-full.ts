// "The disk is full", however it reaches us: a file write (ENOSPC, or EDQUOT for a quota), SQLite
// (SQLITE_FULL: its database and WAL live in the data directory too) or PostgreSQL (SQLSTATE
// 53100 disk_full). Not the client's fault and not a bug: it is answered 507 (src/errors.ts) and a
// trainer that hits it fails its job naming the disk (src/runner/exit.ts).
import { statfs } from 'node:fs/promises'

const CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL', '53100'])

export function isStorageFull (err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && CODES.has(code)) return true
  }
  return false
}

// Free space below which a filesystem counts as full when a process died without saying why
// (the trainer's SIGABRT in torch.save): 1 MiB or 0.1 %, whichever is more. A trainer that wrote
// until ENOSPC leaves its partial files behind, so the disk still reads full when it has exited.
const FULL_BYTES = 1024 * 1024
const FULL_FRACTION = 0.001

/** Whether the filesystem holding `path` is (nearly) full; false where it cannot be read. */
export async function diskIsFull (path: string): Promise<boolean> {
  const s = await statfs(path).catch(() => null)
  if (!s) return false
  const free = s.bavail * s.bsize
  return free < Math.max(FULL_BYTES, FULL_FRACTION * s.blocks * s.bsize)
}

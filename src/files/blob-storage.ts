// File bytes on local disk, named by file id (never by the client's filename). Uploads stream to
// `.tmp/<uuid>.part`, are fsynced, then renamed into place: a crash leaves at most a .part file,
// which sweep() removes once it is stale, and never a half-written file under a real id.
import { randomUUID } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

export interface BlobStore {
  dir: string
  pathOf: (id: string) => string
  receive: (source: Readable) => Promise<{ tmpPath: string, bytes: number }>
  commit: (tmpPath: string, id: string) => Promise<void>
  importFile: (sourcePath: string, id: string) => Promise<number>
  read: (id: string, range?: { start: number, end: number }) => Readable
  size: (id: string) => Promise<number>
  remove: (id: string) => Promise<void>
  discard: (tmpPath: string) => Promise<void>
  sweep: (staleSeconds: number, isKnown: (ids: string[]) => Promise<Set<string>>) => Promise<number>
}

export async function makeBlobStore (dataDir: string): Promise<BlobStore> {
  const dir = join(dataDir, 'files')
  const tmpDir = join(dir, '.tmp')
  await mkdir(tmpDir, { recursive: true })
  const pathOf = (id: string) => join(dir, id)

  async function fsyncFile (path: string): Promise<void> {
    const fh = await open(path, 'r+')
    try { await fh.datasync() } finally { await fh.close() }
  }

  async function receive (source: Readable): Promise<{ tmpPath: string, bytes: number }> {
    const tmpPath = join(tmpDir, `${randomUUID()}.part`)
    let bytes = 0
    const counter = new Transform({
      transform (chunk: Buffer, _enc, done) { bytes += chunk.length; done(null, chunk) },
    })
    try {
      await pipeline(source, counter, createWriteStream(tmpPath))
      await fsyncFile(tmpPath)
    } catch (err) {
      await rm(tmpPath, { force: true })
      throw err
    }
    return { tmpPath, bytes }
  }

  return {
    dir,
    pathOf,
    receive,
    async commit (tmpPath, id) {
      await rename(tmpPath, pathOf(id))
    },
    async importFile (sourcePath, id) {
      const { tmpPath, bytes } = await receive(createReadStream(sourcePath))
      await rename(tmpPath, pathOf(id))
      return bytes
    },
    read: (id, range) => createReadStream(pathOf(id), range),
    size: async (id) => (await stat(pathOf(id))).size,
    remove: async (id) => { await rm(pathOf(id), { force: true }) },
    discard: async (tmpPath) => { await rm(tmpPath, { force: true }) },
    async sweep (staleSeconds, isKnown) {
      // An upload in progress touches its .part file with every chunk; one untouched for
      // staleSeconds belongs to a client or process that is gone.
      const cutoff = Date.now() - staleSeconds * 1000
      let removed = 0
      for (const name of await readdir(tmpDir)) {
        const path = join(tmpDir, name)
        const info = await stat(path).catch(() => null)
        if (info && info.mtimeMs <= cutoff) { await rm(path, { force: true }); removed++ }
      }
      // A crash between rename and the database insert leaves a blob no row points to.
      const names = (await readdir(dir)).filter(n => n.startsWith('file-'))
      const known = await isKnown(names)
      for (const name of names) {
        if (known.has(name)) continue
        const info = await stat(join(dir, name)).catch(() => null)
        if (info && info.mtimeMs <= cutoff) { await rm(join(dir, name), { force: true }); removed++ }
      }
      return removed
    },
  }
}

// One download of a repository at a time, across processes (an API process, `opentune runner`s on
// other machines, `opentune models pull`): a lock file beside the models, created with O_EXCL and
// touched while held. A holder that died leaves it untouched; after STALE_MS anyone may take it.
import { hostname } from 'node:os'
import { mkdir, open, rm, stat, utimes } from 'node:fs/promises'
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

const TOUCH_MS = 5_000
const STALE_MS = 30_000
const POLL_MS = 250

/** Runs `fn` holding the lock at `path`; `onWait` is told once when another holder makes it wait. */
export async function withRepoLock<T> (
  path: string,
  signal: AbortSignal | undefined,
  onWait: () => void,
  fn: () => Promise<T>
): Promise<T> {
  await mkdir(dirname(path), { recursive: true })
  let told = false
  for (;;) {
    signal?.throwIfAborted()
    try {
      const handle = await open(path, 'wx')
      await handle.writeFile(JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() }))
      await handle.close()
      break
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
    }
    const age = await stat(path).then(s => Date.now() - s.mtimeMs, () => 0)
    if (age > STALE_MS) {
      await rm(path, { force: true }) // its holder stopped touching it: gone
      continue
    }
    if (!told) { told = true; onWait() }
    await sleep(POLL_MS, undefined, signal ? { signal } : {})
  }
  const touch = setInterval(() => { utimes(path, new Date(), new Date()).catch(() => {}) }, TOUCH_MS)
  try {
    return await fn()
  } finally {
    clearInterval(touch)
    await rm(path, { force: true })
  }
}

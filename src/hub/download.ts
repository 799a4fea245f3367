// A Hub repository's files that training needs, downloaded into a folder: listed with their hashes
// (@huggingface/hub listFiles: the LFS sha256, or the git blob sha1 of small files), fetched with
// downloadFile (a WebBlob: a cut transfer resumes with blob.slice(bytesOnDisk), a Range request),
// each checked against its hash, then the folder renamed into place whole. One download per repo
// at a time: callers in this process share it, other processes wait on the lock file.
import { createHash, type Hash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Readable } from 'node:stream'
import type { ReadableStream as NodeReadableStream } from 'node:stream/web'
import { downloadFile, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub'
import { HubError, type HubAccess } from './hub-access.js'
import { withRepoLock } from './repo-lock.js'

// What a Llama-family model or a PEFT adapter needs to be trained from; the rest of a repository
// (.bin, .pth, ONNX, GGUF, subfolders such as original/) is never fetched.
const NEEDED = new Set(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json',
  'special_tokens_map.json', 'tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json',
  'chat_template.jinja', 'chat_template.json', 'adapter_config.json', 'model.safetensors.index.json'])
export const isNeeded = (path: string) => !path.includes('/') && (NEEDED.has(path) || path.endsWith('.safetensors'))

const ATTEMPTS = 5 // transfers of one file cut short before the download gives up

export interface DownloadPlan { repo: string, commit: string, files: number, bytes: number }
export interface DownloadProgress { files: number, totalFiles: number, bytes: number, totalBytes: number }

export interface DownloadRequest {
  repo: string
  revision: string | null
  /** The folder the files end up in (created whole, or not at all). */
  dest: string
  /** Where partial downloads and lock files live (OPENTUNE_MODELS_DIR/.hub). */
  workDir: string
  access: HubAccess
  signal?: AbortSignal
  /** Why config.json's model cannot be used (support.ts), checked before any weights are fetched. */
  refuseConfig?: (config: unknown) => string | null
  onPlan?: (plan: DownloadPlan) => void
  onProgress?: (p: DownloadProgress) => void
  /** Another process holds the repo's lock: this one waits for it. */
  onWait?: () => void
}

export interface Downloaded {
  dir: string
  commit: string | null // null: found already there
  /** Whether this call fetched the files; false when another download (here or elsewhere) had. */
  fetched: boolean
}

const inFlight = new Map<string, Promise<Downloaded>>()

/** The repo's needed files in `dest`, downloading them unless they are there already. */
export async function downloadRepo (req: DownloadRequest): Promise<Downloaded> {
  for (let running; (running = inFlight.get(req.dest)) !== undefined;) {
    req.onWait?.()
    try {
      return { ...(await running), fetched: false }
    } catch (err) {
      // the job downloading it was cancelled, or its runner stopped: this one carries on from its files
      if ((err as Error | undefined)?.name !== 'AbortError' || req.signal?.aborted) throw err
    }
  }
  if (isComplete(req.dest)) return { dir: req.dest, commit: null, fetched: false }
  const lock = join(req.workDir, 'locks', `${req.repo.replace('/', '--')}.lock`)
  const work = withRepoLock(lock, req.signal, () => req.onWait?.(), async () => {
    if (isComplete(req.dest)) return { dir: req.dest, commit: null, fetched: false } // another process did it
    return await fetchRepo(req)
  }).finally(() => inFlight.delete(req.dest))
  inFlight.set(req.dest, work)
  return await work
}

/** A folder this module finished (or any model folder put there by hand). */
export const isComplete = (dir: string) => existsSync(join(dir, '.hub.json')) || existsSync(join(dir, 'config.json'))

async function fetchRepo (req: DownloadRequest): Promise<Downloaded> {
  const { repo, access } = req
  // pinned to one commit: a push to the branch meanwhile cannot mix two versions' files
  const info = await modelInfo({ name: repo, additionalFields: ['sha'], ...access, ...(req.revision ? { revision: req.revision } : {}) })
  const commit = typeof info.sha === 'string' ? info.sha : (req.revision ?? 'main')
  const entries: ListFileEntry[] = []
  for await (const e of listFiles({ repo, revision: commit, recursive: true, ...access })) {
    if (e.type === 'file' && isNeeded(e.path)) entries.push(e)
  }
  if (!entries.some(e => e.path.endsWith('.safetensors'))) {
    throw new HubError('invalid_model', `${repo} has no *.safetensors weights on the Hub (only the formats opentune does not load, such as .bin or .pth, or none).`)
  }
  // config.json first: an architecture the trainer refuses is said before gigabytes are fetched
  entries.sort((a, b) => rank(a) - rank(b) || a.path.localeCompare(b.path))
  const total = { files: entries.length, bytes: entries.reduce((n, e) => n + sizeOf(e), 0) }
  req.onPlan?.({ repo, commit, files: total.files, bytes: total.bytes })
  const partial = join(req.workDir, 'partial', `${repo.replace('/', '--')}@${commit}`)
  await mkdir(partial, { recursive: true })
  const progress: DownloadProgress = { files: 0, totalFiles: total.files, bytes: 0, totalBytes: total.bytes }
  for (const entry of entries) {
    await fetchFile(req, commit, entry, partial, (n) => { progress.bytes += n; req.onProgress?.({ ...progress }) })
    progress.files++
    req.onProgress?.({ ...progress })
    if (entry.path === 'config.json' && req.refuseConfig) {
      const why = req.refuseConfig(JSON.parse(await readFile(join(partial, entry.path), 'utf8')))
      if (why) throw new HubError('unsupported_model', `${repo} cannot be fine-tuned here: ${why}`)
    }
  }
  const files = entries.map(e => ({ path: e.path, size: sizeOf(e), ...expected(e) }))
  await writeFile(join(partial, '.hub.json'), JSON.stringify({ repo, revision: req.revision, commit, files }, null, 2))
  await mkdir(dirname(req.dest), { recursive: true })
  try {
    await rename(partial, req.dest)
  } catch (err) {
    if (!isComplete(req.dest)) throw err // a folder put there meanwhile wins
    await rm(partial, { recursive: true, force: true })
  }
  return { dir: req.dest, commit, fetched: true }
}

const rank = (e: ListFileEntry) => (e.path === 'config.json' ? 0 : e.path.endsWith('.safetensors') ? 2 : 1)
const sizeOf = (e: ListFileEntry) => e.lfs?.size ?? e.size

/** The hash the Hub publishes: the LFS object's sha256, else the git blob's sha1 (the tree's oid). */
function expected (e: ListFileEntry): { algo: 'sha256' | 'git-sha1', hash: string } {
  if (e.lfs?.oid) return { algo: 'sha256', hash: e.lfs.oid }
  if (e.oid) return { algo: 'git-sha1', hash: e.oid }
  throw new HubError('hub_error', `The Hub lists ${e.path} without a hash to check it against.`)
}

function newHash (algo: 'sha256' | 'git-sha1', size: number): Hash {
  if (algo === 'sha256') return createHash('sha256')
  return createHash('sha1').update(`blob ${size}\0`)
}

/** One file into `partial`, resumed from its .incomplete bytes; verified before it takes its name. */
async function fetchFile (
  req: DownloadRequest,
  commit: string,
  entry: ListFileEntry,
  partial: string,
  onBytes: (n: number) => void
): Promise<void> {
  const target = join(partial, entry.path)
  const part = `${target}.incomplete`
  const want = expected(entry)
  const size = sizeOf(entry)
  if (existsSync(target)) { onBytes(size); return } // verified by an earlier attempt
  let restarted = false
  for (let attempt = 1; ; attempt++) {
    req.signal?.throwIfAborted()
    let have = await stat(part).then(s => s.size, () => 0)
    if (have > size) { await rm(part, { force: true }); have = 0 }
    const hash = newHash(want.algo, size)
    if (have > 0) for await (const chunk of createReadStream(part)) hash.update(chunk as Buffer)
    onBytes(have)
    try {
      if (have < size) await appendFrom(req, commit, entry.path, part, have, hash, onBytes)
    } catch (err) {
      req.signal?.throwIfAborted()
      const refused = err instanceof HubError || (err as { statusCode?: number }).statusCode !== undefined
      if (refused || attempt >= ATTEMPTS) throw err
      onBytes(-(await stat(part).then(s => s.size, () => 0))) // counted again from the disk next time
      continue // cut short: the next attempt asks for the rest
    }
    if (hash.digest('hex') === want.hash) break
    await rm(part, { force: true })
    onBytes(-size)
    // a resumed file may have been corrupted on disk: fetched once more from its first byte
    if (restarted || have === 0) {
      throw new HubError('hub_file_corrupt', `${entry.path} of ${req.repo}@${commit.slice(0, 12)} does not match the ${want.algo} the Hub publishes for it (${want.hash}); it was deleted. Try again, or check HF_ENDPOINT's mirror.`)
    }
    restarted = true
  }
  await rename(part, target)
}

async function appendFrom (
  req: DownloadRequest,
  commit: string,
  path: string,
  part: string,
  from: number,
  hash: Hash,
  onBytes: (n: number) => void
): Promise<void> {
  const blob = await downloadFile({ repo: req.repo, path, revision: commit, xet: false, ...req.access })
  if (!blob) throw new HubError('hub_error', `${path} is listed in ${req.repo} but the Hub has no file there.`)
  const body = from > 0 ? blob.slice(from) : blob // a WebBlob: the slice is fetched with a Range request
  await mkdir(dirname(part), { recursive: true })
  const out = await open(part, 'a')
  try {
    for await (const chunk of Readable.fromWeb(body.stream() as NodeReadableStream<Uint8Array>)) {
      const bytes = chunk as Buffer
      hash.update(bytes)
      await out.write(bytes)
      onBytes(bytes.length)
    }
  } finally {
    await out.close()
  }
}

// A stand-in for the Hugging Face Hub, inside the tests: the part of its HTTP API that the official
// @huggingface/hub client (2.x) calls, as https://huggingface.co/docs/hub/api documents it —
// GET /api/models/{repo} and /revision/{rev} (checkRepoAccess, modelInfo), /tree/{rev} (listFiles:
// git oid, LFS sha256), /{repo}/resolve/{rev}/{path} (downloadFile: Range, ETag / X-Linked-ETag),
// POST /api/repos/create, /preupload/{rev}, /{repo}.git/info/lfs/objects/batch (basic transfer, a PUT per
// object) and /commit/{rev} (NDJSON) for uploadFiles. No xet. Faults on demand: a transfer cut after N bytes,
// a file whose bytes do not match its published hash, gated repos.
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface StandinRepo {
  files: Map<string, Buffer>
  commit: string
  /** Tokens that may read it; undefined: anyone (gated and private repos have a set). */
  readers?: Set<string>
  /** Paths served with a byte changed (the tree keeps the true hash). */
  corrupt?: Set<string>
  /** Path → bytes after which the next full transfer is cut (once). */
  cutAfter?: Map<string, number>
  /** Paths whose transfers send 1000 bytes, then nothing more (until the stand-in closes). */
  stall?: Set<string>
}

export interface StandinRequest {
  method: string
  path: string
  range: string | null
  auth: string | null
  bodyBytes: number // of the file's bytes sent
}

const LFS_MIN = 1024 // files from this size are LFS objects (the Hub's rule is by type and size; ours by size)

export class HubStandin {
  readonly repos = new Map<string, StandinRepo>()
  readonly requests: StandinRequest[] = []
  /** Tokens that may create repos and commit (any namespace). */
  readonly writers = new Set<string>()
  #server: Server | null = null
  #uploads = new Map<string, Buffer>()
  url = ''

  addRepo (id: string, files: Record<string, Buffer>, opts: Omit<StandinRepo, 'files' | 'commit'> = {}): StandinRepo {
    const repo: StandinRepo = { files: new Map(Object.entries(files)), commit: randomBytes(20).toString('hex'), ...opts }
    this.repos.set(id, repo)
    return repo
  }

  /** Requests that fetched a file's bytes (not the 1-byte probes downloadFile starts with). */
  transfers (repo: string, path: string): StandinRequest[] {
    return this.requests.filter(r => r.method === 'GET' && r.path.startsWith(`/${repo}/resolve/`) && r.path.endsWith(`/${path}`) && r.range !== 'bytes=0-0')
  }

  async start (): Promise<string> {
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => { res.statusCode = 500; res.end(String(err)) })
    })
    await new Promise<void>(resolve => this.#server?.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this.url
  }

  async close (): Promise<void> {
    this.#server?.closeAllConnections()
    await new Promise<void>(resolve => this.#server?.close(() => resolve()))
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    const body = await readBody(req)
    const auth = req.headers.authorization ?? null
    const entry: StandinRequest = { method: req.method ?? '', path: decodeURIComponent(url.pathname), range: req.headers.range ?? null, auth, bodyBytes: 0 }
    this.requests.push(entry)
    const token = auth?.replace(/^Bearer /, '') ?? null
    const p = entry.path
    let m: RegExpExecArray | null
    if (req.method === 'POST' && p === '/api/repos/create') return this.#create(res, token, JSON.parse(body.toString()))
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)(?:\/(revision|tree|preupload|commit)\/([^/]+))?$/.exec(p))) {
      const [, id = '', what, rev] = m
      if (req.method === 'POST') return this.#write(res, token, id, what ?? '', body)
      const repo = this.#readable(res, id, token)
      if (!repo) return
      if (!what) return json(res, 200, { id, private: repo.readers !== undefined })
      if (rev !== 'main' && rev !== 'HEAD' && rev !== repo.commit) return json(res, 404, { error: 'Revision Not Found' }, 'RevisionNotFound')
      if (what === 'revision') {
        return json(res, 200, { _id: id, id, sha: repo.commit, private: false, gated: repo.readers ? 'manual' : false, downloads: 0, likes: 0, lastModified: new Date().toISOString() })
      }
      return json(res, 200, [...repo.files].map(([path, bytes]) => treeEntry(path, bytes)))
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p)) && req.method === 'GET') {
      const repo = this.#readable(res, m[1] ?? '', token)
      if (repo) this.#resolve(res, repo, m[3] ?? '', req.headers.range, entry)
      return
    }
    if ((m = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(p)) && req.method === 'POST') {
      if (!token || !this.writers.has(token)) return json(res, 401, { error: 'Invalid credentials' })
      const { objects } = JSON.parse(body.toString()) as { objects: Array<{ oid: string, size: number }> }
      const answer = objects.map(o => ({ ...o, actions: { upload: { href: `${this.url}/lfs-upload/${o.oid}` } } }))
      return json(res, 200, { transfer: 'basic', objects: answer })
    }
    if ((m = /^\/lfs-upload\/([0-9a-f]{64})$/.exec(p)) && req.method === 'PUT') {
      if (createHash('sha256').update(body).digest('hex') !== m[1]) return json(res, 400, { error: 'sha256 mismatch' })
      this.#uploads.set(m[1] ?? '', body)
      res.setHeader('ETag', `"${m[1]}"`)
      return json(res, 200, {})
    }
    json(res, 404, { error: `no route ${req.method} ${p}` })
  }

  #readable (res: ServerResponse, id: string, token: string | null): StandinRepo | undefined {
    const repo = this.repos.get(id)
    if (!repo) { json(res, 404, { error: 'Repository not found' }, 'RepoNotFound'); return undefined }
    if (repo.readers && !(token && repo.readers.has(token))) {
      json(res, token ? 403 : 401, { error: `Access to model ${id} is restricted. You must have access to it and be authenticated to access it.` }, 'GatedRepo')
      return undefined
    }
    return repo
  }

  #resolve (res: ServerResponse, repo: StandinRepo, path: string, range: string | undefined, entry: StandinRequest) {
    const stored = repo.files.get(path)
    if (!stored) return json(res, 404, { error: 'Entry not found' }, 'EntryNotFound')
    let bytes = stored
    if (repo.corrupt?.has(path)) {
      bytes = Buffer.from(stored)
      const mid = bytes.length >> 1
      bytes.writeUInt8(bytes.readUInt8(mid) ^ 0xff, mid)
    }
    const tree = treeEntry(path, stored)
    res.setHeader('X-Repo-Commit', repo.commit)
    res.setHeader(tree.lfs ? 'X-Linked-ETag' : 'ETag', `"${tree.lfs?.oid ?? tree.oid}"`)
    res.setHeader('Accept-Ranges', 'bytes')
    const r = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null
    const start = r ? Number(r[1]) : 0
    const end = r && r[2] ? Math.min(Number(r[2]), bytes.length - 1) : bytes.length - 1
    const slice = bytes.subarray(start, end + 1)
    res.statusCode = r ? 206 : 200
    if (r) res.setHeader('Content-Range', `bytes ${start}-${end}/${bytes.length}`)
    res.setHeader('Content-Length', slice.length)
    if (repo.stall?.has(path) && slice.length > 1) {
      entry.bodyBytes = 1000
      res.write(slice.subarray(0, 1000))
      return
    }
    const cut = repo.cutAfter?.get(path)
    if (cut !== undefined && slice.length > 1 && cut < slice.length) {
      repo.cutAfter?.delete(path)
      entry.bodyBytes = cut
      // FIN, not RST: what was written arrives, then the body ends short of its Content-Length
      res.write(slice.subarray(0, cut), () => { res.socket?.end() })
      return
    }
    entry.bodyBytes = slice.length
    res.end(slice)
  }

  #create (res: ServerResponse, token: string | null, body: { name: string, organization?: string }) {
    if (!token || !this.writers.has(token)) return json(res, 401, { error: 'Invalid credentials in Authorization header' })
    const id = `${body.organization ?? 'user'}/${body.name}`
    if (this.repos.has(id)) return json(res, 409, { error: 'You already created this model repo', url: `${this.url}/${id}` })
    this.addRepo(id, {}, { readers: new Set(this.writers) })
    json(res, 200, { url: `${this.url}/${id}`, name: id, id })
  }

  #write (res: ServerResponse, token: string | null, id: string, what: string, body: Buffer) {
    if (!token || !this.writers.has(token)) return json(res, 401, { error: 'Invalid credentials in Authorization header' })
    const repo = this.repos.get(id)
    if (!repo) return json(res, 404, { error: 'Repository not found' }, 'RepoNotFound')
    if (what === 'preupload') {
      const { files } = JSON.parse(body.toString()) as { files: Array<{ path: string, size: number }> }
      return json(res, 200, { files: files.map(f => ({ path: f.path, uploadMode: f.size >= LFS_MIN ? 'lfs' : 'regular' })) })
    }
    if (what !== 'commit') return json(res, 404, { error: 'no such route' })
    for (const line of body.toString().split('\n').filter(Boolean)) {
      type Op = { key: string, value: { path: string, content?: string, oid?: string } }
      const { key, value } = JSON.parse(line) as Op
      if (key === 'file') repo.files.set(value.path, Buffer.from(value.content ?? '', 'base64'))
      if (key === 'lfsFile') {
        const bytes = this.#uploads.get(value.oid ?? '')
        if (!bytes) return json(res, 400, { error: `LFS object ${value.oid} was not uploaded` })
        repo.files.set(value.path, bytes)
      }
    }
    repo.commit = randomBytes(20).toString('hex')
    json(res, 200, { commitOid: repo.commit, commitUrl: `${this.url}/${id}/commit/${repo.commit}` })
  }
}

const entries = new WeakMap<Buffer, ReturnType<typeof hashedEntry>>() // hashed once per file content

function treeEntry (path: string, bytes: Buffer) {
  const known = entries.get(bytes)
  if (known?.path === path) return known
  const entry = hashedEntry(path, bytes)
  entries.set(bytes, entry)
  return entry
}

function hashedEntry (path: string, bytes: Buffer) {
  const oid = createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex')
  const lfs = bytes.length >= LFS_MIN ? { oid: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, pointerSize: 134 } : undefined
  return { type: 'file', path, size: bytes.length, oid, ...(lfs ? { lfs } : {}) }
}

function json (res: ServerResponse, status: number, value: unknown, errorCode?: string) {
  res.statusCode = status
  res.setHeader('Content-Type', 'application/json')
  if (errorCode) res.setHeader('X-Error-Code', errorCode)
  res.end(JSON.stringify(value))
}

async function readBody (req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

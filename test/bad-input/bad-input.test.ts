// Hostile and clumsy input: each gets a clear error (status + a message naming what is wrong), and
// the service keeps serving afterwards.
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { expectErrorBody, expectSpec } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, multipartBody, uploadFile, type TestEnv } from '../helper.js'

const MAX_UPLOAD = 100_000
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

async function walk (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    out.push(path)
    if (entry.isDirectory()) out.push(...await walk(path))
  }
  return out
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: bad input`, () => {
    let env: TestEnv
    let url: string
    const tmpDir = () => join(env.config.dataDir, 'files', '.tmp')

    before(async () => {
      env = await makeTestEnv(dialect, { OPENTUNE_MAX_UPLOAD_BYTES: String(MAX_UPLOAD) })
      url = await env.app.listen({ host: '127.0.0.1', port: 0 })
    })
    after(async () => { await env.close() })

    /** The service still answers a plain request, over a fresh connection. */
    async function stillServing () {
      const res = await fetch(`${url}/v1/files`, { headers: env.auth() })
      assert.equal(res.status, 200)
      await res.arrayBuffer()
    }

    const inject = async (
      method: 'GET' | 'POST' | 'DELETE',
      path: string,
      opts: { key?: string, headers?: Record<string, string>, payload?: string | Buffer | object } = {}
    ) => await env.app.inject({
      method,
      url: path,
      headers: { ...env.auth(opts.key), ...opts.headers },
      ...(opts.payload === undefined ? {} : { payload: opts.payload }),
    })

    it('malformed JSON → 422 json_invalid at the position of the error', async () => {
      const res = await inject('POST', '/v1/fine_tuning/jobs', { headers: { 'content-type': 'application/json' }, payload: '{"model": "opentune/tiny-llama", "training_file": ' })
      assert.equal(res.statusCode, 422)
      expectSpec('POST', '/v1/fine_tuning/jobs', res)
      const body = res.json()
      assert.equal(body.detail[0].type, 'json_invalid')
      assert.equal(body.detail[0].msg, 'JSON decode error')
      assert.equal(body.detail[0].loc[0], 'body')
      assert.equal(typeof body.detail[0].loc[1], 'number')
      assert.match(body.error.message, /JSON decode error/)
      await stillServing()
    })

    it('wrong content type → 415 naming the one expected, for JSON routes and for uploads', async () => {
      const json = await inject('POST', '/v1/fine_tuning/jobs', { headers: { 'content-type': 'text/plain' }, payload: '{"model": "x"}' })
      assert.equal(json.statusCode, 415)
      expectErrorBody(json)
      assert.equal(json.json().error.code, 'unsupported_media_type')
      assert.match(json.json().detail, /Content-Type 'text\/plain' is not supported here; send application\/json/)

      const form = await inject('POST', '/v1/fine_tuning/jobs', { headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'model=x' })
      assert.equal(form.statusCode, 415)

      const upload = await inject('POST', '/v1/files', { headers: { 'content-type': 'application/json' }, payload: '{"purpose": "fine-tune"}' })
      assert.equal(upload.statusCode, 415)
      expectErrorBody(upload)
      assert.match(upload.json().detail, /send multipart\/form-data/)
      await stillServing()
    })

    it('a 50 MB JSON body → 413 before the server has read it all', async () => {
      // Declared: refused on the header alone.
      const declared = await new Promise<{ status: number, body: string }>((resolve, reject) => {
        const req = httpRequest(`${url}/v1/fine_tuning/jobs`, {
          method: 'POST', headers: { ...env.auth(), 'content-type': 'application/json', 'content-length': String(50 * 1024 ** 2) },
        }, res => {
          collect(res).then(body => { req.destroy(); resolve({ status: res.statusCode ?? 0, body }) }, reject)
        })
        req.on('error', () => {})
        req.write('{"model": "' + 'x'.repeat(64 * 1024))
      })
      assert.equal(declared.status, 413)
      assert.match(JSON.parse(declared.body).detail, /Request body is larger than 1048576 bytes/)

      // Chunked, with no length: cut off once the limit is passed, not after 50 MB.
      let sent = 0
      const chunked = await new Promise<number>((resolve, reject) => {
        let answered = false
        const req = httpRequest(`${url}/v1/fine_tuning/jobs`, {
          method: 'POST', headers: { ...env.auth(), 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        }, res => { answered = true; res.resume(); req.destroy(); resolve(res.statusCode ?? 0) })
        req.on('error', (err) => { if (!answered) reject(err) })
        const chunk = Buffer.alloc(256 * 1024, 'x')
        const pump = () => {
          for (; sent < 50 * 1024 ** 2; sent += chunk.length) {
            if (answered) return
            if (!req.write(chunk)) { sent += chunk.length; req.once('drain', pump); return }
          }
        }
        pump()
      })
      assert.equal(chunked, 413)
      assert.ok(sent < 20 * 1024 ** 2, `the client got to send ${sent} bytes`)
      await stillServing()
    })

    it('10,000-character ids in every path → 404 shaped like any unknown id', async () => {
      const job = (await createJob(env)).json()
      const long = (prefix: string) => prefix + 'a'.repeat(10_000 - prefix.length)
      const paths: Array<[method: 'GET' | 'POST' | 'DELETE', template: string, code: string]> = [
        ['GET', '/v1/files/{f}', 'file_not_found'],
        ['GET', '/v1/files/{f}/content', 'file_not_found'],
        ['DELETE', '/v1/files/{f}', 'file_not_found'],
        ['GET', '/v1/fine_tuning/jobs/{j}', 'job_not_found'],
        ['POST', '/v1/fine_tuning/jobs/{j}/cancel', 'job_not_found'],
        ['GET', '/v1/fine_tuning/jobs/{j}/events', 'job_not_found'],
        ['GET', '/v1/fine_tuning/jobs/{j}/checkpoints', 'job_not_found'],
        ['GET', '/v1/fine_tuning/jobs/{j}/checkpoints/{c}', 'job_not_found'],
        ['GET', `/v1/fine_tuning/jobs/${job.id}/checkpoints/{c}`, 'checkpoint_not_found'],
      ]
      for (const [method, template, code] of paths) {
        const fill = (f: string, j: string, c: string) => template.replace('{f}', f).replace('{j}', j).replace('{c}', c)
        const short = await inject(method, fill('file-nope', 'ftjob-nope', 'ftckpt_nope'))
        const res = await inject(method, fill(long('file-'), long('ftjob-'), long('ftckpt_')))
        assert.equal(res.statusCode, 404, `${method} ${template}: ${res.body.slice(0, 200)}`)
        expectErrorBody(res)
        const body = res.json()
        assert.equal(body.error.code, code, template)
        assert.equal(body.error.param, short.json().error.param)
        assert.deepEqual(Object.keys(body), Object.keys(short.json()))
        assert.ok(body.error.message.length < 200, 'the message shows a cut id, not 10,000 characters')
        assert.equal(body.error.message.replace(/'[^']*'/, "'ID'"), short.json().error.message.replace(/'[^']*'/, "'ID'"))
      }
      // Over the real socket too (URL length limits live there, not in inject).
      const res = await fetch(`${url}/v1/fine_tuning/jobs/${long('ftjob-')}`, { headers: env.auth() })
      assert.equal(res.status, 404)
      assert.equal((await res.json() as { error: { code: string } }).error.code, 'job_not_found')
      await stillServing()
    })

    it('keeps unicode and emoji filenames exactly, raw or RFC 5987-encoded', async () => {
      const names = ['données 🚀.jsonl', '日本語の訓練データ.jsonl', 'ща́стье — נתונים.jsonl', 'e\u0301te\u0301 (NFD).jsonl', '👩‍👩‍👧‍👦🏳️‍🌈.jsonl']
      for (const name of names) {
        const { payload, headers } = multipartBody({ purpose: 'fine-tune' }, { name, content: '{}\n' })
        const up = await inject('POST', '/v1/files', { headers, payload })
        assert.equal(up.statusCode, 200, up.body)
        assert.equal(up.json().filename, name)
        const got = await inject('GET', `/v1/files/${up.json().id}`)
        assert.equal(got.json().filename, name)
        const content = await inject('GET', `/v1/files/${up.json().id}/content`)
        const star = /filename\*=UTF-8''(.+)$/.exec(String(content.headers['content-disposition']))
        assert.equal(decodeURIComponent(star?.[1] ?? ''), name, 'Content-Disposition names it too')
      }
      const boundary = 'rfc5987'
      const payload = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8''${encodeURIComponent('čšž 🚀.jsonl')}\r\n\r\n{}\n\r\n--${boundary}--\r\n`
      const up = await inject('POST', '/v1/files', { headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, payload })
      assert.equal(up.statusCode, 200, up.body)
      assert.equal(up.json().filename, 'čšž 🚀.jsonl')
    })

    it('a path as filename keeps only its last part and writes nothing outside the data dir', async () => {
      const cases: Array<[string, string]> = [['../../etc/passwd', 'passwd'], ['..\\..\\windows\\win.ini', 'win.ini'], ['/abs/path/x.jsonl', 'x.jsonl'], ['..', 'file'], ['a/../../..', 'file']]
      for (const [given, kept] of cases) {
        const { payload, headers } = multipartBody({ purpose: 'fine-tune' }, { name: given, content: '{}\n' })
        const up = await inject('POST', '/v1/files', { headers, payload })
        assert.equal(up.statusCode, 200, up.body)
        assert.equal(up.json().filename, kept, given)
      }
      const everything = await walk(env.config.dataDir)
      assert.ok(!everything.some(p => /passwd|win\.ini|x\.jsonl/.test(p)), 'blobs are stored by id only')
      const blobs = (await readdir(join(env.config.dataDir, 'files'))).filter(n => n !== '.tmp')
      assert.ok(blobs.every(n => /^file-[0-9a-f-]{36}$/.test(n)), blobs.join(', '))
    })

    it('a client that disconnects mid-upload leaves no file, listed or on disk', async () => {
      const before = (await inject('GET', '/v1/files')).json().data.length
      const socket = connect(Number(new URL(url).port), '127.0.0.1')
      socket.on('error', () => {})
      await new Promise(resolve => socket.once('connect', resolve))
      const part = `--cut\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--cut\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n${'{"text": "x"}\n'.repeat(1000)}`
      socket.write(`POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${env.key}\r\nContent-Type: multipart/form-data; boundary=cut\r\nContent-Length: 90000\r\n\r\n${part}`)
      // Generous limits, each its own: a condition that holds is seen at once; they only bound a broken run.
      let started = Date.now()
      while ((await readdir(tmpDir())).length === 0) {
        assert.ok(Date.now() - started < 60_000, 'the upload never reached the disk')
        await sleep(10)
      }
      socket.destroy()
      started = Date.now()
      while ((await readdir(tmpDir())).length > 0) {
        assert.ok(Date.now() - started < 60_000, 'the temp file was not removed')
        await sleep(10)
      }
      const list = (await inject('GET', '/v1/files')).json()
      assert.equal(list.data.length, before)
      assert.ok(!list.data.some((f: { filename: string }) => f.filename === 'cut.jsonl'))
      await stillServing()
    })

    it(`an upload over OPENTUNE_MAX_UPLOAD_BYTES (${MAX_UPLOAD}) → 413, and nothing kept`, async () => {
      const before = (await inject('GET', '/v1/files')).json().data.length
      const { payload, headers } = multipartBody({ purpose: 'fine-tune' }, { name: 'big.jsonl', content: Buffer.alloc(MAX_UPLOAD + 1, 'x') })
      const res = await inject('POST', '/v1/files', { headers, payload })
      assert.equal(res.statusCode, 413)
      expectErrorBody(res)
      assert.equal(res.json().error.code, 'file_too_large')
      assert.equal(res.json().error.param, 'file')
      assert.match(res.json().detail, /larger than the 100000 bytes this server accepts/)

      // A declared length far over the limit is refused before any byte of the body is read.
      const declared = await new Promise<number>((resolve) => {
        const req = httpRequest(`${url}/v1/files`, {
          method: 'POST', headers: { ...env.auth(), 'content-type': 'multipart/form-data; boundary=b', 'content-length': String(10 * 1024 ** 3) },
        }, r => { r.resume(); req.destroy(); resolve(r.statusCode ?? 0) })
        req.on('error', () => {})
        req.write('--b\r\n')
      })
      assert.equal(declared, 413)

      const exact = multipartBody({ purpose: 'fine-tune' }, { name: 'ok.jsonl', content: Buffer.alloc(MAX_UPLOAD, 'x') })
      const ok = await inject('POST', '/v1/files', { headers: exact.headers, payload: exact.payload })
      assert.equal(ok.statusCode, 200, 'exactly the limit is allowed')
      assert.equal((await inject('GET', '/v1/files')).json().data.length, before + 1)
      assert.deepEqual(await readdir(tmpDir()), [])
    })

    it('serves byte ranges: 206 with the right bytes, 416 when unsatisfiable', async () => {
      const content = '0123456789abcdefghij'
      const id = await uploadFile(env, { content })
      const range = async (value: string) => await inject('GET', `/v1/files/${id}/content`, { headers: { range: value } })
      const cases: Array<[string, string, string]> = [
        ['bytes=2-5', '2345', 'bytes 2-5/20'], ['bytes=15-', 'fghij', 'bytes 15-19/20'], ['bytes=-3', 'hij', 'bytes 17-19/20'], ['bytes=18-1000', 'ij', 'bytes 18-19/20'],
      ]
      for (const [value, body, contentRange] of cases) {
        const res = await range(value)
        assert.equal(res.statusCode, 206, value)
        assert.equal(res.body, body, value)
        assert.equal(res.headers['content-range'], contentRange)
        assert.equal(res.headers['content-length'], String(body.length))
      }
      const unsatisfiable = await range('bytes=20-30')
      assert.equal(unsatisfiable.statusCode, 416)
      assert.equal(unsatisfiable.headers['content-range'], 'bytes */20')
      expectErrorBody(unsatisfiable)
      assert.match(unsatisfiable.json().detail, /outside the file \(20 bytes\)/)
      const malformed = await range('pages=1-2')
      assert.equal(malformed.statusCode, 200, 'a range we cannot parse is ignored, as RFC 9110 says')
      assert.equal(malformed.body, content)
      await stillServing()
    })

    it("another project's ids → 404 bodies identical to unknown ids, everywhere", async () => {
      const file = await uploadFile(env)
      const job = (await createJob(env, { training_file: file })).json()
      const ckpt = await insertCheckpoint(env.ctx.db, { jobId: job.id, stepNumber: 1, fineTunedModelCheckpoint: 'ft:x', metrics: {}, resultFiles: [] })
      // Unknown ids of the same length, so that even Content-Length matches.
      const fake = (id: string) => id.slice(0, -4) + 'beef'
      const paths: Array<['GET' | 'POST' | 'DELETE', (f: string, j: string, c: string) => string]> = [
        ['GET', f => `/v1/files/${f}`],
        ['GET', f => `/v1/files/${f}/content`],
        ['DELETE', f => `/v1/files/${f}`],
        ['GET', (_f, j) => `/v1/fine_tuning/jobs/${j}`],
        ['POST', (_f, j) => `/v1/fine_tuning/jobs/${j}/cancel`],
        ['GET', (_f, j) => `/v1/fine_tuning/jobs/${j}/events`],
        ['GET', (_f, j) => `/v1/fine_tuning/jobs/${j}/checkpoints`],
        ['GET', (_f, j, c) => `/v1/fine_tuning/jobs/${j}/checkpoints/${c}`],
        ['GET', f => `/v1/files?after=${f}`],
        ['GET', (_f, j) => `/v1/fine_tuning/jobs?after=${j}`],
        ['GET', (_f, _j, c) => `/v1/fine_tuning/jobs/${job.id}/checkpoints?after=${c}`],
      ]
      const normalise = (body: string, ...ids: string[]) => ids.reduce((b, id) => b.replaceAll(id, 'ID'), body)
      for (const [method, path] of paths) {
        const other = await inject(method, path(file, job.id, ckpt.id), { key: env.otherKey })
        const unknown = await inject(method, path(fake(file), fake(job.id), fake(ckpt.id)), { key: env.otherKey })
        assert.ok(other.statusCode === 404 || other.statusCode === 422, `${method} ${path('F', 'J', 'C')}: ${other.statusCode}`)
        assert.equal(other.statusCode, unknown.statusCode, path('F', 'J', 'C'))
        const ids = [file, job.id, ckpt.id, fake(file), fake(job.id), fake(ckpt.id)]
        assert.equal(normalise(other.body, ...ids), normalise(unknown.body, ...ids), path('F', 'J', 'C'))
        assert.equal(other.headers['content-length'], unknown.headers['content-length'])
      }
      // Naming it as a training file, or asking for the project by id.
      const create = async (trainingFile: string) => await inject('POST', '/v1/fine_tuning/jobs', {
        key: env.otherKey, payload: { model: 'opentune/tiny-llama', training_file: trainingFile },
      })
      const used = await create(file)
      const missing = await create(fake(file))
      assert.equal(used.statusCode, 400)
      assert.equal(normalise(used.body, file), normalise(missing.body, fake(file)))
      const asked = await inject('GET', `/v1/files?ai_project_id=${env.projectId}`, { key: env.otherKey })
      const nowhere = await inject('GET', `/v1/files?ai_project_id=${fake(env.projectId)}`, { key: env.otherKey })
      assert.equal(asked.statusCode, 404)
      assert.equal(normalise(asked.body, env.projectId), normalise(nowhere.body, fake(env.projectId)))
      // And the owner still sees all of it.
      assert.equal((await inject('GET', `/v1/fine_tuning/jobs/${job.id}/checkpoints/${ckpt.id}`)).statusCode, 200)
    })

    it('a URL that cannot be decoded → 400 with our error body', async () => {
      const res = await fetch(`${url}/v1/fine_tuning/jobs/%E0%A4%A`, { headers: env.auth() })
      const body = await res.text()
      assert.equal(res.status, 400, body)
      expectErrorBody({ statusCode: res.status, json: () => JSON.parse(body) })
      assert.equal(JSON.parse(body).error.code, 'invalid_url')
    })

    it('JSON nested deeper than 32 levels → 422 json_invalid, and nothing stored', async () => {
      const before = (await inject('GET', '/v1/fine_tuning/jobs')).json().data.length
      for (const depth of [33, 3000, 100_000]) {
        const deep = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
        const res = await inject('POST', '/v1/fine_tuning/jobs', { headers: { 'content-type': 'application/json' }, payload: `{"model":"opentune/tiny-llama","training_file":"file-x","extra":${deep}}` })
        assert.equal(res.statusCode, 422, `${depth}: ${res.body.slice(0, 300)}`)
        assert.equal(res.json().detail[0].type, 'json_invalid')
        assert.match(res.json().detail[0].ctx.error, /deeper than 32/)
      }
      assert.equal((await inject('GET', '/v1/fine_tuning/jobs')).json().data.length, before)
    })

    it('a choice of values names every allowed value', async () => {
      const res = await inject('GET', '/v1/files?order=ASC')
      assert.equal(res.statusCode, 422)
      assert.equal(res.json().detail[0].msg, "Input should be 'asc' or 'desc'")
    })

    it('a /v1 route needs a key however its URL is spelled (percent-encoded, absolute-form)', async () => {
      const spellings = ['/%761/files', '/v%31/models', '/%76%31/fine_tuning/jobs', 'http://127.0.0.1/v1/files']
      for (const path of spellings) {
        const res = await new Promise<{ status: number, body: string }>((resolve, reject) => {
          const req = httpRequest(`${url}/`, { method: 'GET', path }, (r) => { void collect(r).then(body => resolve({ status: r.statusCode ?? 0, body })) })
          req.on('error', reject)
          req.end()
        })
        assert.equal(res.status, 401, `${path}: ${res.body}`)
      }
      const withKey = await fetch(`${url}/%761/files`, { headers: env.auth() })
      assert.equal(withKey.status, 200, 'the same route, with a key, is served')
      await withKey.arrayBuffer()
    })

    it('malformed multipart forms get a 4xx naming the problem, promptly, and leave no temp file', async () => {
      const fields = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, 'x']))
      const sixteenThenPurpose = multipartBody({ ...fields(16), purpose: 'fine-tune' }, { name: 'a.jsonl', content: '{}\n' })
      const tooManyFields = multipartBody({ ...fields(40), purpose: 'fine-tune' }, { name: 'a.jsonl', content: '{}\n' })
      const twoFiles = (() => {
        const b = 'two'
        const file = (name: string) => `--${b}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n\r\n{}\n\r\n`
        return { headers: { 'content-type': `multipart/form-data; boundary=${b}` }, payload: `--${b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n${file('a')}${file('b')}--${b}--\r\n` }
      })()
      const truncated = { headers: { 'content-type': 'multipart/form-data; boundary=abc' }, payload: '--abc\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nhello' }
      const noBoundary = { headers: { 'content-type': 'multipart/form-data' }, payload: 'xx' }
      const cases: Array<[string, { headers: Record<string, string>, payload: string | Buffer }, number, string]> = [
        ['16 fields, purpose, then the file', sixteenThenPurpose, 422, 'body'],
        ['40 fields before the file', tooManyFields, 422, 'body'],
        ['two file parts', twoFiles, 422, 'file'],
        ['a body cut short', truncated, 400, ''],
        ['no boundary', noBoundary, 400, ''],
      ]
      for (const [what, form, status, field] of cases) {
        // over a real socket: the hang (a file part busboy stopped feeding) did not show under inject;
        // the timeout tells a hang from an answer, not a fast answer from a slow one
        const res = await fetch(`${url}/v1/files`, { method: 'POST', headers: { ...env.auth(), ...form.headers }, body: form.payload, signal: AbortSignal.timeout(60_000) })
        const body = await res.text()
        assert.equal(res.status, status, `${what}: ${body}`)
        expectErrorBody({ statusCode: res.status, json: () => JSON.parse(body) })
        if (field) assert.match(body, new RegExp(field), what)
        assert.deepEqual(await readdir(tmpDir()), [], `${what}: temp file left`)
      }
      await stillServing()
    })
  })
}

async function collect (res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of res) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString()
}

// Class 9 of issue 10: what Node's HTTP parser refuses before Fastify sees a request (over-long URLs and
// headers, unparsable HTTP, CONNECT, an unknown Expect) is answered in our error shape. Over a real
// socket: inject never goes through Node's parser.
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { MAX_HEADER_BYTES, parserError } from '../../src/http/client-errors.js'
import { expectErrorBody } from '../contract.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

interface RawResponse { status: number, headers: Record<string, string>, body: string }

/** Sends `text` as is and reads one response (every answer here closes the connection, or is awaited). */
function rawRequest (port: number, text: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => { socket.write(text) })
    let got = Buffer.alloc(0)
    const done = () => {
      const raw = got.toString('utf8')
      const end = raw.indexOf('\r\n\r\n')
      if (end < 0) { reject(new Error(`no response: ${JSON.stringify(raw.slice(0, 200))}`)); return }
      const [statusLine = '', ...lines] = raw.slice(0, end).split('\r\n')
      const headers = Object.fromEntries(lines.map(l => {
        const colon = l.indexOf(':')
        return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()]
      }))
      const body = raw.slice(end + 4, end + 4 + Number(headers['content-length'] ?? 0))
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body })
    }
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      const text = got.toString('utf8')
      const end = text.indexOf('\r\n\r\n')
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end))?.[1]
      if (end >= 0 && length !== undefined && got.length >= end + 4 + Number(length)) { socket.destroy(); done() }
    })
    socket.on('error', () => {}) // a reset after the answer: the answer is what is checked
    socket.on('close', done) // resolving twice is a no-op
  })
}

/** Our error shape, JSON, with a request id, and the code expected. */
function expectOurError (res: RawResponse, status: number, code: string): { error: { message: string } } {
  assert.equal(res.status, status, res.body)
  assert.match(res.headers['content-type'] ?? '', /^application\/json/)
  assert.match(res.headers['x-request-id'] ?? '', /^req_/)
  const body = JSON.parse(res.body) as { error: { code: string, message: string } }
  expectErrorBody({ statusCode: res.status, json: () => body })
  assert.equal(body.error.code, code)
  return body
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: answers from Node's HTTP parser`, () => {
    let env: TestEnv
    let port: number
    const get = (path: string, extra = '') =>
      `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${env.key}\r\n${extra}Connection: close\r\n\r\n`

    before(async () => {
      env = await makeTestEnv(dialect)
      port = Number(new URL(await env.app.listen({ host: '127.0.0.1', port: 0 })).port)
    })
    after(async () => { await env.close() })

    it('class 9: ids of 20,000 characters reach their route and get its 404 (maxParamLength is honoured)', async () => {
      const id = 'a'.repeat(20_000)
      expectOurError(await rawRequest(port, get(`/v1/files/${id}`)), 404, 'file_not_found')
      expectOurError(await rawRequest(port, get(`/v1/fine_tuning/jobs/${id}/checkpoints/${id}`)), 404, 'job_not_found')
    })

    it('class 9: a URL or headers over the limit get a 431 in our error shape', async () => {
      const url = expectOurError(await rawRequest(port, get(`/v1/files/${'a'.repeat(MAX_HEADER_BYTES)}`)),
        431, 'request_headers_too_large')
      assert.match(url.error.message, new RegExp(String(MAX_HEADER_BYTES)))
      const header = await rawRequest(port, get('/v1/files', `X-Big: ${'b'.repeat(MAX_HEADER_BYTES)}\r\n`))
      expectOurError(header, 431, 'request_headers_too_large')
      const many = Array.from({ length: 4000 }, (_, i) => `X-H${i}: ${'c'.repeat(20)}\r\n`).join('')
      expectOurError(await rawRequest(port, get('/v1/files', many)), 431, 'request_headers_too_large')
    })

    it('class 9: HTTP that Node cannot parse, or HTTP/1.1 without Host, gets a 400 in our error shape', async () => {
      const cases = {
        'a bad method token': 'FO(O /v1/files HTTP/1.1\r\nHost: x\r\n\r\n',
        'an unknown version': 'GET /v1/files HTTP/3.1\r\nHost: x\r\n\r\n',
        'two Content-Lengths': 'POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
        'a bad chunk size': `POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${env.key}\r\n` +
          'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n',
        'a header without a colon': 'GET /v1/files HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n',
        'no Host': `GET /v1/files HTTP/1.1\r\nAuthorization: Bearer ${env.key}\r\nConnection: close\r\n\r\n`,
      }
      for (const [what, text] of Object.entries(cases)) {
        const res = await rawRequest(port, text).catch((err: Error) => assert.fail(`${what}: ${err.message}`))
        assert.equal(res.status, 400, `${what}: ${res.body}`)
        expectOurError(res, 400, 'invalid_http_request')
      }
    })

    it('class 9: CONNECT gets our 404 route_not_found instead of a closed connection', async () => {
      const connect = 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'
      const body = expectOurError(await rawRequest(port, connect), 404, 'route_not_found')
      assert.match(body.error.message, /CONNECT example\.com:443/)
    })

    it('class 9: an Expect other than 100-continue gets our 417', async () => {
      expectOurError(await rawRequest(port, get('/v1/files', 'Expect: teapot\r\n')), 417, 'expectation_failed')
    })

    it('class 9: a request timeout is our 408, and a reset connection is left alone', () => {
      const timeout = Object.assign(new Error('timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' })
      assert.equal(parserError(timeout)?.status, 408)
      assert.equal(parserError(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), null)
    })

    it('class 9: the service still answers after all of that', async () => {
      const res = await rawRequest(port, get('/v1/files'))
      assert.equal(res.status, 200, res.body)
    })
  })
}

// Test harness: the real app on a fresh store per test file — a temp SQLite file, or a PostgreSQL
// schema of its own (dropped afterwards) — so files run in parallel without seeing each other.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import pg from 'pg'
import { buildApp } from '../src/app.js'
import { loadConfig, type Config } from '../src/config.js'
import { openContext, type AppContext } from '../src/context.js'
import type { Dialect } from '../src/db/connect.js'
import { createKey, ensureProject } from '../src/projects/keys.store.js'
import type { Service } from '../src/server.js'

export const POSTGRES_URL = process.env.OPENTUNE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

/** DIALECTS=sqlite or DIALECTS=postgres narrows the matrix (kysely's test-setup does the same). */
export const DIALECTS: Dialect[] = (process.env.DIALECTS ?? 'sqlite,postgres').split(',').map(s => s.trim()) as Dialect[]

export interface TestEnv {
  dialect: Dialect
  app: FastifyInstance
  ctx: AppContext
  config: Readonly<Config>
  /** API key of the main test project. */
  key: string
  projectId: string
  /** API key of a second project, for isolation tests. */
  otherKey: string
  otherProjectId: string
  auth: (key?: string) => { authorization: string }
  close: () => Promise<void>
}

export async function testConfig (
  dialect: Dialect,
  env: Record<string, string> = {}
): Promise<{ config: Readonly<Config>, cleanup: () => Promise<void> }> {
  const dataDir = await mkdtemp(join(tmpdir(), 'opentune-test-'))
  const schema = `t_${randomBytes(6).toString('hex')}`
  const config = loadConfig({
    OPENTUNE_DATA_DIR: dataDir,
    OPENTUNE_MODELS_DIR: join(dataDir, 'models'),
    LOG_LEVEL: 'silent',
    HF_HUB_OFFLINE: '1', // never the real Hugging Face Hub: test/hub/ plays it with a stand-in
    ...(dialect === 'postgres' ? { OPENTUNE_DATABASE_URL: POSTGRES_URL, OPENTUNE_DATABASE_SCHEMA: schema } : {}),
    ...env,
  })
  const cleanup = async () => {
    if (dialect === 'postgres') await dropSchema(schema)
    await rm(dataDir, { recursive: true, force: true })
  }
  return { config, cleanup }
}

export async function dropSchema (schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL })
  await client.connect()
  try { await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`) } finally { await client.end() }
}

export async function makeTestEnv (dialect: Dialect, env: Record<string, string> = {}): Promise<TestEnv> {
  const { config, cleanup } = await testConfig(dialect, env)
  const ctx = await openContext(config)
  const app = await buildApp(ctx, { logger: false })
  const project = await ensureProject(ctx.db, 'main')
  const other = await ensureProject(ctx.db, 'other')
  const { key } = await createKey(ctx.db, project.id)
  const { key: otherKey } = await createKey(ctx.db, other.id)
  return {
    dialect,
    app,
    ctx,
    config,
    key,
    projectId: project.id,
    otherKey,
    otherProjectId: other.id,
    auth: (k = key) => ({ authorization: `Bearer ${k}` }),
    close: async () => {
      await app.close()
      await ctx.store.close()
      await cleanup()
    },
  }
}

/** A multipart body for POST /v1/files, built by hand so tests control every byte. */
export function multipartBody (
  fields: Record<string, string>,
  file?: { name: string, content: string | Buffer, field?: string }
) {
  const boundary = `----opentune${randomBytes(8).toString('hex')}`
  const chunks: Buffer[] = []
  for (const [k, v] of Object.entries(fields)) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`))
  }
  if (file) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${file.field ?? 'file'}"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`))
    chunks.push(Buffer.isBuffer(file.content) ? file.content : Buffer.from(file.content))
    chunks.push(Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

export const CHAT_LINE = JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] }) + '\n'

/** Uploads a small fine-tune file through the API and returns its id. */
export async function uploadFile (
  env: TestEnv,
  opts: { key?: string, purpose?: string, name?: string, content?: string } = {}
): Promise<string> {
  const { payload, headers } = multipartBody({ purpose: opts.purpose ?? 'fine-tune' }, { name: opts.name ?? 'train.jsonl', content: opts.content ?? CHAT_LINE })
  const res = await env.app.inject({ method: 'POST', url: '/v1/files', payload, headers: { ...headers, ...env.auth(opts.key) } })
  if (res.statusCode !== 200) throw new Error(`upload failed: ${res.statusCode} ${res.body}`)
  return res.json().id
}

export async function createJob (env: TestEnv, body: Record<string, unknown> = {}, key?: string) {
  const trainingFile = body.training_file ?? await uploadFile(env, { key })
  return await env.app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: env.auth(key),
    payload: { model: 'opentune/tiny-llama', training_file: trainingFile, ...body },
  })
}

/** The openai SDK pointed at a listening service with a new key of `project` (made if missing), as a
 *  user would point it; no retries, so a test sees every status as it came. */
export async function sdkClient (service: Service, project = 'main'): Promise<OpenAI> {
  const { id } = await ensureProject(service.ctx.db, project)
  return new OpenAI({ apiKey: (await createKey(service.ctx.db, id)).key, baseURL: `${service.url}/v1`, maxRetries: 0 })
}

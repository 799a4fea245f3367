// Deployments (/v0/models, Nebius' custom models): created from a checkpoint of the project,
// validated in the background (polled here, never slept on), listed, read, deleted, and resolved as
// an inference model while active. Checkpoints are rows with result files made by hand, on a base
// model folder in the models dir (its weights are never read, so no trainer runs).
import assert from 'node:assert/strict'
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import { buildApp } from '../../src/app.js'
import { insertDeployment } from '../../src/deployments/deployments.store.js'
import { insertResultFile } from '../../src/files/files.store.js'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { newCheckpointId, newFileId, nowSeconds } from '../../src/ids.js'
import { resolveServedModel } from '../../src/inference/resolve-model.js'
import { expectErrorBody } from '../contract.js'
import { createJob, DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'

const BASE = 'test/tiny'
const TINY_CONFIG = join(import.meta.dirname, '..', '..', 'models', 'opentune', 'tiny-llama', 'config.json')
const REPLY_KEYS = ['base_model', 'created_at', 'description', 'name', 'source', 'status']

interface Checkpoint { jobId: string, checkpointId: string, model: string, source: string, fileIds: string[] }

/** A job of the project of `key` on BASE and one checkpoint row of it, with its result files. */
async function makeCheckpoint (env: TestEnv, lora: boolean, key = env.key): Promise<Checkpoint> {
  const job = await createJob(env, { model: BASE, hyperparameters: { lora } }, key)
  assert.equal(job.statusCode, 200, job.body)
  const jobId = job.json().id as string
  const projectId = key === env.key ? env.projectId : env.otherProjectId
  const checkpointId = newCheckpointId()
  const contents: Record<string, string> = lora
    ? {
        'adapter_config.json': JSON.stringify({ r: 8, lora_alpha: 16, base_model_name_or_path: BASE, peft_type: 'LORA' }),
        'adapter_model.safetensors': 'not really safetensors',
      }
    : { 'config.json': await readFile(TINY_CONFIG, 'utf8'), 'model.safetensors': 'not really safetensors' }
  const fileIds: string[] = []
  for (const [name, content] of Object.entries(contents)) {
    const id = newFileId()
    await writeFile(env.ctx.blobs.pathOf(id), content)
    await insertResultFile(env.ctx.db, { id, projectId, filename: `${checkpointId}/${name}`, bytes: content.length })
    fileIds.push(id)
  }
  const model = `ft:${BASE}:main:s:${jobId}:ckpt-step-1`
  await insertCheckpoint(env.ctx.db, {
    id: checkpointId, jobId, stepNumber: 1, fineTunedModelCheckpoint: model, metrics: {}, resultFiles: fileIds,
  })
  return { jobId, checkpointId, model, source: `${jobId}:${checkpointId}`, fileIds }
}

const url = (name: string) => `/v0/models/${name}`

async function create (env: TestEnv, body: Record<string, unknown>, key = env.key) {
  return await env.app.inject({ method: 'POST', url: '/v0/models', headers: env.auth(key), payload: body })
}

/** GETs the deployment until it is no longer validating (bounded: a hung validation fails the test). */
async function settled (env: TestEnv, name: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 500; i++) {
    const res = await env.app.inject({ url: url(name), headers: env.auth() })
    assert.equal(res.statusCode, 200, res.body)
    if (res.json().status !== 'validating') return res.json()
    await sleep(20)
  }
  throw new Error(`${name} still validating after 10 s`)
}

function expect400 (res: { statusCode: number, body: string, json: () => any }, code: string, param: string) {
  assert.equal(res.statusCode, 400, res.body)
  expectErrorBody(res)
  assert.equal(res.json().error.code, code, res.body)
  assert.equal(res.json().error.param, param, res.body)
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: deployments (/v0/models)`, () => {
    let env: TestEnv
    let lora: Checkpoint
    let full: Checkpoint
    before(async () => {
      env = await makeTestEnv(dialect)
      await mkdir(join(env.config.modelsDir, BASE), { recursive: true })
      await copyFile(TINY_CONFIG, join(env.config.modelsDir, BASE, 'config.json'))
      lora = await makeCheckpoint(env, true)
      full = await makeCheckpoint(env, false)
    })
    after(async () => { await env.close() })

    it('creates from a LoRA checkpoint: validating, a Nebius-shaped name, then active', async () => {
      const res = await create(env, { name: 'qa', base_model: BASE, source: lora.source, description: 'Q&A' })
      assert.equal(res.statusCode, 200, res.body)
      const body = res.json()
      assert.deepEqual(Object.keys(body).sort(), REPLY_KEYS)
      assert.match(body.name, /^test\/tiny-LoRa:qa-[A-Za-z0-9]{4}$/)
      assert.equal(body.status, 'validating')
      assert.deepEqual([body.base_model, body.source, body.description], [BASE, lora.source, 'Q&A'])
      const info = await settled(env, body.name)
      assert.deepEqual(info, {
        ...body,
        status: 'active',
        status_reason: null,
        checkpoint_id: lora.checkpointId,
        job_id: lora.jobId,
        file_id: null,
        url: null,
        type: 'text2text',
        tags: ['lora'],
        use_cases: [],
        context_window_k: 1, // max_position_embeddings 1024
      })
    })

    it('creates from a full checkpoint: `-Full:` in the name, tags ["full"], description null when not given',
      async () => {
        const res = await create(env, { name: 'whole.v1_x', base_model: BASE, source: full.source })
        assert.equal(res.statusCode, 200, res.body)
        assert.match(res.json().name, /^test\/tiny-Full:whole\.v1_x-[A-Za-z0-9]{4}$/)
        assert.equal(res.json().description, null)
        const info = await settled(env, res.json().name)
        assert.equal(info.status, 'active', JSON.stringify(info))
        assert.deepEqual(info.tags, ['full'])
      })

    it('GET by the full name with / and : as they are or percent-encoded; list is a bare array, newest first',
      async () => {
        const first = (await create(env, { name: 'same', base_model: BASE, source: lora.source })).json()
        const second = (await create(env, { name: 'same', base_model: BASE, source: lora.source })).json()
        assert.notEqual(first.name, second.name) // one short name, two suffixes
        for (const path of [second.name, encodeURIComponent(second.name), second.name.replace(':', '%3A')]) {
          const res = await env.app.inject({ url: url(path), headers: env.auth() })
          assert.equal(res.statusCode, 200, `${path}: ${res.body}`)
          assert.equal(res.json().name, second.name)
        }
        await settled(env, first.name)
        await settled(env, second.name)
        const list = await env.app.inject({ url: '/v0/models', headers: env.auth() })
        assert.equal(list.statusCode, 200)
        const names = (list.json() as Array<{ name: string }>).map(m => m.name)
        assert.ok(Array.isArray(list.json()))
        assert.deepEqual(names.slice(0, 2), [second.name, first.name])
        assert.ok(names.every(n => n.startsWith(`${BASE}-`)), names.join())
      })

    it('DELETE answers the model as deleted; then it is not listed, not found, and not an inference model',
      async () => {
        const { name } = (await create(env, { name: 'gone', base_model: BASE, source: lora.source })).json()
        await settled(env, name)
        assert.equal((await resolveServedModel(env.ctx, env.projectId, name))?.name, name)
        const del = await env.app.inject({ method: 'DELETE', url: url(encodeURIComponent(name)), headers: env.auth() })
        assert.equal(del.statusCode, 200, del.body)
        assert.equal(del.json().name, name)
        assert.equal(del.json().status, 'deleted')
        const list = (await env.app.inject({ url: '/v0/models', headers: env.auth() })).json() as Array<{ name: string }>
        assert.ok(!list.some(m => m.name === name))
        for (const method of ['GET', 'DELETE'] as const) {
          const res = await env.app.inject({ method, url: url(name), headers: env.auth() })
          assert.equal(res.statusCode, 404, res.body)
          expectErrorBody(res)
          assert.equal(res.json().error.code, 'model_not_found')
          assert.equal(res.json().error.param, 'name')
        }
        assert.equal(await resolveServedModel(env.ctx, env.projectId, name), undefined)
      })

    it('another project\'s deployment answers exactly like an unknown name; its checkpoint like an unknown one',
      async () => {
        const { name } = (await create(env, { name: 'mine', base_model: BASE, source: lora.source })).json()
        const unknown = `${BASE}-LoRa:mine-zzzz`
        for (const method of ['GET', 'DELETE'] as const) {
          const foreign = await env.app.inject({ method, url: url(name), headers: env.auth(env.otherKey) })
          const never = await env.app.inject({ method, url: url(unknown), headers: env.auth(env.otherKey) })
          assert.equal(foreign.statusCode, 404, foreign.body)
          assert.equal(foreign.body.replaceAll(name, '<name>'), never.body.replaceAll(unknown, '<name>'))
        }
        const theirs = (await env.app.inject({ url: '/v0/models', headers: env.auth(env.otherKey) })).json()
        assert.deepEqual(theirs, [])
        assert.equal(await resolveServedModel(env.ctx, env.otherProjectId, name), undefined)
        // the other project deploying this project's checkpoint: the same 400 as a checkpoint that never was
        const foreign = await create(env, { name: 'x', base_model: BASE, source: lora.source }, env.otherKey)
        const fake = `${lora.jobId}:ftckpt_00000000-0000-0000-0000-000000000000`
        const never = await create(env, { name: 'x', base_model: BASE, source: fake }, env.otherKey)
        expect400(foreign, 'checkpoint_not_found', 'source')
        const unquoted = (res: typeof foreign) => res.json().error.message.replace(/'[^']*'/, '<s>')
        assert.equal(unquoted(foreign), unquoted(never))
        // still GET-able by its own project
        assert.equal((await env.app.inject({ url: url(name), headers: env.auth() })).statusCode, 200)
        await settled(env, name)
      })

    it('bad name → 422 on body.name; missing or mistyped fields → 422 naming them', async () => {
      const cases: Array<[Record<string, unknown>, string[], string]> = [
        [{ base_model: BASE, source: lora.source }, ['body', 'name'], 'missing'],
        [{ name: 'a b', base_model: BASE, source: lora.source }, ['body', 'name'], 'string_pattern_mismatch'],
        [{ name: 'x/y', base_model: BASE, source: lora.source }, ['body', 'name'], 'string_pattern_mismatch'],
        [{ name: 'a'.repeat(65), base_model: BASE, source: lora.source }, ['body', 'name'], 'string_too_long'],
        [{ name: '', base_model: BASE, source: lora.source }, ['body', 'name'], 'string_too_short'],
        [{ name: 7, base_model: BASE, source: lora.source }, ['body', 'name'], 'string_type'],
        [{ name: 'ok', source: lora.source }, ['body', 'base_model'], 'missing'],
        [{ name: 'ok', base_model: BASE }, ['body', 'source'], 'missing'],
        [{ name: 'ok', base_model: BASE, source: lora.source, description: 1 }, ['body', 'description'], 'string_type'],
      ]
      for (const [body, loc, type] of cases) {
        const res = await create(env, body)
        assert.equal(res.statusCode, 422, `${JSON.stringify(body)}: ${res.body}`)
        expectErrorBody(res)
        assert.deepEqual(res.json().detail[0].loc, loc, res.body)
        assert.equal(res.json().detail[0].type, type, res.body)
      }
      assert.equal((await create(env, { name: 'a'.repeat(64), base_model: BASE, source: lora.source })).statusCode, 200)
    })

    it('bad source → 400 naming source (uploads and URLs: unsupported_parameter); wrong base_model → 400 naming it',
      async () => {
        for (const source of ['file-123', 'https://huggingface.co/org/adapter', 'huggingface.co/org/adapter']) {
          const res = await create(env, { name: 'x', base_model: BASE, source })
          expect400(res, 'unsupported_parameter', 'source')
          assert.match(res.json().error.message, /<job_id>:<checkpoint_id>/)
        }
        for (const source of ['nonsense', `${lora.jobId}:`, `${lora.jobId}:${full.checkpointId}`, 'a:b:c']) {
          expect400(await create(env, { name: 'x', base_model: BASE, source }), 'checkpoint_not_found', 'source')
        }
        const res = await create(env, { name: 'x', base_model: 'opentune/tiny-llama', source: lora.source })
        expect400(res, 'base_model_mismatch', 'base_model')
        assert.match(res.json().error.message, /trained on, which is 'test\/tiny'/)
      })

    it('a checkpoint whose result files were deleted ends in error, saying so; it is no inference model', async () => {
      const gone = await makeCheckpoint(env, true)
      const del = await env.app.inject({ method: 'DELETE', url: `/v1/files/${gone.fileIds[1] ?? ''}`, headers: env.auth() })
      assert.equal(del.statusCode, 200, del.body)
      const res = await create(env, { name: 'broken', base_model: BASE, source: gone.source })
      assert.equal(res.statusCode, 200, res.body)
      const info = await settled(env, res.json().name)
      assert.equal(info.status, 'error')
      assert.match(String(info.status_reason), /result files were deleted/)
      assert.equal(info.context_window_k, null)
      assert.equal(await resolveServedModel(env.ctx, env.projectId, res.json().name), undefined)
    })

    it('resolveServedModel: an active deployment serves its checkpoint under its own name; a validating one is a 400',
      async () => {
        const loraName = (await create(env, { name: 'srv', base_model: BASE, source: lora.source })).json().name
        const fullName = (await create(env, { name: 'srv', base_model: BASE, source: full.source })).json().name
        await settled(env, loraName)
        await settled(env, fullName)
        const adapter = await resolveServedModel(env.ctx, env.projectId, loraName)
        assert.ok(adapter?.adapter)
        assert.equal(adapter.name, loraName)
        assert.equal(adapter.base.id, BASE)
        assert.equal(adapter.adapter.checkpointId, lora.checkpointId)
        assert.deepEqual([adapter.adapter.r, adapter.adapter.alpha], [8, 16])
        assert.equal(adapter.contextLength, 1024)
        const weights = await resolveServedModel(env.ctx, env.projectId, fullName)
        assert.ok(weights)
        assert.equal(weights.name, fullName)
        assert.equal(weights.fullCheckpointId, full.checkpointId)
        assert.equal(weights.adapter, undefined)
        // a row left validating (as by a server stopped mid-validation) is not served yet
        const validating = await insertDeployment(env.ctx.db, {
          name: `${BASE}-LoRa:pending-abcd`,
          project_id: env.projectId,
          base_model: BASE,
          source: lora.source,
          description: null,
          job_id: lora.jobId,
          checkpoint_id: lora.checkpointId,
          checkpoint_model: lora.model,
          kind: 'lora',
          status: 'validating',
          status_reason: null,
          context_length: null,
          created_at: nowSeconds(),
          deleted_at: null,
        })
        await assert.rejects(resolveServedModel(env.ctx, env.projectId, validating.name),
          (err: { status: number, code: string }) => err.status === 400 && err.code === 'model_not_ready')
        assert.equal(await resolveServedModel(env.ctx, env.projectId, `${BASE}-LoRa:never-abcd`), undefined)
      })

    it('a deployment left validating (a server stopped meanwhile) is validated when the server starts', async () => {
      const row = await insertDeployment(env.ctx.db, {
        name: `${BASE}-Full:restart-wxyz`,
        project_id: env.projectId,
        base_model: BASE,
        source: full.source,
        description: null,
        job_id: full.jobId,
        checkpoint_id: full.checkpointId,
        checkpoint_model: full.model,
        kind: 'full',
        status: 'validating',
        status_reason: null,
        context_length: null,
        created_at: nowSeconds(),
        deleted_at: null,
      })
      const app = await buildApp(env.ctx, { logger: false })
      try {
        await app.ready()
        const info = await settled({ ...env, app }, row.name)
        assert.equal(info.status, 'active', JSON.stringify(info))
      } finally {
        await app.close()
      }
    })

    it('the inference backend\'s check (checkDeployable) can refuse a deployment: error with its reason', async () => {
      const seen: string[] = []
      const app = await buildApp(env.ctx, {
        logger: false,
        checkDeployable: async (served) => {
          seen.push(served.name)
          return served.adapter && served.adapter.r > 4 ? `LoRA rank ${served.adapter.r} is above this engine's 4` : null
        },
      })
      try {
        const res = await app.inject({
          method: 'POST', url: '/v0/models', headers: env.auth(), payload: { name: 'big', base_model: BASE, source: lora.source },
        })
        assert.equal(res.statusCode, 200, res.body)
        const info = await settled({ ...env, app }, res.json().name)
        assert.equal(info.status, 'error')
        assert.equal(info.status_reason, 'LoRA rank 8 is above this engine\'s 4')
        assert.ok(seen.includes(lora.model), seen.join()) // the checkpoint's name: validation resolves that
      } finally {
        await app.close()
      }
    })
  })
}

// The vLLM backend against the stand-in vLLM server (a test double following vLLM v0.11's API):
// model rewriting, runtime LoRA registration (once, concurrent, after a restart), path mapping,
// what cannot be served and why, stream pass-through and abort.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, describe, it } from 'node:test'
import { loadConfig } from '../../src/config.js'
import { ApiError } from '../../src/errors.js'
import type { ServedModel } from '../../src/inference/served-model.js'
import { makeVllmBackend, type VllmBackendOptions } from '../../src/inference/vllm.js'
import type { BaseModel } from '../../src/models/catalog.js'
import { startVllmStandin, type StandinOptions, type VllmStandin } from './vllm-standin.js'

const BASE_ID = 'org/base-model'
const SERVED_NAME = 'base-served' // vLLM's --served-model-name, other than opentune's id so a rewrite shows

let dataDir: string
let mountDir: string // the data dir as "vLLM" sees it: a symlink, standing in for shared storage mounted elsewhere
let baseModel: BaseModel
const standins: VllmStandin[] = []

before(async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'opentune-vllm-'))
  dataDir = join(tmp, 'data')
  mountDir = join(tmp, 'mnt-opentune')
  await mkdir(join(dataDir, 'models', BASE_ID), { recursive: true })
  await writeFile(join(dataDir, 'models', BASE_ID, 'config.json'), '{"model_type": "llama"}')
  await symlink(dataDir, mountDir)
  baseModel = { id: BASE_ID, dir: join(dataDir, 'models', BASE_ID), builtin: false, createdAt: 0 }
})
after(async () => { await rm(join(dataDir, '..'), { recursive: true, force: true }) })
afterEach(async () => { await Promise.all(standins.splice(0).map(async s => await s.close())) })

async function standin (options: Partial<StandinOptions> = {}): Promise<VllmStandin> {
  const s = await startVllmStandin({ root: baseModel.dir, servedModelName: SERVED_NAME, ...options })
  standins.push(s)
  return s
}

function backend (url: string, env: Record<string, string> = {}, options: VllmBackendOptions = {}) {
  const config = loadConfig({
    OPENTUNE_DATA_DIR: dataDir,
    LOG_LEVEL: 'silent',
    OPENTUNE_INFERENCE: 'vllm',
    OPENTUNE_VLLM_URL: `${url}/v1`, // as users write it; config drops the /v1
    ...env,
  })
  return makeVllmBackend(config, options)
}

const baseServed = (): ServedModel => ({
  name: BASE_ID,
  base: baseModel,
  tokenizerDir: baseModel.dir,
  weightsDir: baseModel.dir,
  contextLength: 2048,
})

/** A LoRA checkpoint's served folder with its adapter_config.json, as resolve-model.ts links it. */
async function loraServed (checkpointId: string, r = 8): Promise<ServedModel> {
  const dir = join(dataDir, 'served', checkpointId)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', r, lora_alpha: 2 * r, base_model_name_or_path: BASE_ID,
  }))
  return {
    ...baseServed(),
    name: `ft:${BASE_ID}:main::ftjob-${checkpointId}:ckpt-step-10`,
    adapter: { dir, r, alpha: 2 * r, checkpointId },
  }
}

const loads = (s: VllmStandin) => s.requests.filter(r => r.path === '/v1/load_lora_adapter')
const completions = (s: VllmStandin) => s.requests.filter(r => r.path.endsWith('completions'))
const never = () => new AbortController().signal

function isApiError (status: number, code: string, message?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ApiError, `expected an ApiError, got ${String(err)}`)
    assert.equal(err.status, status, err.message)
    assert.equal(err.code, code, err.message)
    if (message) assert.match(err.message, message)
    return true
  }
}

describe('vLLM backend against the stand-in vLLM server', () => {
  it('a base model: `model` becomes the served model id, every other field goes as sent', async () => {
    const s = await standin()
    const vllm = backend(s.url)
    assert.equal(await vllm.checkDeployable(baseServed()), null)
    const body = { model: BASE_ID, messages: [{ role: 'user', content: 'hi' }], temperature: 0, max_tokens: 3, seed: 7 }
    const res = await vllm.forward('/v1/chat/completions', body, baseServed(), never())
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
    type Answer = { model: string, choices: Array<{ message: { content: string } }>, usage: unknown }
    const answer = await res.json() as Answer
    assert.equal(answer.choices[0]?.message.content, `served by ${SERVED_NAME}`)
    assert.equal(answer.model, SERVED_NAME)
    assert.ok(answer.usage)
    const sent = completions(s)
    assert.equal(sent.length, 1)
    assert.deepEqual(sent[0]?.body, { ...body, model: SERVED_NAME })
    assert.equal(sent[0]?.headers.authorization, undefined)
    assert.deepEqual(loads(s), [])
  })

  it('/v1/completions too; a server started on the HF id (root = the id) serves the catalogue model', async () => {
    const s = await standin({ root: BASE_ID, servedModelName: undefined })
    const vllm = backend(s.url)
    assert.equal(await vllm.checkDeployable(baseServed()), null)
    const res = await vllm.forward('/v1/completions', { model: BASE_ID, prompt: 'Once', max_tokens: 4 }, baseServed(), never())
    const answer = await res.json() as { choices: Array<{ text: string }> }
    assert.equal(answer.choices[0]?.text, `served by ${BASE_ID} more`)
  })

  it('a LoRA checkpoint is registered once under the client\'s model name, by two concurrent first requests', async () => {
    const s = await standin({ loadDelayMs: 150 })
    const vllm = backend(s.url)
    const served = await loraServed('ckpt-once')
    assert.equal(await vllm.checkDeployable(served), null)
    const body = { model: served.name, messages: [{ role: 'user', content: 'hi' }] }
    const [a, b] = await Promise.all([
      vllm.forward('/v1/chat/completions', body, served, never()),
      vllm.forward('/v1/chat/completions', body, served, never()),
    ])
    for (const res of [a, b]) {
      const answer = await res.json() as { model: string, choices: Array<{ message: { content: string } }> }
      assert.equal(answer.model, served.name, 'vLLM answers with the lora_name: the client\'s model')
      assert.equal(answer.choices[0]?.message.content, `served by ${served.name}`)
    }
    assert.equal(loads(s).length, 1)
    assert.deepEqual(loads(s)[0]?.body, { lora_name: served.name, lora_path: served.adapter?.dir })
    assert.deepEqual(completions(s).map(r => (r.body as { model: string }).model), [served.name, served.name])
    // later requests reuse the registration
    await (await vllm.forward('/v1/completions', { model: served.name, prompt: 'x' }, served, never())).text()
    assert.equal(loads(s).length, 1)
  })

  it('lora_path is the adapter folder under OPENTUNE_VLLM_DATA_DIR, where vLLM mounts the data dir', async () => {
    const s = await standin({ root: join(mountDir, 'models', BASE_ID) })
    const vllm = backend(s.url, { OPENTUNE_VLLM_DATA_DIR: `${mountDir}/` })
    const served = await loraServed('ckpt-mapped')
    assert.equal(await vllm.checkDeployable(baseServed()), null, 'the base matched through the mapping')
    const res = await vllm.forward('/v1/chat/completions', { model: served.name, messages: [] }, served, never())
    assert.equal(res.status, 200)
    await res.text()
    assert.deepEqual(loads(s)[0]?.body, { lora_name: served.name, lora_path: join(mountDir, 'served', 'ckpt-mapped') })
  })

  it('without the mapping, a folder vLLM cannot read is a 400 naming the adapter, vLLM\'s message and the fix', async () => {
    const s = await standin()
    const vllm = backend(s.url, { OPENTUNE_VLLM_DATA_DIR: '/nowhere/opentune' })
    const served = await loraServed('ckpt-unreadable')
    await assert.rejects(vllm.forward('/v1/chat/completions', { messages: [] }, { ...served, weightsDir: baseModel.dir },
      never()), isApiError(400, 'adapter_load_failed',
      /ckpt-unreadable.*\/nowhere\/opentune\/served\/ckpt-unreadable.*No adapter found.*OPENTUNE_VLLM_DATA_DIR/))
    assert.deepEqual(completions(s), [])
  })

  it('a rank above OPENTUNE_VLLM_MAX_LORA_RANK: refused at deploy and before forwarding, nothing sent to vLLM', async () => {
    const s = await standin()
    const vllm = backend(s.url, { OPENTUNE_VLLM_MAX_LORA_RANK: '16' })
    const served = await loraServed('ckpt-r32', 32)
    const reason = await vllm.checkDeployable(served)
    assert.match(reason ?? '', /LoRA rank 32 is above the vLLM server's --max-lora-rank 16.*--max-lora-rank 32.*OPENTUNE_VLLM_MAX_LORA_RANK=32/)
    await assert.rejects(vllm.forward('/v1/chat/completions', { messages: [] }, served, never()),
      isApiError(400, 'model_not_servable', /cannot be served by this server's vLLM: its LoRA rank 32/))
    assert.deepEqual(s.requests, [])
    const r40 = await loraServed('ckpt-r40', 40)
    assert.match(await backend(s.url, { OPENTUNE_VLLM_MAX_LORA_RANK: '32' }).checkDeployable(r40) ?? '',
      /--max-lora-rank 64/, 'the next value vLLM accepts')
  })

  it('a setting above what vLLM was started with: vLLM\'s refusal is passed on as a 400', async () => {
    const s = await standin({ maxLoraRank: 16 })
    const vllm = backend(s.url, { OPENTUNE_VLLM_MAX_LORA_RANK: '64' })
    const served = await loraServed('ckpt-r64', 64)
    assert.equal(await vllm.checkDeployable(served), null)
    await assert.rejects(vllm.forward('/v1/chat/completions', { messages: [] }, served, never()),
      isApiError(400, 'adapter_load_failed', /LoRA rank 64 is greater than max_lora_rank 16/))
    // not remembered as registered: the next request asks vLLM again
    await assert.rejects(vllm.forward('/v1/chat/completions', { messages: [] }, served, never()))
    assert.equal(loads(s).length, 2)
  })

  it('a full-weights checkpoint: says to start a vLLM server on its folder; served when the server is', async () => {
    const dir = join(dataDir, 'served', 'ckpt-full')
    await mkdir(dir, { recursive: true })
    const full: ServedModel = {
      ...baseServed(),
      name: `ft:${BASE_ID}:main::ftjob-full:ckpt-step-5`,
      weightsDir: dir,
      tokenizerDir: dir,
      fullCheckpointId: 'ckpt-full',
    }
    const s = await standin()
    const vllm = backend(s.url, { OPENTUNE_VLLM_DATA_DIR: mountDir })
    const reason = await vllm.checkDeployable(full)
    assert.match(reason ?? '', /checkpoint 'ckpt-full' is a full fine-tune.*cannot load.*serves 'base-served'/)
    assert.ok(reason?.includes(`vllm serve ${join(mountDir, 'served', 'ckpt-full')}`), reason ?? '')
    await assert.rejects(vllm.forward('/v1/chat/completions', { messages: [] }, full, never()),
      isApiError(400, 'model_not_servable', /full fine-tune/))
    assert.deepEqual(completions(s), [])

    const own = await standin({ root: join(mountDir, 'served', 'ckpt-full'), servedModelName: 'full-served' })
    const onIt = backend(own.url, { OPENTUNE_VLLM_DATA_DIR: mountDir })
    assert.equal(await onIt.checkDeployable(full), null)
    const res = await onIt.forward('/v1/chat/completions', { model: full.name, messages: [] }, full, never())
    assert.equal((await res.json() as { model: string }).model, 'full-served')
    assert.match(await onIt.checkDeployable(baseServed()) ?? '', /serves 'full-served'.*not 'org\/base-model'/)
  })

  it('a model on another base than the server\'s is refused, naming both', async () => {
    const s = await standin({ root: '/models/other/model', servedModelName: 'other/model' })
    const reason = await backend(s.url).checkDeployable(await loraServed('ckpt-other-base'))
    assert.match(reason ?? '', /serves 'other\/model' \(from \/models\/other\/model\), not the base this adapter was trained on, 'org\/base-model'/)
  })

  it('a stream is passed on byte for byte, SSE framing and [DONE] included', async () => {
    const s = await standin()
    const vllm = backend(s.url)
    const served = await loraServed('ckpt-stream')
    const body = {
      model: served.name,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      max_tokens: 6,
      stream_options: { include_usage: true }
    }
    const res = await vllm.forward('/v1/chat/completions', body, served, never())
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
    const bytes = Buffer.from(await res.arrayBuffer())
    const sent = completions(s)[0]
    assert.ok(sent)
    await sent.ended
    assert.ok(bytes.equals(sent.written), 'the same bytes vLLM wrote')
    const text = bytes.toString('utf8')
    assert.ok(text.endsWith('data: [DONE]\n\n'))
    assert.match(text, /"usage":\{"prompt_tokens"/)
    assert.deepEqual(sent.body, { ...body, model: served.name })
    assert.equal(sent.headers.accept, 'text/event-stream')
  })

  it('aborting the signal (the client went away) closes the upstream request', async () => {
    const s = await standin({ chunkDelayMs: 40 })
    const vllm = backend(s.url)
    const controller = new AbortController()
    const res = await vllm.forward('/v1/completions', { prompt: 'x', stream: true, max_tokens: 200 }, baseServed(),
      controller.signal)
    const reader = res.body!.getReader()
    const first = await reader.read()
    assert.match(Buffer.from(first.value!).toString('utf8'), /^data: /)
    controller.abort()
    await assert.rejects(reader.read())
    const sent = completions(s)[0]!
    await sent.ended
    assert.equal(sent.closedEarly, true, 'the stand-in saw the connection close before its answer ended')
    assert.ok(!sent.written.toString('utf8').includes('[DONE]'))
  })

  it('an already aborted signal sends nothing and rejects with the abort', async () => {
    const s = await standin()
    const controller = new AbortController()
    controller.abort()
    await assert.rejects(backend(s.url).forward('/v1/completions', { prompt: 'x' }, baseServed(), controller.signal),
      (err: Error) => err.name === 'AbortError')
    assert.deepEqual(completions(s), [])
  })

  it('after a vLLM restart (adapters forgotten) the adapter is registered again and the request answered', async () => {
    const s = await standin()
    const vllm = backend(s.url)
    const served = await loraServed('ckpt-restart')
    const ask = async () => await vllm.forward('/v1/chat/completions', { model: served.name, messages: [] }, served, never())
    assert.equal((await ask()).status, 200)
    s.restart()
    const [a, b] = await Promise.all([ask(), ask()])
    assert.equal(a.status, 200)
    assert.equal(b.status, 200)
    assert.equal((await a.json() as { model: string }).model, served.name)
    await b.text()
    assert.equal(loads(s).length, 2, 'one registration before the restart, one after (shared by both requests)')
    assert.equal(completions(s).length, 5, 'two of them first answered 404')
  })

  it('after an opentune restart (vLLM still has the adapter) "already loaded" at the same path counts', async () => {
    const s = await standin()
    const served = await loraServed('ckpt-kept')
    s.adapters.set(served.name, served.adapter!.dir)
    const res = await backend(s.url).forward('/v1/chat/completions', { messages: [] }, served, never())
    assert.equal(res.status, 200)
    await res.text()
    assert.equal(loads(s).length, 1)
    assert.equal(s.requests.filter(r => r.path === '/v1/unload_lora_adapter').length, 0)

    s.adapters.set(served.name, '/some/older/folder')
    const again = await backend(s.url).forward('/v1/chat/completions', { messages: [] }, served, never())
    assert.equal(again.status, 200)
    await again.text()
    assert.equal(s.adapters.get(served.name), served.adapter!.dir, 'unloaded and loaded from the right folder')
  })

  it('OPENTUNE_VLLM_API_KEY is sent as Bearer on every call; a wrong one is a 502 that names the setting', async () => {
    const s = await standin({ apiKey: 'vllm-secret' })
    const served = await loraServed('ckpt-key')
    const res = await backend(s.url, { OPENTUNE_VLLM_API_KEY: 'vllm-secret' })
      .forward('/v1/chat/completions', { messages: [] }, served, never())
    assert.equal(res.status, 200)
    await res.text()
    assert.ok(s.requests.every(r => r.headers.authorization === 'Bearer vllm-secret'))
    await assert.rejects(backend(s.url, { OPENTUNE_VLLM_API_KEY: 'wrong' }).checkDeployable(baseServed()),
      isApiError(502, 'upstream_error', /401.*OPENTUNE_VLLM_API_KEY/))
  })

  it('vLLM started without VLLM_ALLOW_RUNTIME_LORA_UPDATING: a 502 that says how to start it', async () => {
    const s = await standin({ runtimeLoraUpdating: false })
    await assert.rejects(backend(s.url).forward('/v1/chat/completions', { messages: [] }, await loraServed('ckpt-norl'),
      never()), isApiError(502, 'upstream_error', /VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora/))
  })

  it('vLLM unreachable: 502 upstream_unavailable naming OPENTUNE_VLLM_URL; a slow registration times out', async () => {
    const s = await standin()
    const url = s.url
    await s.close()
    standins.splice(standins.indexOf(s), 1)
    await assert.rejects(backend(url).forward('/v1/completions', { prompt: 'x' }, baseServed(), never()),
      isApiError(502, 'upstream_unavailable', /vLLM server at OPENTUNE_VLLM_URL \(http:\/\/127\.0\.0\.1:\d+\) cannot be reached: GET \/v1\/models failed: ECONNREFUSED/))

    const slow = await standin({ loadDelayMs: 1000 })
    const vllm = backend(slow.url, {}, { controlTimeoutMs: 200 })
    const served = await loraServed('ckpt-slow')
    await assert.rejects(vllm.forward('/v1/completions', { prompt: 'x' }, served, never()),
      isApiError(502, 'upstream_unavailable', /POST \/v1\/load_lora_adapter got no answer within 0.2 s/))
  })
})

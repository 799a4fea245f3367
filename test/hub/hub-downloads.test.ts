// Base models from the Hugging Face Hub (src/hub/), against the Hub stand-in: a job naming a Hub repo
// that is not on disk downloads it while validating its files — once for two jobs at once, resumed after
// a cut transfer, each file checked against its published hash — and fails naming the cause otherwise.
import assert from 'node:assert/strict'
import { existsSync, readdirSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { modelsPullCommand } from '../../src/hub/pull-command.js'
import { loadModelSupport } from '../../src/models/support.js'
import { DIALECTS, makeTestEnv, testConfig, type TestEnv } from '../helper.js'
import { allEvents, get, JOBS, makeRunner, newJob, waitFor } from '../runner/helpers.js'
import { modelRepoFiles, safetensorsOf } from './hub-repos.js'
import { HubStandin } from './hub-standin.js'

const ROOT = join(import.meta.dirname, '..', '..')
const WEIGHTS = safetensorsOf(64 * 1024) // 256 KiB: cut in the middle below

async function finished (env: TestEnv, id: string) {
  return await waitFor(`job ${id} to end`, async () => {
    const job = await get(env, `${JOBS}/${id}`)
    return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined
  })
}

/** A port nothing listens on: one the system just handed out and took back. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}

const messages = async (env: TestEnv, id: string) => (await allEvents(env, id)).map(e => e.message)

for (const dialect of DIALECTS) {
  describe(`models from the Hugging Face Hub (${dialect})`, () => {
    let hub: HubStandin
    let env: TestEnv

    before(async () => {
      hub = new HubStandin()
      await hub.start()
      hub.addRepo('someorg/tiny-llama', await modelRepoFiles(undefined, WEIGHTS), { cutAfter: new Map([['model.safetensors', 100_000]]) })
      env = await makeTestEnv(dialect, { HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '' })
    })
    after(async () => {
      await env.close()
      await hub.close()
    })

    it('downloads a Hub model once for two jobs at once, resumes a cut transfer, and it becomes a model', async () => {
      const jobs = [await newJob(env, { model: 'someorg/tiny-llama' }), await newJob(env, { model: 'someorg/tiny-llama' })]
      const runners = [makeRunner(env), makeRunner(env)] // each validates one job: both at the same time
      await Promise.all(runners.map(async r => await r.drain()))
      for (const id of jobs) assert.equal((await finished(env, id)).status, 'succeeded')

      const transfers = hub.transfers('someorg/tiny-llama', 'model.safetensors')
      assert.deepEqual(transfers.map(t => [t.range, t.bodyBytes])[0], [null, 100_000], 'cut after 100 000 bytes…')
      assert.equal(transfers.length, 2)
      // …then only what had not arrived, once, from the bytes on disk (all 100 000 unless the cut lost some)
      const from = Number(/^bytes=(\d+)-(\d+)$/.exec(transfers[1]?.range ?? '')?.[1])
      assert.ok(from > 0 && from <= 100_000, transfers[1]?.range ?? 'no range')
      assert.deepEqual(transfers.map(t => [t.range, t.bodyBytes])[1], [`bytes=${from}-${WEIGHTS.length - 1}`, WEIGHTS.length - from])
      const fetched = hub.requests.filter(r => r.path.includes('/resolve/')).map(r => r.path.split('/').at(-1))
      for (const skipped of ['pytorch_model.bin', 'model.onnx', 'README.md']) assert.ok(!fetched.includes(skipped), skipped)
      const dir = join(env.config.modelsDir, 'someorg', 'tiny-llama')
      assert.deepEqual(await readFile(join(dir, 'model.safetensors')), WEIGHTS)
      assert.deepEqual(readdirSync(dir).sort(), ['.hub.json', 'config.json', 'generation_config.json', 'model.safetensors',
        'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'])

      const events = await Promise.all(jobs.map(async id => await messages(env, id)))
      const downloading = events.map(list => list.filter(m => m.startsWith('Downloading someorg/tiny-llama@')))
      assert.equal(downloading.flat().length, 1, 'one job downloads, the other uses its files')
      assert.match(downloading.flat()[0] ?? '', /from the Hugging Face Hub: 6 files, 0\.27 MB$/)
      const all = events.flat()
      assert.ok(all.some(m => /^Downloaded 6\/6 files, 0\.27 MB of 0\.27 MB \(someorg\/tiny-llama\)$/.test(m)), all.join('\n'))
      const models = (await get(env, '/v1/models')).data.map((m: { id: string }) => m.id)
      assert.ok(models.includes('someorg/tiny-llama'), models.join(', '))
    })

    it('waits for a download another process holds the lock of', async () => {
      hub.addRepo('someorg/locked', await modelRepoFiles(undefined, safetensorsOf(1024)))
      const lock = join(env.config.modelsDir, '.hub', 'locks', 'someorg--locked.lock')
      await mkdir(join(lock, '..'), { recursive: true })
      await writeFile(lock, JSON.stringify({ pid: 1, host: 'elsewhere' }))
      const id = await newJob(env, { model: 'someorg/locked' })
      const runner = makeRunner(env)
      const drained = runner.drain()
      await waitFor('the wait event', async () => (await messages(env, id)).includes('Waiting for the download of someorg/locked that another job started'))
      assert.equal(hub.transfers('someorg/locked', 'model.safetensors').length, 0)
      await rm(lock)
      await drained
      assert.equal((await finished(env, id)).status, 'succeeded')
    })

    it('stops a download when its job is cancelled, keeping what arrived for the next job', async () => {
      hub.addRepo('someorg/slow', await modelRepoFiles(undefined, safetensorsOf(16 * 1024)), { stall: new Set(['model.safetensors']) })
      const id = await newJob(env, { model: 'someorg/slow' })
      const drained = makeRunner(env).drain()
      await waitFor('the transfer to start', async () => hub.transfers('someorg/slow', 'model.safetensors').length > 0)
      const res = await env.app.inject({ method: 'POST', url: `${JOBS}/${id}/cancel`, headers: env.auth() })
      assert.equal(res.statusCode, 200, res.body)
      await drained // the runner's validation slot is free again
      assert.equal((await get(env, `${JOBS}/${id}`)).status, 'cancelled')
      assert.ok(!existsSync(join(env.config.modelsDir, 'someorg', 'slow')), 'no model folder from half a download')
      const partial = join(env.config.modelsDir, '.hub', 'partial')
      assert.ok(readdirSync(partial).some(d => d.startsWith('someorg--slow@')), 'its files so far are kept')
      assert.ok(!existsSync(join(env.config.modelsDir, '.hub', 'locks', 'someorg--slow.lock')), 'the lock is let go')
    })

    it('fails the job naming the cause: unknown repo, gated repo, unsupported architecture, corrupt file', async () => {
      hub.addRepo('someorg/gated', await modelRepoFiles(undefined, safetensorsOf(1024)), { readers: new Set(['hf_granted']) })
      const tiny = JSON.parse((await readFile(join(ROOT, 'models', 'opentune', 'tiny-llama', 'config.json'), 'utf8')))
      const moe = await modelRepoFiles(undefined, safetensorsOf(1024))
      moe['config.json'] = Buffer.from(JSON.stringify({ ...tiny, model_type: 'mixtral', num_local_experts: 8 }))
      hub.addRepo('someorg/moe', moe)
      hub.addRepo('someorg/corrupt', await modelRepoFiles(undefined, safetensorsOf(4096)), { corrupt: new Set(['model.safetensors']) })
      const cases = {
        'someorg/missing': ['hub_repo_not_found', /^someorg\/missing was not found on the Hugging Face Hub/],
        'someorg/gated': ['hub_access_denied', /^someorg\/gated on the Hugging Face Hub is gated or private and the token given has no access \(HTTP 401/],
        'someorg/moe': ['unsupported_model', /^someorg\/moe cannot be fine-tuned here: model_type "mixtral" is not supported/],
        'someorg/corrupt': ['hub_file_corrupt', /^model\.safetensors of someorg\/corrupt@[0-9a-f]{12} does not match the sha256 the Hub publishes/],
      } as const
      const ids = new Map<string, string>()
      for (const model of Object.keys(cases)) ids.set(model, await newJob(env, { model }))
      await makeRunner(env).drain()
      for (const [model, [code, message]] of Object.entries(cases)) {
        const job = await finished(env, ids.get(model) ?? '')
        assert.equal(job.status, 'failed', model)
        assert.equal(job.error.code, code, model)
        assert.equal(job.error.param, 'model', model)
        assert.match(job.error.message, message)
      }
      assert.equal(hub.transfers('someorg/moe', 'model.safetensors').length, 0, 'refused from config.json alone')
      assert.ok(!existsSync(join(env.config.modelsDir, 'someorg', 'corrupt')), 'no model folder from a corrupt download')
    })

    it('refuses a Hub model at creation when the Hub cannot be used', async () => {
      const training = { model: 'someorg/tiny-llama-2', training_file: 'file-x' }
      const offline = await makeTestEnv(dialect, { HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '1' })
      const closed = await makeTestEnv(dialect, { HF_ENDPOINT: `http://127.0.0.1:${await closedPort()}`, HF_HUB_OFFLINE: '' })
      try {
        for (const [e, why] of [[offline, /and HF_HUB_OFFLINE forbids downloading it from the Hugging Face Hub/],
          [closed, /and the Hugging Face Hub at http:\/\/127\.0\.0\.1:\d+ \(HF_ENDPOINT\) cannot be reached \(ECONNREFUSED\)/]] as const) {
          const res = await e.app.inject({ method: 'POST', url: JOBS, headers: e.auth(), payload: training })
          assert.equal(res.statusCode, 400, res.body)
          assert.equal(res.json().error.code, 'model_not_available')
          assert.match(res.json().error.message, /^Model 'someorg\/tiny-llama-2' is not available for fine-tuning: it is not in the models directory/)
          assert.match(res.json().error.message, why)
        }
      } finally {
        await offline.close()
        await closed.close()
      }
    })
  })
}

describe('opentune models pull', () => {
  // the command's function, in this process (a CLI process costs ~15 s of tsx start on a loaded 2-core machine)
  it('downloads a repo at a revision into OPENTUNE_MODELS_DIR, then finds it there', async (t) => {
    const hub = new HubStandin()
    await hub.start()
    const repo = hub.addRepo('someorg/pulled', await modelRepoFiles(undefined, safetensorsOf(2048)))
    const { config, cleanup } = await testConfig('sqlite', { HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '' })
    const out: string[] = []
    const err: string[] = []
    t.mock.method(console, 'log', (line: string) => out.push(line))
    t.mock.method(console, 'error', (line: string) => err.push(line))
    const dir = join(config.modelsDir, 'someorg', 'pulled')
    try {
      const support = loadModelSupport(config.trainerDir)
      assert.equal(await modelsPullCommand(config, support, [`someorg/pulled@${repo.commit}`]), 0, err.join('\n'))
      assert.match(err[0] ?? '', new RegExp(`^someorg/pulled@${repo.commit.slice(0, 12)}: 6 files, 0\\.0 MB$`))
      assert.deepEqual(out, [`pulled someorg/pulled into ${dir}`])
      assert.equal(JSON.parse(await readFile(join(dir, '.hub.json'), 'utf8')).commit, repo.commit)
      assert.equal(await modelsPullCommand(config, support, ['someorg/pulled']), 0)
      assert.equal(out[1], `someorg/pulled is already in ${dir}`)
      assert.equal(await modelsPullCommand(config, support, ['someorg/nothing-here']), 1)
      assert.match(err.at(-1) ?? '', /^someorg\/nothing-here was not found on the Hugging Face Hub/)
      assert.equal(await modelsPullCommand(config, support, ['not a repo']), 2)
    } finally {
      await hub.close()
      await cleanup()
    }
  })
})

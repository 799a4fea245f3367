// Many GPUs per job (docs/multi-gpu.md): the runner's pool gives each job devices of its own, in
// CUDA_VISIBLE_DEVICES; a job asks for more with extra_body {"opentune": {"gpus": N}}; several GPUs
// mean torchrun; the SIGKILL after a SIGTERM waits as long as the trainer says its state needs.
// The devices are a test double: OPENTUNE_GPUS names them, a scripted trainer echoes its env.
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { GpuPool } from '../../src/runner/gpu-devices.js'
import { Runner } from '../../src/runner/runner.js'
import { gpusAsked, StopGrace, trainerArgv } from '../../src/runner/trainer-launch.js'
import type { Config } from '../../src/config.js'
import type { JobRow } from '../../src/fine-tuning/jobs.store.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import { get, JOBS, newGate, newJob, waitFor } from './helpers.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')

describe('the GPU pool', () => {
  it('gives the lowest free ids, first come first served, and takes them back', async () => {
    const pool = new GpuPool([0, 1, 2])
    const never = () => false
    const a = await pool.acquire(1, never)
    const b = await pool.acquire(2, never)
    assert.deepEqual([a?.ids, b?.ids], [[0], [1, 2]])
    let c: number[] | undefined
    const waiting = pool.acquire(2, never, 10).then(l => { c = l ? [...l.ids] : undefined })
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.equal(c, undefined, 'two are not free yet')
    b?.release()
    await waiting
    assert.deepEqual(c, [1, 2])
    await assert.rejects(pool.acquire(4, never), /4 GPUs asked for, the pool has 3/)
    let stop = false
    const given = pool.acquire(3, () => stop, 10)
    stop = true
    assert.equal(await given, null, 'a stopped job stops waiting')
  })

  it('one GPU runs the trainer itself; several run it under torchrun', () => {
    const ours = ['py', '-m', 'opentune_trainer']
    assert.deepEqual(trainerArgv(ours, 1, '/s.json'), ['py', '-m', 'opentune_trainer', 'train', '--spec', '/s.json'])
    assert.deepEqual(trainerArgv(ours, 2, '/s.json'), ['py', '-m', 'torch.distributed.run', '--standalone',
      '--nproc_per_node=2', '-m', 'opentune_trainer', 'train', '--spec', '/s.json'])
    assert.deepEqual(trainerArgv(['node', 'fake.mjs'], 2, '/s.json'), ['node', 'fake.mjs', 'train', '--spec', '/s.json'])
  })

  it('a spec-draft job takes one GPU whatever the runner gives others, and is refused more', () => {
    const config = { gpusPerJob: 2 } as Config
    const job = (method: string, extra: Record<string, unknown> | null = null) =>
      ({ method: { type: method }, extra_body: extra, extra_fields: null }) as unknown as JobRow
    assert.deepEqual(gpusAsked(job('supervised'), config), { n: 2, asked: false })
    assert.deepEqual(gpusAsked(job('spec-draft'), config), { n: 1, asked: false })
    assert.deepEqual(gpusAsked(job('spec-draft', { opentune: { gpus: 1 } }), config), { n: 1, asked: true })
    const refused = gpusAsked(job('spec-draft', { opentune: { gpus: 2 } }), config)
    assert.ok('code' in refused && refused.param === 'extra_body.opentune.gpus', JSON.stringify(refused))
    assert.match(refused.message, /spec-draft job trains its drafter on one GPU/)
  })

  it('waits after SIGTERM as long as the trainer says it needs, within bounds', () => {
    const grace = new StopGrace(10_000, 300_000)
    grace.heard({ type: 'started', total_steps: 9, steps_per_epoch: 3, start_step: 0, stop_s: 0.5 } as never)
    assert.equal(grace.ms, 10_000, 'a LoRA state: the base grace')
    grace.heard({ type: 'state_saved', step: 3, dir: '/x', seconds: 60 } as never)
    assert.equal(grace.ms, 95_000, 'a full state written in 60 s: 1.5 × that + 5 s')
    grace.heard({ type: 'state_saved', step: 6, dir: '/x', seconds: 3600 } as never)
    assert.equal(grace.ms, 300_000, 'never past OPENTUNE_STOP_GRACE_MAX_SECONDS')
    assert.equal(new StopGrace(0, 300_000).atLeast(10_000), 10_000, 'nothing heard: the runner\'s grace')
    assert.equal(grace.atLeast(10_000), 300_000)
    assert.equal(grace.atLeast(0), 0, 'a hung trainer: SIGKILL at once')
  })
})

for (const dialect of DIALECTS) {
  describe(`GPUs per job (${dialect})`, () => {
    let env: TestEnv
    const gate = newGate()
    before(async () => {
      env = await makeTestEnv(dialect, {
        OPENTUNE_GPUS: '0,1',
        OPENTUNE_MAX_CONCURRENT_JOBS: '2',
        FAKE_TRAINER_GATE: gate.path,
      })
    })
    after(async () => {
      gate.remove()
      await env.close()
    })

    const trainerEnv = (jobId: string) => {
      const path = join(env.config.dataDir, 'jobs', jobId, 'out', 'trainer-env.json')
      return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) as Record<string, string | null> : undefined
    }

    it('two concurrent jobs get different GPUs; a job asking for more than there are is refused', async () => {
      const trainerCommand = [process.execPath, join(FIXTURES, 'env-trainer.mjs')]
      const runner = new Runner(env.ctx, { log: env.app.log, pollMs: 50, trainerCommand, stopGraceMs: 3000 })
      const a = await newJob(env, { hyperparameters: { lora: true, n_epochs: 1 } })
      const b = await newJob(env, { hyperparameters: { lora: true, n_epochs: 1 } })
      const c = await newJob(env, { hyperparameters: { lora: true }, extra_body: { opentune: { gpus: 3 } } })
      runner.start()
      try {
        // both wait at the gate with their GPUs held: they run at the same time
        const [ea, eb] = await waitFor('both trainers', async () => {
          const both = [trainerEnv(a), trainerEnv(b)]
          return both.every(Boolean) && both
        })
        assert.deepEqual([ea!.CUDA_VISIBLE_DEVICES, eb!.CUDA_VISIBLE_DEVICES].sort(), ['0', '1'])
        assert.equal(ea!.OPENTUNE_STOP_GRACE_S, '300')
        gate.open()
        for (const id of [a, b]) {
          await waitFor(`${id} to succeed`, async () => (await get(env, `${JOBS}/${id}`)).status === 'succeeded')
        }
        const failed = await waitFor('the 3-GPU job to fail', async () => {
          const job = await get(env, `${JOBS}/${c}`)
          return job.status === 'failed' && job
        })
        assert.equal(failed.error.code, 'invalid_hyperparameters')
        assert.equal(failed.error.param, 'extra_body.opentune.gpus')
        assert.match(failed.error.message, /asks for 3 GPUs .*this runner has 2 \(OPENTUNE_GPUS: 0,1\)/)
        assert.equal(trainerEnv(c), undefined, 'no trainer started')
      } finally {
        await runner.stop()
      }
    })
  })
}

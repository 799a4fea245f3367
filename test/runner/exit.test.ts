// Class 8 (issue 10): a trainer that dies by a signal is reported as what it was. Before, every
// SIGKILL read "out_of_memory … try a smaller batch_size … or LoRA", also when someone outside had
// killed it, and also on a job that already used LoRA.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { classifyExit } from '../../src/runner/exit.js'
import { oomKillCount, oomKilledBetween } from '../../src/runner/oom-kills.js'
import { Runner } from '../../src/runner/runner.js'
import type { TrainerExit } from '../../src/runner/trainer-process.js'
import { createJob, DIALECTS, makeTestEnv, uploadFile } from '../helper.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')
const TRAIN = readFileSync(join(import.meta.dirname, '..', '..', 'examples', 'data', 'train.jsonl'), 'utf8')

const exit = (signal: NodeJS.Signals | null, code: number | null = null): TrainerExit =>
  ({ code, signal, spawnError: null, stderrTail: '' })
const error = (e: TrainerExit, oomKilled: boolean | null, lora = true) => {
  const outcome = classifyExit(e, null, 'python3', { oomKilled, lora })
  assert.ok(!outcome.ok)
  return outcome.error
}

describe('class 8: a killed trainer is reported as what killed it', () => {
  it('class 8: SIGKILL is out_of_memory only when the cgroup counted an OOM kill', () => {
    const oom = error(exit('SIGKILL'), true)
    assert.equal(oom.code, 'out_of_memory')
    assert.match(oom.message, /out-of-memory killer/)
    assert.doesNotMatch(oom.message, /LoRA/, 'a LoRA job is not told to use LoRA')
    assert.match(error(exit('SIGKILL'), true, false).message, /or LoRA/)
    const outside = error(exit('SIGKILL'), false)
    assert.equal(outside.code, 'trainer_killed')
    assert.match(outside.message, /killed by SIGKILL from outside the service/)
    assert.doesNotMatch(outside.message, /batch_size/)
    const unknown = error(exit('SIGKILL'), null)
    assert.equal(unknown.code, 'trainer_killed')
    assert.match(unknown.message, /out-of-memory killer or from outside the service; this machine does not say/)
  })

  it('class 8: SIGTERM, SIGINT or SIGHUP from outside is a kill; SIGSEGV or SIGABRT stays a crash', () => {
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      const e = error(exit(signal), false)
      assert.equal(e.code, 'trainer_killed', signal)
      assert.match(e.message, new RegExp(`killed by ${signal} from outside the service`))
    }
    // SIGTERM caught by the trainer: it saved its state and exited 3, though the runner never asked
    assert.match(error(exit(null, 3), null).message, /SIGTERM from outside the service \(it saved its state first\)/)
    for (const signal of ['SIGSEGV', 'SIGABRT'] as const) {
      assert.equal(error(exit(signal), false).code, 'internal_error')
    }
  })

  it('class 8: the OOM-kill counter is read from cgroup v2 memory.events or v1 memory.oom_control', async () => {
    const root = await mkdtemp(join(tmpdir(), 'opentune-cgroup-'))
    try {
      assert.equal(await oomKillCount(root), null, 'no counter: unknown, not zero')
      await writeFile(join(root, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n')
      await mkdir(join(root, 'memory'))
      await writeFile(join(root, 'memory', 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 5\n')
      const n = await oomKillCount(root)
      assert.ok(n === 2 || n === 5, `read ${n}`) // which one depends on this machine's /proc/self/cgroup
      assert.equal(oomKilledBetween(2, 3), true)
      assert.equal(oomKilledBetween(2, 2), false)
      assert.equal(oomKilledBetween(null, 2), null)
    } finally {
      await rm(root, { recursive: true, force: true })
    }
  })

  for (const dialect of DIALECTS) {
    it(`class 8: a trainer killed by a signal from outside fails its job naming the signal (${dialect})`, async () => {
      for (const signal of ['SIGKILL', 'SIGTERM']) {
        const env = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'signal', FAKE_TRAINER_SIGNAL: signal })
        try {
          const training = await uploadFile(env, { content: TRAIN })
          const hyperparameters = { lora: true, n_epochs: 1 }
          const res = await createJob(env, { training_file: training, hyperparameters })
          assert.equal(res.statusCode, 200, res.body)
          const command = [process.execPath, join(FIXTURES, 'fake-trainer.mjs')]
          const runner = new Runner(env.ctx, {
            log: env.app.log,
            pollMs: 50,
            trainerCommand: command,
            stopGraceMs: 3000,
          })
          await runner.drain()
          const url = `/v1/fine_tuning/jobs/${res.json().id}`
          const job = (await env.app.inject({ url, headers: env.auth() })).json()
          assert.equal(job.status, 'failed')
          assert.equal(job.error.code, 'trainer_killed', JSON.stringify(job.error))
          assert.match(job.error.message, new RegExp(`killed by ${signal}`))
          assert.doesNotMatch(job.error.message, /LoRA/, 'the job uses LoRA already')
        } finally {
          await env.close()
        }
      }
    })
  }
})

// Issue 10, class 3: a hung trainer (kill -STOP, a deadlock) held its job in `running` and the
// training slot forever. Now a trainer that prints no line for OPENTUNE_TRAINER_SILENCE_SECONDS
// (or 4 × its slowest step) is killed, and its job resumes from saved state, or fails with a clear
// error once attempts in a row saved nothing new; the jobs behind it run.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import {
  eventMessages, get, isGone, JOBS, makeRunner, newGate, newJob, processState, trainerPid, waitFor,
} from './helpers.js'

const SILENCE_S = 2
const PAUSED = /^Training paused at step (\d+): the trainer printed nothing for (\d+) s \(hung or stopped\)/

for (const dialect of DIALECTS) {
  describe(`${dialect}: a hung trainer`, () => {
    const gate = newGate()
    let env: TestEnv
    before(async () => {
      env = await makeTestEnv(dialect, {
        OPENTUNE_LEASE_SECONDS: '2',
        OPENTUNE_TRAINER_SILENCE_SECONDS: String(SILENCE_S),
        // after the first epoch's checkpoint the trainer waits at a gate, printing heartbeats
        FAKE_TRAINER_MODE: 'ok',
        FAKE_TRAINER_GATE: gate.path,
        FAKE_TRAINER_GATE_STEP: 'epoch',
        FAKE_TRAINER_GATE_HEARTBEAT: '1',
        // jobs with seed 7 stop themselves right after starting, every time
        FAKE_TRAINER_SIGSTOP: 'start',
        FAKE_TRAINER_SIGSTOP_SEED: '7',
      })
    })
    after(async () => {
      gate.remove()
      await env.close()
    })

    it('class 3: a trainer stopped with SIGSTOP is killed within the silence limit; ' +
      'the job resumes, and the next job runs', async (t) => {
      const first = await newJob(env, { hyperparameters: { batch_size: 4, n_epochs: 3 } })
      const second = await newJob(env, { hyperparameters: { n_epochs: 1 } })
      const done = makeRunner(env).drain()
      const checkpoint = async () => (await get(env, `${JOBS}/${first}/checkpoints`)).data.length > 0
      await waitFor('the first checkpoint', checkpoint)
      const pid = trainerPid(env, first)
      assert.ok(pid !== undefined)
      // Busy without steps (heartbeats) is not hung: still there after twice the limit.
      await new Promise(resolve => setTimeout(resolve, 2 * SILENCE_S * 1000))
      assert.ok(!isGone(pid), 'a trainer printing heartbeats is left alone')
      assert.equal((await getJobById(env.ctx.db, first))?.status, 'running')
      process.kill(pid, 'SIGSTOP')
      const t0 = Date.now()
      const paused = await waitFor('the job to leave running',
        async () => (await eventMessages(env, first)).find(m => PAUSED.test(m)))
      const took = Date.now() - t0
      await waitFor('the stopped trainer to be killed', async () => isGone(pid))
      const [, step, silentS] = PAUSED.exec(paused)!.map(Number)
      t.diagnostic(`paused ${took} ms after SIGSTOP (silence counted: ${silentS} s)`)
      assert.ok(silentS! >= SILENCE_S, paused)
      // The limit is the floor unless a gap before was longer (a loaded machine); timers may fire late.
      assert.ok(took < Math.max(SILENCE_S, silentS!) * 1000 + 5000, `paused ${took} ms after SIGSTOP`)
      gate.open() // the resumed trainer waits at the gate again (it resumes at the first epoch's end)
      await done
      const job = await get(env, `${JOBS}/${first}`)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
      const messages = await eventMessages(env, first)
      assert.ok(messages.some(m => m.startsWith(`Fine-tuning job resumed from step ${step}/`)), messages.join('\n'))
      const steps = (await get(env, `${JOBS}/${first}/checkpoints`)).data
        .map((c: { step_number: number }) => c.step_number)
      assert.deepEqual(steps.sort((a: number, b: number) => a - b), [1, 2, 3].map(e => e * job.total_steps / 3))
      assert.equal((await get(env, `${JOBS}/${second}`)).status, 'succeeded')
      gate.remove()
    })

    it('class 3: a trainer that hangs on every attempt fails its job with a clear error, ' +
      'and the next job runs', async () => {
      gate.open() // the jobs of this test train straight through
      const hung = await newJob(env, { seed: 7, hyperparameters: { n_epochs: 1 } })
      const next = await newJob(env, { hyperparameters: { n_epochs: 1 } })
      const pids = new Set<number>()
      const watching = setInterval(() => { const p = trainerPid(env, hung); if (p) pids.add(p) }, 20)
      try {
        await makeRunner(env).drain()
      } finally {
        clearInterval(watching)
      }
      const job = await get(env, `${JOBS}/${hung}`)
      assert.equal(job.status, 'failed')
      assert.equal(job.error.code, 'internal_error')
      assert.match(job.error.message, /^Training stopped at step 0: the trainer printed nothing for \d+ s/)
      assert.match(job.error.message, /\(hung or stopped\)/)
      assert.match(job.error.message, /so it was killed, 5 attempts in a row without saving new progress; giving up/)
      const messages = await eventMessages(env, hung)
      assert.equal(messages.filter(m => PAUSED.test(m)).length, 4, messages.join('\n'))
      assert.equal(messages.at(-1), `Fine-tuning job failed: ${job.error.message}`)
      for (const pid of pids) assert.ok(isGone(pid), `trainer ${pid} is gone (${processState(pid)})`)
      assert.equal((await get(env, `${JOBS}/${next}`)).status, 'succeeded')
      gate.remove()
    })
  })
}

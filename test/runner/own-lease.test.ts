// A runner whose heartbeat came late (its lease ran out while it still trains the job: a busy
// database pool, a stalled event loop) must not claim that job again and start a second trainer
// in the same folder: bench/control-plane.ts saw exactly that under overload (duplicate
// checkpoints, a job folder removed under a running trainer).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import { get, JOBS, makeRunner, newGate, newJob, trainerPid, waitFor } from './helpers.js'

for (const dialect of DIALECTS) {
  describe(`${dialect}: a runner's own job whose lease ran out`, () => {
    let env: TestEnv
    const gate = newGate()
    before(async () => {
      env = await makeTestEnv(dialect, { FAKE_TRAINER_MODE: 'ok', FAKE_TRAINER_GATE: gate.path, FAKE_TRAINER_GATE_STEP: '1', OPENTUNE_MAX_CONCURRENT_JOBS: '2' })
    })
    after(async () => { gate.remove(); await env.close() })

    // two slots: the runner has room to take the job a second time
    it('is not claimed again by the runner training it: one trainer, one attempt, and the job succeeds', async () => {
      const jobId = await newJob(env, { hyperparameters: { lora: true, n_epochs: 1, batch_size: 8 } })
      const runner = makeRunner(env)
      const done = runner.drain()
      const pid = await waitFor('the trainer at its gate', async () => trainerPid(env, jobId))
      const running = await waitFor('the job running', async () => {
        const job = await getJobById(env.ctx.db, jobId)
        return job?.status === 'running' && job
      })
      // the lease runs out while the trainer waits at its gate, before the runner's next heartbeat
      await env.ctx.db.updateTable('fine_tuning_jobs').set({ locked_until: 1 }).where('id', '=', jobId).execute()
      await runner.tick()
      const after = await getJobById(env.ctx.db, jobId)
      assert.equal(after?.attempts, running.attempts, 'no second attempt was claimed')
      assert.equal(trainerPid(env, jobId), pid, 'no second trainer started')
      gate.open()
      await done
      const job = await get(env, `${JOBS}/${jobId}`)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    })
  })
}

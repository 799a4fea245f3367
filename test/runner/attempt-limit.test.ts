// Issue 10, class 5: five SIGKILLs of the service, each shortly after a checkpoint, failed a job
// ("interrupted 5 times") although every checkpoint was saved. Only attempts that save no new state
// count now: an attempt that saves state resets the count.
//
// A crash here is what the database sees after one: the job stays `running` under a runner that
// will never heartbeat again, and its lease has run out. The test hands the job to such a runner;
// our runner finds its lease gone (it kills its trainer, as PDEATHSIG does when the service dies)
// and claims the job again as a fresh runner would: one more attempt.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Dialect } from '../../src/db/connect.js'
import { getJobById } from '../../src/fine-tuning/jobs.store.js'
import { DIALECTS, makeTestEnv, type TestEnv } from '../helper.js'
import {
  eventMessages, get, isGone, JOBS, makeRunner, newJob, processState, trainerPid, waitFor,
} from './helpers.js'

const MAX_ATTEMPTS = 5 // src/runner/train-job.ts
const STARTED = /^Fine-tuning job (started|resumed from step \d+\/\d+)/

/** Waits until the job's latest trainer has stopped itself, then crashes the runner holding it. */
async function crashWhenHung (env: TestEnv, jobId: string, before: number | undefined, ready: () => Promise<boolean>) {
  const pid = await waitFor('the trainer to hang', async () => {
    const p = trainerPid(env, jobId)
    return p !== undefined && p !== before && processState(p) === 'T' && (await ready()) && p
  })
  await env.ctx.db.updateTable('fine_tuning_jobs').set({ locked_by: 'runner-that-died', locked_until: 0 })
    .where('id', '=', jobId).execute()
  await waitFor('the old trainer to go', async () => isGone(pid))
  return pid
}

/** A job trained by a runner that the test crashes `crashes` times, each once `ready`; its end. */
async function crashedRun (dialect: Dialect, hang: 'state' | 'start', epochs: number, crashes: number,
  ready: (env: TestEnv, jobId: string, crash: number) => Promise<boolean>) {
  const seed = 1
  const env = await makeTestEnv(dialect, {
    FAKE_TRAINER_MODE: 'ok',
    OPENTUNE_LEASE_SECONDS: '2',
    FAKE_TRAINER_SIGSTOP: hang,
    FAKE_TRAINER_SIGSTOP_SEED: String(seed),
  })
  try {
    const jobId = await newJob(env, { seed, hyperparameters: { n_epochs: epochs } })
    const runner = makeRunner(env)
    runner.start()
    try {
      let pid: number | undefined
      for (let crash = 1; crash <= crashes; crash++) {
        pid = await crashWhenHung(env, jobId, pid, async () => await ready(env, jobId, crash))
      }
      const ended = async () => ['succeeded', 'failed'].includes((await getJobById(env.ctx.db, jobId))?.status ?? '')
      await waitFor('the job to end', ended)
    } finally {
      await runner.stop()
    }
    const job = await get(env, `${JOBS}/${jobId}`)
    const checkpoints = (await get(env, `${JOBS}/${jobId}/checkpoints?limit=100`)).data.length as number
    const attempts = (await eventMessages(env, jobId)).filter(m => STARTED.test(m)).length
    return { job, checkpoints, attempts }
  } finally {
    await env.close()
  }
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: the attempt limit`, () => {
    it('class 5: more crashes than the limit, each after new saved state, and the job still succeeds', async () => {
      const epochs = MAX_ATTEMPTS + 3 // the trainer hangs after each epoch but the last: 7 crashes
      // the runner has taken in the crash-th checkpoint and the state saved after it
      const saved = async (env: TestEnv, jobId: string, crash: number) =>
        (await get(env, `${JOBS}/${jobId}/checkpoints`)).data.length === crash &&
        (await getJobById(env.ctx.db, jobId))?.attempts === 0
      const { job, checkpoints, attempts } = await crashedRun(dialect, 'state', epochs, epochs - 1, saved)
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
      assert.equal(job.trained_steps, job.total_steps)
      assert.equal(checkpoints, epochs)
      assert.equal(attempts, epochs)
    })

    it('class 5: attempts that save nothing new still fail the job at the limit', async () => {
      // every attempt hangs before saving anything; after the 5th crash the next claim gives up
      const { job, attempts } = await crashedRun(dialect, 'start', 1, MAX_ATTEMPTS, async () => true)
      assert.equal(job.status, 'failed')
      assert.equal(job.error.code, 'internal_error')
      assert.match(job.error.message, /^Training was interrupted 5 times in a row without saving new progress/)
      assert.equal(attempts, MAX_ATTEMPTS)
    })
  })
}

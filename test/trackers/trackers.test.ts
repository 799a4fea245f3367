// W&B and MLflow runs from a job's integrations (src/trackers/), against the stand-ins (standins.ts).
// On both stores with the scripted fake trainer: a job stopped by a restart and resumed continues
// the same two runs, each step logged once, and ends them with its outcome; the MLflow server's CA
// comes from the request (PEM) or from the Files API. Real training (trackers-real.test.ts) checks
// the runs against the job's metrics and a failing and a hanging tracker.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createJob, DIALECTS, makeTestEnv, uploadFile, type TestEnv } from '../helper.js'
import { allEvents, get, JOBS, makeRunner, newGate, newJob, waitFor } from '../runner/helpers.js'
import { assertNoSecrets, mlflowIntegration, ML_USER, TLS, WANDB_KEY, wandbIntegration } from './integrations.js'
import { series, startMlflow, startWandb } from './standins.js'

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const VALID = readFileSync(join(EXAMPLES, 'valid.jsonl'), 'utf8')
const HP = { n_epochs: 3, batch_size: 8, learning_rate: 3e-3, packing: false } // 96 examples: 36 steps
const STEPS = Array.from({ length: 36 }, (_v, i) => i + 1)

for (const dialect of DIALECTS) {
  describe(`${dialect}: W&B and MLflow runs across a restart`, () => {
    let env: TestEnv
    let wandb: Awaited<ReturnType<typeof startWandb>>
    let mlflow: Awaited<ReturnType<typeof startMlflow>>
    const gate = newGate()
    before(async () => {
      wandb = await startWandb(WANDB_KEY)
      mlflow = await startMlflow(ML_USER, { tls: TLS })
      env = await makeTestEnv(dialect, { WANDB_BASE_URL: wandb.url, FAKE_TRAINER_GATE: gate.path, FAKE_TRAINER_GATE_STEP: 'epoch' })
    })
    after(async () => {
      gate.remove()
      await env.close()
      await wandb.close()
      await mlflow.close()
    })

    it('a job stopped after its first epoch and resumed continues the same runs, each step once', async () => {
      const validation = await uploadFile(env, { content: VALID })
      const jobId = await newJob(env, {
        validation_file: validation,
        hyperparameters: HP,
        integrations: [wandbIntegration(), mlflowIntegration(mlflow.url)],
      })
      const first = makeRunner(env)
      first.start()
      // the trainer waits at the gate after step 12 and its checkpoint; step 11 has reached both runs
      await waitFor('the first checkpoint, and step 11 in both runs', async () =>
        (await get(env, `${JOBS}/${jobId}/checkpoints`)).data.length > 0 &&
        wandb.runs.get(`team/opentune-tests/${jobId}`)?.history.some(h => h._step === 11) &&
        [...mlflow.runs.values()].some(r => series(r, 'train_loss').some(([s]) => s === 11)), 300_000)
      await first.stop() // step 12 may or may not go out as the runner stops: the next attempt sends it if not
      assert.equal((await get(env, `${JOBS}/${jobId}`)).status, 'queued')
      const run = wandb.runs.get(`team/opentune-tests/${jobId}`)
      assert.equal(run?.exitcode, null, 'a paused job leaves its W&B run open')
      assert.equal([...mlflow.runs.values()][0]?.status, 'RUNNING')

      gate.open()
      await makeRunner(env).drain()
      assert.equal((await get(env, `${JOBS}/${jobId}`)).status, 'succeeded')
      const points = (await get(env, `${JOBS}/${jobId}/metrics`)).data as Array<{ step: number, train_loss: number, valid_loss: number | null }>
      assert.deepEqual(points.map(p => p.step), STEPS)

      // W&B: one run named by the job id, shown with the given name, every step once, finished (exit code 0)
      assert.deepEqual([...wandb.runs.keys()], [`team/opentune-tests/${jobId}`])
      assert.ok(run)
      assert.equal(run.upserts, 2, 'the second attempt upserts the same run')
      assert.equal(run.displayName, 'my run')
      assert.deepEqual(run.tags, ['exp-1', 'opentune/finetune', 'opentune/opentune/tiny-llama', `opentune/${jobId}`])
      assert.equal(run.config.learning_rate?.value, 3e-3)
      assert.deepEqual(run.history.map(h => h._step), STEPS)
      assert.deepEqual(run.history.map(h => h.train_loss), points.map(p => p.train_loss))
      assert.deepEqual(run.history.filter(h => h.valid_loss !== undefined).map(h => [h._step, h.valid_loss]),
        points.filter(p => p.valid_loss !== null).map(p => [p.step, p.valid_loss]))
      assert.equal(run.exitcode, 0)
      assert.equal(run.summary.train_loss, points.at(-1)?.train_loss)

      // MLflow: the experiment made once, one run, every step once, FINISHED
      assert.deepEqual([...mlflow.experiments.keys()], ['opentune-tests'])
      const [ml, ...others] = [...mlflow.runs.values()]
      assert.ok(ml)
      assert.equal(others.length, 0)
      assert.equal(ml.run_name, 'ml run')
      assert.deepEqual([ml.tags.team, ml.tags['opentune.job_id']], ['ml', jobId])
      assert.equal(ml.params.n_epochs, '3')
      assert.deepEqual(series(ml, 'train_loss'), points.map(p => [p.step, p.train_loss]))
      assert.deepEqual(series(ml, 'valid_loss').map(([s]) => s), [12, 24, 36])
      assert.equal(ml.status, 'FINISHED')
      assert.deepEqual([...mlflow.auth], [`Basic ${Buffer.from(`${ML_USER.username}:${ML_USER.password}`).toString('base64')}`])

      const messages = (await allEvents(env, jobId)).map(e => e.message)
      assert.ok(messages.includes(`Logging metrics to W&B run team/opentune-tests/${jobId}`), messages.join('\n'))
      assert.ok(messages.includes(`Continuing W&B run team/opentune-tests/${jobId}`))
      assert.ok(messages.some(m => /^MLflow run run1 .*: finished \(succeeded\)/.test(m)))
      assert.ok(!messages.some(m => /not run|ignored/i.test(m)), 'no event says the integrations are ignored')
      await assertNoSecrets(env, jobId)
    })

    if (dialect !== 'sqlite') return
    it('MLflow over HTTPS: without its CA no run is made (an error event says why) and the job succeeds; with the CA as a file id it is', async () => {
      const before = mlflow.runs.size
      const bare = await newJob(env, { integrations: [mlflowIntegration(mlflow.url, { certificate_file: '', run_name: null })] })
      const caFile = await uploadFile(env, { purpose: 'batch', name: 'mlflow-ca.pem', content: TLS.cert })
      const res = await createJob(env, {
        training_file: await uploadFile(env, { content: readFileSync(join(EXAMPLES, 'train.jsonl'), 'utf8') }),
        integrations: [mlflowIntegration(mlflow.url, { certificate_file: '', certificate_file_id: caFile, run_name: null })],
      })
      const byFile = res.json().id as string
      gate.open()
      await makeRunner(env).drain()
      for (const id of [bare, byFile]) assert.equal((await get(env, `${JOBS}/${id}`)).status, 'succeeded')
      const bareEvents = (await allEvents(env, bare) as Array<{ message: string, level?: string }>).filter(e => e.level === 'error').map(e => e.message)
      assert.equal(bareEvents.length, 1, bareEvents.join('\n'))
      assert.match(bareEvents[0] ?? '', /^MLflow run ftjob-\w+ at https:\/\/127\.0\.0\.1:\d+: could not create the run \(.*certificate.*\)/i)
      const made = [...mlflow.runs.values()].slice(before)
      assert.deepEqual(made.map(r => [r.run_name, r.status]), [[byFile, 'FINISHED']], 'the run name defaults to the job id')
      const steps = (await get(env, `${JOBS}/${byFile}/metrics`)).data.map((p: { step: number }) => p.step)
      assert.deepEqual(series(made[0]!, 'train_loss').map(([s]) => s), steps)
    })
  })
}

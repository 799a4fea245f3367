// W&B and MLflow runs of real training (the Python trainer on CPU, opentune/tiny-llama, SQLite, as
// test/e2e/real-training.test.ts): both runs hold every step's train_loss as GET …/metrics and the
// metrics CSV list it, and each checkpoint's valid_loss; a W&B that answers 500 and an MLflow that
// never answers leave the job succeeding — while the unanswered request is still open — with
// events saying that each gave up.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { Runner } from '../../src/runner/runner.js'
import { makeTestEnv, uploadFile, type TestEnv } from '../helper.js'
import { allEvents, get, JOBS, newJob, waitFor } from '../runner/helpers.js'
import { assertNoSecrets, mlflowIntegration, ML_USER, TLS, WANDB_KEY, wandbIntegration } from './integrations.js'
import { series, startMlflow, startWandb } from './standins.js'

const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const VALID = readFileSync(join(EXAMPLES, 'valid.jsonl'), 'utf8')
const HP = { n_epochs: 2, batch_size: 8, learning_rate: 3e-3, packing: false } // 96 examples: 24 steps
const ONE_EPOCH = { ...HP, n_epochs: 1 } // 12 steps: enough to show the trackers failing
const LONG = 10 * 60_000 // real training on a loaded CPU: a bound for a broken run only

const realRunner = (env: TestEnv) => new Runner(env.ctx, { log: env.app.log, pollMs: 50 })

describe('real training: W&B and MLflow runs', () => {
  const closing: Array<() => Promise<void>> = []
  after(async () => { for (const close of closing.reverse()) await close() })

  it('a W&B and an MLflow run hold every step\'s train_loss, as the job\'s metrics and CSV do', async () => {
    const wandb = await startWandb(WANDB_KEY)
    const mlflow = await startMlflow(ML_USER, { tls: TLS })
    const env = await makeTestEnv('sqlite', { OPENTUNE_DEVICE: 'cpu', WANDB_BASE_URL: wandb.url })
    closing.push(wandb.close, mlflow.close, env.close)
    const jobId = await newJob(env, {
      validation_file: await uploadFile(env, { content: VALID }),
      hyperparameters: HP,
      integrations: [wandbIntegration({ entity: null, tags: ['real', 'cpu'] }), mlflowIntegration(mlflow.url)],
    })
    await realRunner(env).drain() // trains, then flushes and finishes the runs
    const job = await get(env, `${JOBS}/${jobId}`)
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error))
    const points = (await get(env, `${JOBS}/${jobId}/metrics`)).data as Array<{ step: number, train_loss: number }>
    assert.equal(points.length, 24)
    const csv = (await env.app.inject({ url: `/v1/files/${job.result_files[0]}/content`, headers: env.auth() })).body
    const [header, ...rows] = csv.trim().split('\n')
    const col = (header ?? '').split(',').indexOf('train_loss')
    assert.deepEqual(rows.map(r => Number(r.split(',')[col])), points.map(p => p.train_loss))
    const checkpoints = (await get(env, `${JOBS}/${jobId}/checkpoints`)).data as Array<{ step_number: number, metrics: { valid_loss: number } }>

    const run = wandb.runs.get(`default-entity/opentune-tests/${jobId}`) // no entity given: the key's own
    assert.ok(run, [...wandb.runs.keys()].join(','))
    assert.equal(run.displayName, 'my run')
    assert.deepEqual(run.tags.slice(0, 2), ['real', 'cpu'])
    assert.deepEqual(run.history.map(h => [h._step, h.train_loss]), points.map(p => [p.step, p.train_loss]))
    assert.deepEqual(run.history.filter(h => 'valid_loss' in h).map(h => [h._step, h.valid_loss]),
      checkpoints.map(c => [c.step_number, c.metrics.valid_loss]))
    assert.ok(run.history.every(h => typeof h.learning_rate === 'number' && typeof h.train_mean_token_accuracy === 'number'))
    assert.equal(run.exitcode, 0)

    const [ml] = [...mlflow.runs.values()]
    assert.ok(ml)
    assert.equal(ml.run_name, 'ml run')
    assert.deepEqual(series(ml, 'train_loss'), points.map(p => [p.step, p.train_loss]))
    assert.deepEqual(series(ml, 'valid_loss'), checkpoints.map(c => [c.step_number, c.metrics.valid_loss]))
    assert.equal(ml.status, 'FINISHED')
    await assertNoSecrets(env, jobId)
  })

  it('a W&B answering 500 and an MLflow never answering: the job succeeds while that request is open; events say both gave up', async () => {
    const wandb = await startWandb(WANDB_KEY, 'error')
    const mlflow = await startMlflow(ML_USER, { mode: 'hang' })
    const env = await makeTestEnv('sqlite', {
      OPENTUNE_DEVICE: 'cpu',
      WANDB_BASE_URL: wandb.url,
      OPENTUNE_TRACKER_ATTEMPTS: '3',
      OPENTUNE_TRACKER_BACKOFF_MS: '10',
      // nothing gives up on the hanging request by itself during the test: only the service stopping
      OPENTUNE_TRACKER_TIMEOUT_MS: String(LONG),
      OPENTUNE_TRACKER_FLUSH_MS: String(LONG),
    })
    closing.push(wandb.close, mlflow.close, env.close)
    const integrations = [wandbIntegration(), mlflowIntegration(mlflow.url)]
    const jobId = await newJob(env, { hyperparameters: ONE_EPOCH, integrations })
    const runner = realRunner(env)
    runner.start()
    try {
      const ended = async () => ['succeeded', 'failed'].includes((await get(env, `${JOBS}/${jobId}`)).status)
      await waitFor('the job to end', ended, LONG)
      assert.equal((await get(env, `${JOBS}/${jobId}`)).status, 'succeeded')
      assert.equal(mlflow.open, 1, 'the job ended while MLflow still had not answered runs/… (one request, open)')
      assert.equal((await get(env, `${JOBS}/${jobId}/checkpoints`)).data.length, 1)
      assert.equal(wandb.requests, 3, 'W&B: upsertBucket tried 3 times, then nothing more')
    } finally {
      await runner.stop() // cuts the flush short: the open request is abandoned
    }
    await waitFor('the stand-in to see the abandoned request closed', async () => mlflow.open === 0)
    const events = await allEvents(env, jobId) as Array<{ message: string, level?: string }>
    const said = (re: RegExp) => events.find(e => re.test(e.message))
    const done = events.findIndex(e => e.message === 'The job has successfully completed')
    assert.ok(done >= 0)
    const w = said(/^W&B run team\/opentune-tests\/ftjob-\w+: could not create the run \(HTTP 500: stand-in failure; 3 attempts\)/)
    assert.equal(w?.level, 'error', events.map(e => e.message).join('\n'))
    const m = said(/^MLflow run ml run at http:\S+: could not create the run \(the service is stopping; a request was still unanswered\)/)
    assert.equal(m?.level, 'error', events.map(e => e.message).join('\n'))
    assert.ok(events.indexOf(m) > done, 'MLflow gave up after the job had ended')
    assert.match(said(/^W&B run .*: 12 of 12 steps were not delivered/)?.message ?? '', /Training was not affected/)
    assert.ok(said(/^MLflow run .*: 12 of 12 steps were not delivered/))
    await assertNoSecrets(env, jobId)
  })
})

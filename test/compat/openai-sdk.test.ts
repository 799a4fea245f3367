// The published `openai` npm client (v6) against a listening server, as a user would point it at
// us by changing baseURL: files, jobs, events, paginated checkpoints, and the error classes/fields.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import OpenAI, { APIError, toFile } from 'openai'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { updateJob } from '../../src/fine-tuning/jobs.store.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { startService, type Service } from '../../src/server.js'
import { expectOpenAI, expectSpec } from '../contract.js'
import { CHAT_LINE, DIALECTS, testConfig } from '../helper.js'

const MODEL = 'opentune/tiny-llama'
const asResponse = (body: unknown) => ({ statusCode: 200, json: () => body })

/** Awaits a promise that must reject with `cls`; returns the error. */
async function rejectsWith<T extends APIError> (
  promise: Promise<unknown>,
  cls: new (...args: never[]) => T
): Promise<T> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`)
    return err
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`)
}

/** A readable message is our sentence after the status, not a JSON dump of the body. */
function assertReadable (err: APIError, status: number, contains: string | RegExp, code: string, param: string | null) {
  assert.equal(err.status, status)
  assert.ok(err.message.startsWith(`${status} `), err.message)
  assert.doesNotMatch(err.message, /^\d+ [{[]/, 'message is not raw JSON')
  if (typeof contains === 'string') assert.ok(err.message.includes(contains), err.message)
  else assert.match(err.message, contains)
  assert.equal(err.code, code)
  assert.equal(err.param, param)
  assert.equal(err.type, 'invalid_request_error')
  assert.match(String(err.requestID), /^req_/)
}

for (const dialect of DIALECTS) {
  describe(`${dialect}: openai SDK v6 against a listening server`, () => {
    let service: Service
    let cleanup: () => Promise<void>
    let client: OpenAI
    let other: OpenAI
    let requests: string[] // every request `client` sent, "METHOD path"

    before(async () => {
      const made = await testConfig(dialect, { PORT: '0', OPENTUNE_RUNNER: '0' }) // the API alone: jobs stay where the test puts them
      cleanup = made.cleanup
      service = await startService(made.config)
      const db = service.ctx.db
      const { key } = await createKey(db, (await ensureProject(db, 'main')).id)
      const { key: otherKey } = await createKey(db, (await ensureProject(db, 'other')).id)
      const countingFetch: typeof fetch = async (input, init) => {
        requests.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`)
        return await fetch(input, init)
      }
      requests = []
      client = new OpenAI({ apiKey: key, baseURL: `${service.url}/v1`, fetch: countingFetch })
      other = new OpenAI({ apiKey: otherKey, baseURL: `${service.url}/v1`, maxRetries: 0 })
    })
    after(async () => {
      await service.close()
      await cleanup()
    })

    const trainingFile = async () => (await client.files.create({ file: await toFile(Buffer.from(CHAT_LINE), 'train.jsonl'), purpose: 'fine-tune' })).id

    it('uploads (toFile and a ReadStream), lists, retrieves, downloads and deletes files', async () => {
      const bytes = Buffer.from(CHAT_LINE.repeat(50) + '{"text": "héllo 👋"}\n')
      const a = await client.files.create({ file: await toFile(bytes, 'données 🚀.jsonl'), purpose: 'fine-tune' })
      expectOpenAI('OpenAIFile', a)
      assert.equal(a.filename, 'données 🚀.jsonl')
      assert.equal(a.bytes, bytes.length)
      assert.equal(a.purpose, 'fine-tune')

      const path = join(service.ctx.config.dataDir, 'from-disk.jsonl')
      await writeFile(path, CHAT_LINE)
      const b = await client.files.create({ file: createReadStream(path), purpose: 'batch' })
      assert.equal(b.filename, 'from-disk.jsonl')
      assert.equal(b.bytes, Buffer.byteLength(CHAT_LINE))

      const listed = []
      for await (const f of client.files.list()) listed.push(f.id)
      assert.deepEqual(listed.slice(0, 2), [b.id, a.id], 'newest first')
      const page = await client.files.list({ purpose: 'batch' })
      assert.deepEqual(page.data.map(f => f.id), [b.id])

      assert.deepEqual(await client.files.retrieve(a.id), a)
      const content = await client.files.content(a.id)
      assert.equal(content.status, 200)
      assert.deepEqual(Buffer.from(await content.arrayBuffer()), bytes)

      const deleted = await client.files.delete(a.id)
      expectOpenAI('DeleteFileResponse', deleted)
      assert.deepEqual(deleted, { id: a.id, object: 'file', deleted: true })
      const err = await rejectsWith(client.files.retrieve(a.id), OpenAI.NotFoundError)
      assertReadable(err, 404, `No file found with id '${a.id}'`, 'file_not_found', 'file_id')
      await rejectsWith(client.files.content(a.id), OpenAI.NotFoundError)
    })

    it('creates jobs with hyperparameters or method, lists, retrieves, cancels and lists events', async () => {
      const file = await trainingFile()
      const plain = await client.fineTuning.jobs.create({ model: MODEL, training_file: file, hyperparameters: { n_epochs: 2, batch_size: 4 }, suffix: 'sdk' })
      expectSpec('POST', '/v1/fine_tuning/jobs', asResponse(plain))
      assert.match(plain.id, /^ftjob-[0-9a-f]{32}$/)
      assert.equal(plain.status, 'validating_files')
      assert.equal(plain.hyperparameters.n_epochs, 2)
      assert.equal(plain.hyperparameters.batch_size, 4)

      const viaMethod = await client.fineTuning.jobs.create({
        model: MODEL,
        training_file: file,
        method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 5 } } },
      })
      expectSpec('POST', '/v1/fine_tuning/jobs', asResponse(viaMethod))
      assert.equal(viaMethod.hyperparameters.n_epochs, 5)
      assert.equal(viaMethod.method?.supervised?.hyperparameters?.n_epochs, 5)

      const listed = []
      for await (const job of client.fineTuning.jobs.list({ limit: 1 })) listed.push(job.id)
      assert.deepEqual(listed, [viaMethod.id, plain.id], 'newest first, across pages of one')

      const got = await client.fineTuning.jobs.retrieve(plain.id)
      expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}', asResponse(got))
      assert.deepEqual(got, plain)

      const cancelled = await client.fineTuning.jobs.cancel(plain.id)
      expectSpec('POST', '/v1/fine_tuning/jobs/{job_id}/cancel', asResponse(cancelled))
      assert.equal(cancelled.status, 'cancelled')
      assert.equal((await client.fineTuning.jobs.cancel(plain.id)).status, 'cancelled', 'cancel is idempotent')

      const events = await client.fineTuning.jobs.listEvents(plain.id, { limit: 1 })
      expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}/events', asResponse({ object: 'list', data: events.data, has_more: events.has_more }))
      assert.equal(events.data.length, 1)
      assert.equal(events.has_more, true)
      const messages = []
      for await (const e of client.fineTuning.jobs.listEvents(plain.id, { limit: 1 })) messages.push(e.message)
      assert.deepEqual(messages, [`Created fine-tuning job: ${plain.id}`, 'Fine-tuning job cancelled'], 'oldest first')
    })

    it('auto-paginates 25 checkpoints in pages of 10, oldest first, and serves one by id', async () => {
      const job = await client.fineTuning.jobs.create({ model: MODEL, training_file: await trainingFile() })
      const inserted: string[] = []
      for (let i = 1; i <= 25; i++) {
        const row = await insertCheckpoint(service.ctx.db, {
          jobId: job.id,
          stepNumber: i * 10,
          fineTunedModelCheckpoint: `ft:${MODEL}:main::${job.id}:ckpt-step-${i * 10}`,
          metrics: { step: i * 10, train_loss: 2 / i, train_mean_token_accuracy: i / 25 },
          resultFiles: [],
        })
        inserted.push(row.id)
      }
      const steps: number[] = []
      const ids: string[] = []
      for await (const c of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 10 })) {
        steps.push(c.step_number)
        ids.push(c.id)
      }
      assert.deepEqual(ids, inserted)
      assert.deepEqual(steps, Array.from({ length: 25 }, (_, i) => (i + 1) * 10))

      let page = await client.fineTuning.jobs.checkpoints.list(job.id, { limit: 10 })
      const sizes = [page.data.length]
      while (page.hasNextPage()) {
        page = await page.getNextPage()
        sizes.push(page.data.length)
      }
      assert.deepEqual(sizes, [10, 10, 5])

      const cid = inserted[6]
      const one = await client.get(`/fine_tuning/jobs/${job.id}/checkpoints/${cid}`)
      expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}', asResponse(one), { seed: true })
      expectSpec('GET', '/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}', asResponse(one))
      assert.equal((one as { step_number: number }).step_number, 70)
      assert.deepEqual((one as { metrics: unknown }).metrics, {
        step: 70,
        train_loss: 2 / 7,
        train_mean_token_accuracy: 7 / 25,
        valid_loss: null,
        valid_mean_token_accuracy: null,
        full_valid_loss: null,
        full_valid_mean_token_accuracy: null,
      })

      const otherJob = await client.fineTuning.jobs.create({ model: MODEL, training_file: await trainingFile() })
      const wrongJob = await rejectsWith(client.get(`/fine_tuning/jobs/${otherJob.id}/checkpoints/${cid}`), OpenAI.NotFoundError)
      assertReadable(wrongJob, 404, `No checkpoint found with id '${cid}'`, 'checkpoint_not_found', 'checkpoint_id')
      const notYours = await rejectsWith(other.get(`/fine_tuning/jobs/${job.id}/checkpoints/${cid}`), OpenAI.NotFoundError)
      assertReadable(notYours, 404, `No fine-tuning job found with id '${job.id}'`, 'job_not_found', 'job_id')
      await rejectsWith(other.fineTuning.jobs.checkpoints.list(job.id), OpenAI.NotFoundError)
    })

    it('raises the SDK error class for each failure, with our message, code and param', async () => {
      const file = await trainingFile()
      const badKey = new OpenAI({ apiKey: 'sk-not-a-real-key-at-all', baseURL: `${service.url}/v1`, maxRetries: 0 })
      assertReadable(await rejectsWith(badKey.files.list(), OpenAI.AuthenticationError), 401, 'Incorrect or revoked API key', 'invalid_api_key', null)

      assertReadable(await rejectsWith(client.fineTuning.jobs.retrieve('ftjob-nope'), OpenAI.NotFoundError),
        404, "No fine-tuning job found with id 'ftjob-nope'", 'job_not_found', 'job_id')

      const tooMany = client.fineTuning.jobs.create({
        model: MODEL,
        training_file: file,
        hyperparameters: { n_epochs: 0 },
      })
      assertReadable(await rejectsWith(tooMany, OpenAI.UnprocessableEntityError),
        422, /body\.hyperparameters\.n_epochs: Input should be greater than or equal to 1/, 'validation_error', 'hyperparameters.n_epochs')

      const noFile = client.fineTuning.jobs.create({ model: MODEL, training_file: 'file-missing' })
      assertReadable(await rejectsWith(noFile, OpenAI.BadRequestError), 400, "training_file 'file-missing' does not exist", 'file_not_found', 'training_file')
      const noModel = client.fineTuning.jobs.create({ model: 'acme/giant-9000', training_file: file })
      assertReadable(await rejectsWith(noModel, OpenAI.BadRequestError), 400, "Model 'acme/giant-9000' is not available", 'model_not_available', 'model')

      // 409s state a fact about the job, not a lock: the SDK (which retries 409 by default) must
      // get it once, at once, not after two back-offs.
      const done = await client.fineTuning.jobs.create({ model: MODEL, training_file: file })
      await updateJob(service.ctx.db, done.id, { status: 'succeeded', finished_at: Math.floor(Date.now() / 1000) })
      requests = []
      const conflict = await rejectsWith(client.fineTuning.jobs.cancel(done.id), OpenAI.ConflictError)
      assertReadable(conflict, 409, `Fine-tuning job '${done.id}' has already succeeded`, 'job_not_cancellable', 'job_id')
      assert.deepEqual(requests, [`POST /v1/fine_tuning/jobs/${done.id}/cancel`], 'sent once, not retried')

      const running = await client.fineTuning.jobs.create({ model: MODEL, training_file: file })
      await updateJob(service.ctx.db, running.id, { status: 'running' })
      requests = []
      const inUse = await rejectsWith(client.files.delete(file), OpenAI.ConflictError)
      assertReadable(inUse, 409, `used by fine-tuning job '${running.id}'`, 'file_in_use', 'file_id')
      assert.equal(requests.length, 1, 'sent once, not retried')
      assert.equal((await client.files.retrieve(file)).id, file, 'the file is still there')
    })
  })
}

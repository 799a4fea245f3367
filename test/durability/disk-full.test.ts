// Class 4 (issue 10): a full disk. The data directory is a small tmpfs this test mounts (root
// only; skipped with a message elsewhere) and fills. Before: an upload answered 500 (and the openai
// SDK resent it), a DELETE meant to free space answered 500 too, and a job whose trainer filled the
// disk stayed `running` with `error: null` while the runner logged a stack every 0.5 s.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import pino from 'pino'
import { Runner } from '../../src/runner/runner.js'
import { createJob, DIALECTS, makeTestEnv, multipartBody, uploadFile, type TestEnv } from '../helper.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')
const TRAIN = readFileSync(join(import.meta.dirname, '..', '..', 'examples', 'data', 'train.jsonl'), 'utf8')
const DISK_MB = 24

/** A tmpfs of DISK_MB at a new folder, or why there cannot be one here. */
function mountSmallDisk (): { dir: string, unmount: () => void } | string {
  const dir = mkdtempSync(join(tmpdir(), 'opentune-small-disk-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${DISK_MB}m`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    return `cannot mount a tmpfs here (${String((err as Error).message).split('\n')[0]}); run as root`
  }
  return {
    dir,
    unmount: () => {
      execFileSync('umount', ['-l', dir])
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Writes `path` until the disk is full; returns how many bytes it took. */
function fill (path: string): number {
  const fd = openSync(path, 'a')
  const chunk = Buffer.alloc(64 * 1024, 1)
  let bytes = 0
  try {
    for (;;) bytes += writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
  return bytes
}

/** A logger whose lines are counted (and kept), as an operator's log would be read. */
function countingLog () {
  const lines: Array<{ level: number, msg: string, time: number, err?: unknown }> = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString())); done() },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

/** A two-epoch job, then (after `beforeRunner`) a runner on the fake trainer whose log lines are counted. */
async function jobWithCountedRunner (env: TestEnv, beforeRunner = () => {}) {
  const training = await uploadFile(env, { content: TRAIN })
  const res = await createJob(env, { training_file: training, hyperparameters: { lora: true, n_epochs: 2 } })
  assert.equal(res.statusCode, 200, res.body)
  beforeRunner()
  const { log, lines } = countingLog()
  const command = [process.execPath, join(FIXTURES, 'fake-trainer.mjs')]
  const runner = new Runner(env.ctx, { log, pollMs: 500, trainerCommand: command, stopGraceMs: 3000 })
  return { res, runner, lines }
}

const small = mountSmallDisk()

for (const dialect of DIALECTS) {
  describe(`class 4: a full disk (${dialect})`, { skip: typeof small === 'string' ? small : false }, () => {
    if (typeof small === 'string') return
    let env: TestEnv
    const dataDir = join(small.dir, dialect)
    const filler = join(dataDir, 'filler')
    before(async () => {
      mkdirSync(dataDir)
      env = await makeTestEnv(dialect, { OPENTUNE_DATA_DIR: dataDir, FAKE_TRAINER_MODE: 'fill' })
    })
    after(async () => {
      await env.close()
      rmSync(dataDir, { recursive: true, force: true })
    })

    it('class 4: an upload answers 507 storage full, no retry hint; a DELETE frees space; uploads resume', async (t) => {
      const kept = await uploadFile(env, { content: TRAIN })
      t.diagnostic(`filled the disk with ${(fill(filler) / 2 ** 20).toFixed(1)} MiB`)
      try {
        const upload = multipartBody({ purpose: 'fine-tune' }, { name: 'big.jsonl', content: TRAIN.repeat(20) })
        const headers = { ...upload.headers, ...env.auth() }
        const res = await env.app.inject({ method: 'POST', url: '/v1/files', payload: upload.payload, headers })
        t.diagnostic(`upload on a full disk: ${res.statusCode} ${res.body}`)
        assert.equal(res.statusCode, 507)
        assert.equal(res.json().error.code, 'storage_full')
        assert.match(res.json().error.message, /^Storage full/)
        assert.equal(res.headers['x-should-retry'], 'false', 'the openai SDK must not resend the upload')
        assert.equal(res.headers['retry-after'], undefined)
        const del = await env.app.inject({ method: 'DELETE', url: `/v1/files/${kept}`, headers: env.auth() })
        t.diagnostic(`delete on a full disk: ${del.statusCode} ${del.body}`)
        assert.equal(del.statusCode, 200, del.body)
        const gone = await env.app.inject({ url: `/v1/files/${kept}`, headers: env.auth() })
        assert.equal(gone.statusCode, 404)
      } finally {
        rmSync(filler, { force: true })
      }
      const again = await uploadFile(env, { content: TRAIN })
      assert.match(again, /^file-/, 'uploads work again once there is space')
    })

    it('class 4: a trainer that fills the disk fails its job naming the disk; the runner log is quiet', async (t) => {
      const { res, runner, lines } = await jobWithCountedRunner(env)
      const t0 = Date.now()
      runner.start()
      let job
      try {
        for (;;) {
          job = (await env.app.inject({ url: `/v1/fine_tuning/jobs/${res.json().id}`, headers: env.auth() })).json()
          if (job.status === 'failed' || job.status === 'succeeded' || Date.now() - t0 > 60_000) break
          await new Promise(resolve => setTimeout(resolve, 200))
        }
        // the runner goes on polling with the disk as the trainer left it, or as full as before
        await new Promise(resolve => setTimeout(resolve, 10_000))
      } finally {
        await runner.stop()
      }
      const minutes = (Date.now() - t0) / 60_000
      t.diagnostic(`job ${job.status}: ${JSON.stringify(job.error)}`)
      const rate = (lines.length / minutes).toFixed(0)
      t.diagnostic(`runner log: ${lines.length} lines in ${(minutes * 60).toFixed(1)} s = ${rate}/min`)
      for (const l of lines.slice(0, 12)) t.diagnostic(`  ${l.level} ${l.msg}`)
      assert.equal(job.status, 'failed')
      assert.equal(job.error.code, 'storage_full')
      assert.ok(job.error.message.includes(`disk of the data directory (${dataDir}) is full`), job.error.message)
      assert.ok(lines.length / minutes < 30, `at most a few runner log lines a minute, got ${lines.length}`)
      // space is back (the job's folder went with its failure): the next upload is stored
      assert.match(await uploadFile(env, { content: TRAIN }), /^file-/)
    })

    it('class 4: a disk full from outside: the runner backs off, and the job ends once space returns', async (t) => {
      const { res, runner, lines } = await jobWithCountedRunner(env, () => fill(filler))
      const t0 = Date.now()
      runner.start()
      let job
      try {
        await new Promise(resolve => setTimeout(resolve, 20_000))
        const minutes = (Date.now() - t0) / 60_000
        const full = lines.length
        t.diagnostic(`runner log while full: ${full} lines in 20 s = ${(full / minutes).toFixed(0)}/min`)
        for (const l of lines.slice(0, 8)) t.diagnostic(`  ${l.level} ${l.msg}`)
        assert.ok(full / minutes < 30, `at most a few runner log lines a minute, got ${full}`)
        rmSync(filler, { force: true })
        const url = `/v1/fine_tuning/jobs/${res.json().id}`
        for (const until = Date.now() + 90_000; Date.now() < until;) {
          job = (await env.app.inject({ url, headers: env.auth() })).json()
          if (job.status === 'failed' || job.status === 'succeeded') break
          await new Promise(resolve => setTimeout(resolve, 250))
        }
      } finally {
        rmSync(filler, { force: true })
        await runner.stop()
      }
      t.diagnostic(`job ${job.status} ${((Date.now() - t0) / 1000).toFixed(0)} s in: ${JSON.stringify(job.error)}`)
      // the fake trainer (mode fill) then fills the disk itself: the job ends storage_full, not stuck
      assert.equal(job.status, 'failed')
      assert.equal(job.error.code, 'storage_full')
    })
  })
}

after(() => { if (typeof small !== 'string') small.unmount() })

// What the runner tests of interrupted attempts share: a runner on the scripted fake trainer
// (test/fixtures/fake-trainer.mjs), jobs on the example data, and a look at the trainer process.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Runner } from '../../src/runner/runner.js'
import { createJob, uploadFile, type TestEnv } from '../helper.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures')
const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples', 'data')
const TRAIN = readFileSync(join(EXAMPLES, 'train.jsonl'), 'utf8')
export const JOBS = '/v1/fine_tuning/jobs'

export function makeRunner (env: TestEnv): Runner {
  const trainerCommand = [process.execPath, join(FIXTURES, 'fake-trainer.mjs')]
  return new Runner(env.ctx, { log: env.app.log, pollMs: 50, trainerCommand, stopGraceMs: 3000 })
}

/** A job on the example training file, without a validation file. */
export async function newJob (env: TestEnv, body: Record<string, unknown> = {}): Promise<string> {
  const training = await uploadFile(env, { content: TRAIN })
  const res = await createJob(env, { training_file: training, ...body })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().id as string
}

export const get = async (env: TestEnv, url: string) => (await env.app.inject({ url, headers: env.auth() })).json()

/** Every event of a job, oldest first, page after page (a long or slow run may have more than 100). */
export async function allEvents (
  env: TestEnv,
  jobId: string
): Promise<Array<{ id: string, type: string, message: string, data: any }>> {
  const events = []
  for (let after = ''; ;) {
    const page = await get(env, `${JOBS}/${jobId}/events?limit=100${after ? `&after=${after}` : ''}`)
    events.push(...page.data)
    if (!page.has_more) return events
    after = page.data.at(-1).id
  }
}

/** Every event message of a job, oldest first. */
export async function eventMessages (env: TestEnv, jobId: string): Promise<string[]> {
  return (await allEvents(env, jobId)).map(e => e.message)
}

// Generous limits: a condition that holds is seen at once; the limit only bounds a broken run.
export async function waitFor<T> (what: string, fn: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** The pid of the job's latest fake trainer (each run writes it at start), once one has started. */
export function trainerPid (env: TestEnv, jobId: string): number | undefined {
  const path = join(env.config.dataDir, 'jobs', jobId, 'out', 'trainer.pid')
  return existsSync(path) ? Number(readFileSync(path, 'utf8')) : undefined
}

/** A process's state letter from /proc (R, S, T: stopped, Z: exited, not yet reaped), or null when gone. */
export function processState (pid: number): string | null {
  try {
    return /\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? null
  } catch {
    return null
  }
}

export const isGone = (pid: number) => [null, 'Z', 'X'].includes(processState(pid))

/** A fake trainer's gate (FAKE_TRAINER_GATE): it waits there until the test opens it. */
export function newGate () {
  const path = join(tmpdir(), `opentune-gate-${randomBytes(6).toString('hex')}`)
  return { path, open: () => { writeFileSync(path, '') }, remove: () => { rmSync(path, { force: true }) } }
}

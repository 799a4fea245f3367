// The delivery queue (src/trackers/delivery.ts) with a scripted tracker: retries pass a failing
// moment, a refused batch is given up at once and later steps still go out, a full queue drops its
// oldest steps and says how many, the flush time bounds a request that never comes back, and no
// event carries a secret.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import pino from 'pino'
import { Delivery } from '../../src/trackers/delivery.js'
import { TrackerError } from '../../src/trackers/http.js'
import type { StepPoint, Tracker } from '../../src/trackers/tracker.js'

const SECRET = 'sk-very-secret-key'
const point = (step: number): StepPoint => ({ step, timestampMs: Date.now(), values: { train_loss: 1 / step } })

function scripted (send: (points: StepPoint[], signal: AbortSignal) => Promise<void>) {
  const sent: number[] = []
  const finished: string[] = []
  const tracker: Tracker = {
    kind: 'wandb',
    label: 'W&B run e/p/r',
    maxBatch: 4,
    secrets: [SECRET],
    async open (state) { state.runId = 'r' },
    async send (points, state, signal) {
      await send(points, signal)
      sent.push(...points.map(p => p.step))
      state.lastStep = points.at(-1)?.step ?? state.lastStep
    },
    async finish (status) { finished.push(status) },
    close () {},
  }
  return { tracker, sent, finished }
}

function delivery (tracker: Tracker, capacity = 100) {
  const events: Array<{ level: string, message: string }> = []
  const d = new Delivery(tracker, {
    attempts: 3,
    backoffMs: 1,
    capacity,
    load: async () => null,
    stored: async () => [],
    save: async () => {},
    event: async (level, message) => { events.push({ level, message }) },
    log: pino({ level: 'silent' }),
  })
  return { d, events }
}

const never = new AbortController().signal

describe('tracker delivery', () => {
  it('retries a failing moment: every step arrives once, in order, and the run is finished', async () => {
    let calls = 0
    const t = scripted(async () => { if (++calls <= 2) throw new TrackerError('HTTP 503', true) })
    const { d, events } = delivery(t.tracker)
    for (let s = 1; s <= 10; s++) d.push(point(s))
    await d.close('succeeded', 10_000, never)
    assert.deepEqual(t.sent, Array.from({ length: 10 }, (_v, i) => i + 1))
    assert.deepEqual(t.finished, ['succeeded'])
    assert.deepEqual(events.map(e => e.level), ['info', 'info'], JSON.stringify(events))
    assert.match(events.at(-1)?.message ?? '', /finished \(succeeded\), 10 steps logged/)
  })

  it('gives up a refused batch at once (a 4xx is not retried), says so once, and sends the later steps', async () => {
    let calls = 0
    const t = scripted(async (points) => {
      calls++
      if (points[0]?.step === 1) throw new TrackerError(`HTTP 400: bad key ${SECRET}`, false)
    })
    const { d, events } = delivery(t.tracker)
    for (let s = 1; s <= 4; s++) d.push(point(s)) // one batch of 4 (maxBatch), refused
    for (let s = 5; s <= 6; s++) d.push(point(s))
    await d.close('failed', 10_000, never)
    assert.equal(calls, 2)
    assert.deepEqual(t.sent, [5, 6])
    const warns = events.filter(e => e.level === 'warn').map(e => e.message)
    assert.equal(warns.length, 2, JSON.stringify(events))
    assert.match(warns[0] ?? '', /gave up sending steps 1–4 \(HTTP 400: bad key \*\*\*\)/)
    assert.match(warns[1] ?? '', /4 of 6 steps were not delivered/)
    assert.ok(events.every(e => !e.message.includes(SECRET)))
    assert.deepEqual(t.finished, ['failed'])
  })

  it('keeps at most `capacity` steps while the tracker is slow, dropping the oldest, and counts them', async () => {
    let release: () => void = () => {}
    let arrived: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    const out = new Promise<void>(resolve => { arrived = resolve })
    const t = scripted(async (points) => {
      if (points[0]?.step !== 1) return
      arrived()
      await gate
    })
    const { d, events } = delivery(t.tracker, 5)
    d.push(point(1))
    await out // step 1 is out, and held there
    for (let s = 2; s <= 20; s++) d.push(point(s)) // 19 steps into a queue of 5
    release()
    await d.close('succeeded', 10_000, never)
    assert.deepEqual(t.sent, [1, 16, 17, 18, 19, 20])
    assert.match(events.find(e => e.level === 'warn')?.message ?? '', /14 of 20 steps were not delivered, 14 of them dropped from a full queue/)
  })

  it('a request that never comes back holds the end for the flush time only, then is abandoned', async () => {
    let aborted = false
    const t = scripted(async (_points, signal) => {
      await new Promise<void>((_resolve, reject) => signal.addEventListener('abort', () => {
        aborted = true
        reject(new TrackerError('abandoned unanswered', false))
      }))
    })
    const { d, events } = delivery(t.tracker)
    for (let s = 1; s <= 3; s++) d.push(point(s))
    await d.close('succeeded', 50, never)
    assert.ok(aborted)
    const messages = events.map(e => e.message).join('\n')
    assert.match(messages, /gave up sending steps 1–3 \(the job ended and the 0.05 s left to send the rest ran out; a request was still unanswered\)/)
    assert.match(messages, /3 of 3 steps were not delivered/)
    assert.match(messages, /could not mark the run succeeded/)
  })

  it('a run that cannot be opened says so once (error) and takes no more steps', async () => {
    const t = scripted(async () => {})
    t.tracker.open = async () => { throw new TrackerError('HTTP 500', true) }
    const { d, events } = delivery(t.tracker)
    for (let s = 1; s <= 4; s++) d.push(point(s))
    await d.close('succeeded', 10_000, never)
    assert.deepEqual(t.sent, [])
    assert.deepEqual(events.map(e => e.level), ['error', 'warn'], JSON.stringify(events))
    assert.match(events[0]?.message ?? '', /could not create the run \(HTTP 500; 3 attempts\)/)
    assert.match(events[1]?.message ?? '', /4 of 4 steps were not delivered/)
  })
})

// Issue 10, class 3: how long a trainer may stay silent before the runner kills it as hung, on a
// mocked clock (no timing luck): the configured floor, or 4 × the slowest step or gap between
// lines seen so far, whichever is longer.
import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it, mock } from 'node:test'
import { SILENCE_STEP_FACTOR, watchSilence } from '../../src/runner/trainer-silence.js'

const metrics = (stepTimeS: number) => ({
  type: 'metrics' as const,
  step: 1,
  total_steps: 9,
  train_loss: 1,
  train_mean_token_accuracy: 0.5,
  step_time_s: stepTimeS,
})

describe('the silence limit of a trainer', () => {
  beforeEach(() => { mock.timers.enable({ apis: ['setInterval', 'Date'] }) })
  afterEach(() => { mock.timers.reset() })

  it('class 3: fires once, just after the floor, when no line comes', () => {
    const fired: number[] = []
    const watch = watchSilence(2000, ms => fired.push(ms))
    mock.timers.tick(2000)
    assert.deepEqual(fired, [])
    mock.timers.tick(1000)
    assert.equal(fired.length, 1)
    assert.ok(fired[0]! > 2000 && fired[0]! <= 3000)
    assert.equal(watch.firedAfterMs, fired[0])
    mock.timers.tick(10_000)
    assert.equal(fired.length, 1, 'once')
  })

  it('class 3: every line, heartbeats included, starts the silence again', () => {
    const fired: number[] = []
    const watch = watchSilence(2000, ms => fired.push(ms))
    for (let i = 0; i < 20; i++) {
      mock.timers.tick(400)
      watch.heard({ type: 'heartbeat', phase: 'loading' })
    }
    assert.deepEqual(fired, [])
    watch.stop()
  })

  it('class 3: a slow step stretches the limit to 4 × its time (minute-long steps are not cut off)', () => {
    assert.equal(SILENCE_STEP_FACTOR, 4)
    const fired: number[] = []
    const watch = watchSilence(2000, ms => fired.push(ms))
    watch.heard(metrics(10)) // a 10 s step: 40 s of silence allowed from now on
    mock.timers.tick(39_000)
    assert.deepEqual(fired, [])
    mock.timers.tick(2000)
    assert.equal(fired.length, 1)
  })

  it('class 3: so does a long gap between lines (a phase without heartbeats)', () => {
    const fired: number[] = []
    const watch = watchSilence(2000, ms => fired.push(ms))
    mock.timers.tick(1500)
    watch.heard({ type: 'started', total_steps: 9, steps_per_epoch: 3, start_step: 0 }) // 1.5 s gap: limit 6 s
    mock.timers.tick(5500)
    assert.deepEqual(fired, [])
    mock.timers.tick(1500)
    assert.equal(fired.length, 1)
    watch.stop()
  })
})

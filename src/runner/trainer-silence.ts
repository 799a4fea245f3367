// A trainer that prints nothing for too long is hung (SIGSTOP, a deadlock, a dead device): it
// would hold its job and the training slot forever. "Too long" is the configured floor, or a
// multiple of the slowest step or gap between lines seen so far, whichever is longer, so a model
// whose steps take minutes is not killed mid-step. Long phases without steps (loading, the first
// step's compile, validation, checkpoint and state writes) print `heartbeat` lines
// (docs/trainer-protocol.md §4), which count as lines like any other.
import type { TrainerLine } from './protocol.js'

/** How many times the slowest step (or gap between lines) a trainer may stay silent. */
export const SILENCE_STEP_FACTOR = 4

export interface SilenceWatch {
  /** Call for every protocol line the trainer prints. */
  heard: (line: TrainerLine) => void
  /** The silence that counted as a hang, in ms; null until one did. */
  readonly firedAfterMs: number | null
  stop: () => void
}

/** Watches a trainer's lines from now on; `onSilent` is called once, after too long a silence. */
export function watchSilence (floorMs: number, onSilent: (silentMs: number) => void): SilenceWatch {
  let last = Date.now()
  let slowest = 0 // ms: the longest gap between lines, or step, seen so far
  let firedAfterMs: number | null = null
  const limit = () => Math.max(floorMs, SILENCE_STEP_FACTOR * slowest)
  // Checked a few times per floor: the hang is seen within a fraction of the limit of its start.
  const timer = setInterval(() => {
    const silent = Date.now() - last
    if (firedAfterMs !== null || silent <= limit()) return
    firedAfterMs = silent
    clearInterval(timer)
    onSilent(silent)
  }, Math.min(1000, Math.max(50, floorMs / 5)))
  timer.unref()
  return {
    heard (line) {
      const now = Date.now()
      slowest = Math.max(slowest, now - last, line.type === 'metrics' ? (line.step_time_s ?? 0) * 1000 : 0)
      last = now
    },
    get firedAfterMs () { return firedAfterMs },
    stop: () => { clearInterval(timer) },
  }
}

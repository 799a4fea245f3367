// What a tracker (a W&B or MLflow run) is to the delivery queue: open the run (or find the one an
// earlier attempt opened), send a batch of steps, finish with the job's outcome. Each call is one
// try: delivery.ts retries, times out and gives up; a tracker only says whether a failure may pass.
import type { RunState } from './tracker-runs.store.js'

/** One optimizer step as a tracker gets it: the trainer's metrics, and a checkpoint's validation ones. */
export interface StepPoint {
  step: number
  timestampMs: number // when the runner read the step
  values: Record<string, number> // finite numbers only: a diverged step's null loss is left out
}

export type FinalStatus = 'succeeded' | 'failed' | 'cancelled'

export interface Tracker {
  readonly kind: 'wandb' | 'mlflow'
  /** For events and logs: the service and the run, never a secret. Set once the run is open. */
  label: string
  /** Steps per request: W&B's file_stream takes many lines, MLflow's log-batch 1000 metrics. */
  readonly maxBatch: number
  /** Strings that must never appear in an event or a log line (keys, passwords). */
  readonly secrets: readonly string[]
  /** Creates the run, or continues the one `state` names; sets state.runId. */
  open: (state: RunState, signal: AbortSignal) => Promise<void>
  /** Sends the steps; on success advances state (lastStep, lines). */
  send: (points: StepPoint[], state: RunState, signal: AbortSignal) => Promise<void>
  finish: (status: FinalStatus, state: RunState, signal: AbortSignal) => Promise<void>
  close: () => void
}

// The trainer's stdout lines (docs/trainer-protocol.md §4), parsed defensively: a line that is not
// one of these is logged and ignored, never trusted.
import type { Metrics } from '../fine-tuning/jobs.schemas.js'

export type TrainerLine =
  | { type: 'started', total_steps: number, steps_per_epoch: number, start_step: number, device?: string, dtype?: string }
  | { type: 'metrics', step: number, total_steps: number, epoch?: number, train_loss: number | null, train_mean_token_accuracy: number | null, learning_rate?: number, tokens?: number, loss_tokens?: number, grad_norm?: number | null, step_time_s?: number }
  | { type: 'checkpoint', step: number, epoch?: number, dir: string, files: string[], metrics: Partial<Metrics> }
  | { type: 'state_saved', step: number, dir: string }
  | { type: 'log', level: 'info' | 'warn' | 'error', message: string }
  | { type: 'error', code: string, message: string, param?: string | null }
  | { type: 'finished', step: number, status: 'succeeded' | 'stopped' }
  // alive, in a long phase without steps (loading, compiling, validating, writing): trainer-silence.ts
  | { type: 'heartbeat', phase?: string }

const REQUIRED: Record<TrainerLine['type'], Record<string, 'number' | 'string' | 'object'>> = {
  started: { total_steps: 'number', start_step: 'number' },
  metrics: { step: 'number', total_steps: 'number' },
  checkpoint: { step: 'number', dir: 'string', files: 'object', metrics: 'object' },
  state_saved: { step: 'number' },
  log: { message: 'string' },
  error: { code: 'string', message: 'string' },
  finished: { step: 'number', status: 'string' },
  heartbeat: {},
}

// what a metrics line may say beyond these is the method's own (a drafter's train_acceptance_rate_1)
const METRICS_LINE_KEYS = new Set(['type', 'step', 'total_steps', 'epoch', 'train_loss', 'train_mean_token_accuracy',
  'learning_rate', 'tokens', 'loss_tokens', 'grad_norm', 'step_time_s'])

/** A metrics line's other keys with finite numbers, which are stored and shown as reported. */
export function extraStepMetrics (line: Extract<TrainerLine, { type: 'metrics' }>): Record<string, number> {
  return Object.fromEntries(Object.entries(line).filter(([k, v]) =>
    !METRICS_LINE_KEYS.has(k) && typeof v === 'number' && Number.isFinite(v)) as Array<[string, number]>)
}

export function parseTrainerLine (line: string): TrainerLine | null {
  let value: unknown
  try { value = JSON.parse(line) } catch { return null }
  if (value === null || typeof value !== 'object') return null
  const obj = value as Record<string, unknown>
  const fields = REQUIRED[obj.type as TrainerLine['type']]
  if (!fields) return null
  // eslint-disable-next-line valid-typeof -- t is one of the typeof names listed in REQUIRED
  for (const [k, t] of Object.entries(fields)) if (typeof obj[k] !== t || obj[k] === null) return null
  return obj as TrainerLine
}

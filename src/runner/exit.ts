// How a trainer exit becomes a job outcome: the job's fault (exit 2, with the trainer's own error
// line), a missing runtime (no python, no torch), memory, or our fault. Users get an actionable message.
import type { JobError } from '../fine-tuning/jobs.schemas.js'
import type { TrainerLine } from './protocol.js'
import type { TrainerExit } from './trainer-process.js'

export type Outcome = { ok: true } | { ok: false, error: JobError }

export function classifyExit (exit: TrainerExit, errorLine: Extract<TrainerLine, { type: 'error' }> | null, python: string): Outcome {
  if (exit.code === 0) return { ok: true }
  if (exit.spawnError) {
    return fail('trainer_unavailable', `The trainer could not be started with ${python} (${exit.spawnError.message}). Run "npm run setup" (Debian: python3-torch) or set OPENTUNE_PYTHON to a Python 3 with PyTorch.`)
  }
  if (/No module named '?torch'?/.test(exit.stderrTail)) {
    return fail('trainer_unavailable', `PyTorch is not installed for ${python}. Run "npm run setup" (Debian: python3-torch libopenblas0-pthread) or set OPENTUNE_PYTHON to a Python 3 with PyTorch.`)
  }
  if (errorLine) return { ok: false, error: { code: errorLine.code, message: errorLine.message, param: errorLine.param ?? null } }
  if (exit.signal === 'SIGKILL') {
    return fail('out_of_memory', 'The trainer was killed by the operating system (SIGKILL), most likely for running out of memory. Try a smaller batch_size or context_length, or LoRA.')
  }
  const last = exit.stderrTail.split('\n').filter(Boolean).at(-1) ?? ''
  return fail('internal_error', `The trainer stopped unexpectedly (${exit.signal ?? `exit code ${exit.code}`})${last ? `: ${last.slice(0, 500)}` : ''}. This is a bug in opentune; the service log has details.`)
}

function fail (code: string, message: string): Outcome {
  return { ok: false, error: { code, message, param: null } }
}

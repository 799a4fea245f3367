// How a trainer exit becomes a job outcome: the job's fault (exit 2, with the trainer's own error
// line), a missing runtime (no python, no torch), memory, a kill from outside, a full disk, or our
// fault. Users get an actionable message that names the cause that is known, and only that one.
import type { JobError } from '../fine-tuning/jobs.schemas.js'
import type { TrainerLine } from './protocol.js'
import type { TrainerExit } from './trainer-process.js'

type ErrorLine = Extract<TrainerLine, { type: 'error' }>

export type Outcome = { ok: true } | { ok: false, error: JobError }

/** What the runner knows about the attempt besides the exit itself. */
export interface ExitFacts {
  /** The kernel's OOM killer struck while the trainer ran (oom-kills.ts); null: this machine does not say. */
  oomKilled: boolean | null
  /** The job trains a LoRA adapter (then "try LoRA" is no advice). */
  lora: boolean
  /** Whether the disk of the data directory was (nearly) full as the trainer ended (storage-full.ts). */
  diskFull?: boolean
  dataDir?: string
}

// Signals a process gets from someone else (a person, a supervisor, a container stop); the
// others (SIGABRT, SIGSEGV, SIGBUS, …) are the trainer crashing by itself.
const OUTSIDE_SIGNALS = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'])
const STOPPED_BY_SIGTERM = 3 // the trainer's exit code after saving its state on SIGTERM

export function classifyExit (
  exit: TrainerExit,
  errorLine: Extract<TrainerLine, { type: 'error' }> | null,
  python: string,
  facts: ExitFacts = { oomKilled: null, lora: false }
): Outcome {
  if (exit.code === 0) return { ok: true }
  if (exit.spawnError) {
    return fail('trainer_unavailable', `The trainer could not be started with ${python} (${exit.spawnError.message}). Run "npm run setup" (Debian: python3-torch) or set OPENTUNE_PYTHON to a Python 3 with PyTorch.`)
  }
  if (/No module named '?torch'?/.test(exit.stderrTail)) {
    return fail('trainer_unavailable', `PyTorch is not installed for ${python}. Run "npm run setup" (Debian: python3-torch libopenblas0-pthread) or set OPENTUNE_PYTHON to a Python 3 with PyTorch.`)
  }
  const full = storageFullOutcome(exit, errorLine, facts)
  if (full) return full
  if (errorLine) {
    return { ok: false, error: { code: errorLine.code, message: errorLine.message, param: errorLine.param ?? null } }
  }
  const killed = killedOutcome(exit, facts)
  if (killed) return killed
  const last = exit.stderrTail.split('\n').filter(Boolean).at(-1) ?? ''
  return fail('internal_error', `The trainer stopped unexpectedly (${exit.signal ?? `exit code ${exit.code}`})${last ? `: ${last.slice(0, 500)}` : ''}. This is a bug in opentune; the service log has details.`)
}

/**
 * The disk filled up: said by the trainer (its storage_full line), or seen by us (its stderr, or the
 * disk still full as it died, e.g. torch.save's SIGABRT on ENOSPC). Not the job's settings; not a bug.
 */
function storageFullOutcome (exit: TrainerExit, errorLine: ErrorLine | null, facts: ExitFacts): Outcome | null {
  const said = errorLine?.code === 'storage_full' || /No space left on device|Disk quota exceeded/.test(exit.stderrTail)
  if (!said && (errorLine || !facts.diskFull)) return null
  const detail = errorLine?.code === 'storage_full' ? ` (${errorLine.message})` : ''
  const where = facts.dataDir ? ` (${facts.dataDir})` : ''
  return fail('storage_full', `The disk of the data directory${where} is full: the trainer could not write its ` +
    `checkpoints or state${detail}. Free space there (DELETE /v1/files/{file_id} of files no longer needed), ` +
    'then create the job again, or continue from its last checkpoint.')
}

/** A trainer that did not end by itself: by the OOM killer, or by a signal from outside the service. */
function killedOutcome (exit: TrainerExit, facts: ExitFacts): Outcome | null {
  const smaller = `Try a smaller batch_size or context_length${facts.lora ? '' : ', or LoRA'}.`
  if (exit.signal === 'SIGKILL' && facts.oomKilled === true) {
    return fail('out_of_memory', `The trainer was killed by the kernel's out-of-memory killer. ${smaller}`)
  }
  if (exit.signal === 'SIGKILL' && facts.oomKilled === null) {
    return fail('trainer_killed', 'The trainer was killed by SIGKILL: by the kernel\'s out-of-memory killer or ' +
      `from outside the service; this machine does not say which (no cgroup OOM counter). If it was memory: ${smaller}`)
  }
  const signal = exit.signal ?? (exit.code === STOPPED_BY_SIGTERM ? 'SIGTERM' : null)
  if (signal === null || !OUTSIDE_SIGNALS.has(signal)) return null
  const saved = exit.code === STOPPED_BY_SIGTERM ? ' (it saved its state first)' : ''
  return fail('trainer_killed', `The trainer was killed by ${signal} from outside the service${saved}, not by the ` +
    'out-of-memory killer and not for anything in the job. Create the job again, or continue from its last checkpoint.')
}

function fail (code: string, message: string): Outcome {
  return { ok: false, error: { code, message, param: null } }
}

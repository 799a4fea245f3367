// Slurm job states as ours (docs/slurm.md): waiting keeps the job `queued`, alive follows it, and an
// ended state becomes the attempt's end: an exit code for classifyExit (exit.ts) like a child
// process's, or the scheduler's own verdict (a time limit, a node failure, a preemption).
import type { JobError } from '../../fine-tuning/jobs.schemas.js'
import type { AttemptEnd } from '../executor.js'
import type { SlurmJobState } from './commands.js'

export type Phase = 'waiting' | 'alive' | 'ended'

const WAITING = new Set(['PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'SUSPENDED', 'RESV_DEL_HOLD'])
// the batch script still runs, or Slurm is still ending it: its last lines may not be written yet
const ALIVE = new Set(['RUNNING', 'CONFIGURING', 'COMPLETING', 'SIGNALING', 'STAGE_OUT', 'RESIZING', 'STOPPED'])

/** The batch script's exit when it finds the job's spec unreadable (batch-script.ts). */
export const SPEC_UNREADABLE_EXIT = 97

export function phaseOf (state: string): Phase {
  if (WAITING.has(state)) return 'waiting'
  return ALIVE.has(state) ? 'alive' : 'ended'
}

export interface EndFacts {
  slurmId: string
  cancelledByUs: boolean // our scancel (the user's cancel, a hung trainer)
  timeLimit: string | null
  dataDir: string
  stderrTail: string
}

/** How an ended (or forgotten: null) Slurm job ends the attempt. */
export function attemptEnd (s: SlurmJobState | null, f: EndFacts): AttemptEnd {
  const exit = {
    code: s?.exitCode ?? null,
    signal: s?.signal ?? null,
    spawnError: null,
    stderrTail: f.stderrTail,
    oomKilled: s?.state === 'OUT_OF_MEMORY',
  }
  const verdict = s === null
    ? { requeue: `Slurm no longer knows job ${f.slurmId} (purged from the controller, and no accounting database)` }
    : verdictOf(s, f)
  return verdict ? { ...exit, verdict } : exit
}

function verdictOf (s: SlurmJobState, f: EndFacts): AttemptEnd['verdict'] | undefined {
  const job = `Slurm job ${f.slurmId}`
  const again = 'Create the job again with a smaller n_epochs, or continue from its last checkpoint.'
  switch (s.state) {
    case 'COMPLETED':
      return undefined
    case 'TIMEOUT':
    case 'DEADLINE':
      return fail('slurm_time_limit', `${job} reached its time limit${f.timeLimit ? ` (OPENTUNE_SLURM_TIME_LIMIT=${f.timeLimit})` : ''} ` +
        `and Slurm stopped it (${s.state}); its checkpoints so far remain available. Raise the limit ` +
        `(OPENTUNE_SLURM_TIME_LIMIT, or the partition's MaxTime), or: ${again}`)
    case 'OUT_OF_MEMORY':
      return fail('out_of_memory', `${job} used more memory than Slurm gave it (OUT_OF_MEMORY). Try a smaller ` +
        'batch_size or context_length, or ask for more memory (OPENTUNE_SLURM_SBATCH_OPTIONS=--mem=…).')
    case 'NODE_FAIL':
    case 'BOOT_FAIL':
      return fail('slurm_node_failed', `The node of ${job} (${s.nodes ?? 'unknown'}) failed (${s.state}); nothing ` +
        'in the job caused it. Create the job again, or continue from its last checkpoint.')
    case 'PREEMPTED':
      return { requeue: `Slurm preempted job ${f.slurmId}` }
    case 'CANCELLED':
      if (f.cancelledByUs) return undefined
      return fail('slurm_cancelled', `${job} was cancelled outside opentune (scancel, or by the cluster's ` +
        'administrators); its checkpoints so far remain available. Create the job again, or continue from its last checkpoint.')
    default: // FAILED, SPECIAL_EXIT, …: the exit code says more (the trainer's own error line, exit 2)
      if (s.exitCode === SPEC_UNREADABLE_EXIT) return fail('slurm_storage_not_shared', storageNotShared(f.dataDir, s.nodes))
      return undefined
  }
}

export function storageNotShared (dataDir: string, nodes: string | null): string {
  return `The data directory (${dataDir}) is not on storage shared with the Slurm compute nodes` +
    `${nodes ? ` (${nodes})` : ''}: a job there could not read what this runner wrote. Mount it at the same path ` +
    'on the nodes (NFS, Lustre, …), or set OPENTUNE_DATA_DIR to a folder that is shared (docs/slurm.md).'
}

function fail (code: string, message: string): { failed: JobError } {
  return { failed: { code, message, param: null } }
}

// The Slurm commands the executor uses, as the CLI a cluster's login node has: sbatch to submit,
// scontrol (sacct once the controller has forgotten a job) for its state, squeue to find an
// attempt by name, scancel. SLURM_CONF and the rest of Slurm's environment come from ours.
import { execFile } from 'node:child_process'
import { constants } from 'node:os'

/** A Slurm command failed (the controller is unreachable, an option is invalid): its stderr. */
export class SlurmCommandError extends Error {
  constructor (readonly command: string, readonly stderr: string) {
    super(`${command}: ${stderr.trim().split('\n').slice(-3).join(' ') || 'failed'}`)
    this.name = 'SlurmCommandError'
  }
}

const TIMEOUT_MS = 30_000 // a controller that does not answer within this is down for this call

async function run (env: NodeJS.ProcessEnv, command: string, args: readonly string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(command, args, { env, timeout: TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new SlurmCommandError(`${command} ${args.join(' ')}`.slice(0, 300), stderr || err.message))
      else resolve(stdout)
    })
  })
}

/** Submits a batch job; its id. */
export async function sbatch (env: NodeJS.ProcessEnv, args: readonly string[]): Promise<string> {
  const out = await run(env, 'sbatch', ['--parsable', ...args])
  const id = out.trim().split(';')[0] ?? '' // "<id>" or "<id>;<cluster>"
  if (!/^\d+$/.test(id)) throw new SlurmCommandError('sbatch', `no job id in its answer: ${out.slice(0, 200)}`)
  return id
}

/** The id of a job with this name the controller still knows (any state), or null. */
export async function jobIdByName (env: NodeJS.ProcessEnv, name: string): Promise<string | null> {
  const out = await run(env, 'squeue', ['--noheader', '--states=all', `--name=${name}`, '--format=%i'])
  const fromQueue = out.split('\n').map(s => s.trim()).find(Boolean)
  if (fromQueue) return fromQueue
  // ended long enough ago to be gone from the controller: the accounting database, where there is one
  const acct = await run(env, 'sacct', ['--noheader', '--allocations', '--parsable2', `--name=${name}`, '--format=JobID'])
    .catch(() => '')
  return acct.split('\n').map(s => s.trim()).find(Boolean) ?? null
}

export interface SlurmJobState {
  state: string // JobState: PENDING, RUNNING, COMPLETED, TIMEOUT, …
  reason: string // why it waits (Resources, Priority, BeginTime, …), or None
  nodes: string | null
  exitCode: number | null // the batch script's exit status
  signal: NodeJS.Signals | null // the signal that ended it, if one did
  restarts: number // times it was requeued
}

/** What the controller (or, for a job it has forgotten, sacct) says of a job; null: neither knows it. */
export async function jobState (env: NodeJS.ProcessEnv, id: string): Promise<SlurmJobState | null> {
  const out = await run(env, 'scontrol', ['--oneliner', 'show', 'job', id]).catch((err: unknown) => {
    if (err instanceof SlurmCommandError && /Invalid job id/i.test(err.stderr)) return null
    throw err
  })
  if (out !== null) {
    const field = (k: string) => new RegExp(`(?:^|\\s)${k}=(\\S*)`).exec(out)?.[1] ?? ''
    return {
      state: field('JobState'),
      reason: field('Reason'),
      nodes: ['', '(null)'].includes(field('NodeList')) ? null : field('NodeList'),
      ...exitStatus(field('ExitCode')),
      restarts: Number(field('Restarts')) || 0,
    }
  }
  const acct = await run(env, 'sacct', ['--noheader', '--allocations', '--parsable2', '--jobs', id,
    '--format=State,Reason,NodeList,ExitCode']).catch(() => '')
  const [state = '', reason = '', nodes = '', exit = ''] = acct.split('\n')[0]?.split('|') ?? []
  if (!state) return null
  return { state: state.split(' ')[0] ?? '', reason, nodes: nodes || null, ...exitStatus(exit), restarts: 0 }
}

/** Slurm's "code:signal". */
function exitStatus (text: string): { exitCode: number | null, signal: NodeJS.Signals | null } {
  const m = /^(\d+):(\d+)$/.exec(text)
  if (!m) return { exitCode: null, signal: null }
  const sig = Number(m[2])
  const name = Object.entries(constants.signals).find(([, n]) => n === sig)?.[0] as NodeJS.Signals | undefined
  return { exitCode: Number(m[1]), signal: sig > 0 ? name ?? null : null }
}

export async function scancel (env: NodeJS.ProcessEnv, id: string): Promise<void> {
  await run(env, 'scancel', [id])
}

/** Every job of this name (no error where there is none). */
export async function scancelByName (env: NodeJS.ProcessEnv, name: string): Promise<void> {
  await run(env, 'scancel', [`--name=${name}`])
}

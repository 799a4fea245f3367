// How a job's trainer starts (docs/multi-gpu.md): `python -m opentune_trainer train --spec …` on
// one GPU or the CPU, `python -m torch.distributed.run --standalone --nproc_per_node N -m
// opentune_trainer train --spec …` on N GPUs (DDP for LoRA, FSDP2 for full fine-tuning); the job's
// own GPUs in CUDA_VISIBLE_DEVICES (gpu-devices.ts); and how long a SIGTERM is given before the
// SIGKILL, sized to what the trainer says its state write needs (StopGrace).
import type { Config } from '../config.js'
import { isSpecDraft } from '../fine-tuning/job-method.js'
import type { JobError } from '../fine-tuning/jobs.schemas.js'
import type { JobRow } from '../fine-tuning/jobs.store.js'
import { gpuPool } from './gpu-devices.js'
import type { TrainerLine } from './protocol.js'

/** Where a job asks for its GPUs: `extra_body: {"opentune": {"gpus": N}}` in the request body. */
export const GPUS_PARAM = 'extra_body.opentune.gpus'

export interface Launch {
  argv: string[]
  env: NodeJS.ProcessEnv
  gpus: readonly number[] // the job's devices; none on the CPU
  grace: StopGrace
  release: () => void // the GPUs go back to the pool (after the trainer has exited)
}

/**
 * GPUs the job asks for, else the runner's OPENTUNE_GPUS_PER_JOB. Read from the Nebius request's
 * `extra_body` object, or from a top-level `opentune` key: the OpenAI SDKs' `extra_body=` argument
 * merges its keys into the body, so `extra_body={"opentune": {"gpus": 2}}` arrives that way.
 */
export function gpusAsked (job: JobRow, config: Readonly<Config>): { n: number, asked: boolean } | JobError {
  const fromBody = (o: Record<string, unknown> | null): unknown => (o?.opentune as { gpus?: unknown } | undefined)?.gpus
  const raw = fromBody(job.extra_body) ?? fromBody(job.extra_fields)
  // a drafter trains on one device (draft_train.py): the runner's several-per-job default is not for it
  if (raw === undefined || raw === null) return { n: isSpecDraft(job.method) ? 1 : config.gpusPerJob, asked: false }
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 1 || raw > 64) {
    return { code: 'invalid_hyperparameters', param: GPUS_PARAM, message: `${GPUS_PARAM} must be an integer from 1 to 64, got ${JSON.stringify(raw)}.` }
  }
  if (raw > 1 && isSpecDraft(job.method)) {
    return { code: 'invalid_hyperparameters', param: GPUS_PARAM, message: `a spec-draft job trains its drafter on one GPU; ${GPUS_PARAM} must be 1, got ${raw}.` }
  }
  return { n: raw, asked: true }
}

/**
 * The command line: `command` (python -m opentune_trainer) as it is for one process, under
 * torchrun with one process per GPU for several; another command (tests' scripted trainer) as it is.
 */
export function trainerArgv (command: readonly string[], nproc: number, specPath: string): string[] {
  const train = ['train', '--spec', specPath]
  const [python, ...rest] = command
  const ours = rest.length === 2 && rest[0] === '-m' && rest[1] === 'opentune_trainer'
  if (nproc <= 1 || !ours || !python) return [...command, ...train]
  // --standalone: a rendezvous on a free local port, so concurrent jobs never collide
  return [python, '-m', 'torch.distributed.run', '--standalone', `--nproc_per_node=${nproc}`, '-m', 'opentune_trainer', ...train]
}

/**
 * GPUs from the pool (waiting until enough are free), argv and env for the local executor
 * (local-executor.ts); a JobError when the job asks for what this runner cannot give.
 */
export async function prepareLaunch (
  config: Readonly<Config>,
  job: JobRow,
  input: { specPath: string, command: readonly string[], env: NodeJS.ProcessEnv }
): Promise<Launch | JobError> {
  const asked = gpusAsked(job, config)
  if ('code' in asked) return asked
  const { specPath, command } = input
  const pool = await gpuPool(config)
  const grace = new StopGrace(0, config.stopGraceMaxSeconds * 1000)
  const env = { ...input.env, OPENTUNE_STOP_GRACE_S: String(grace.maxMs / 1000) }
  if (config.trainerDevice === 'cpu' || pool.size === 0) {
    if (asked.asked && asked.n > 1) {
      const where = config.trainerDevice === 'cpu' ? 'trains on the CPU (OPENTUNE_DEVICE=cpu)' : 'has no GPU (OPENTUNE_GPUS, nvidia-smi)'
      return { code: 'invalid_hyperparameters', param: GPUS_PARAM, message: `The job asks for ${asked.n} GPUs; this runner ${where}.` }
    }
    return { argv: trainerArgv(command, 1, specPath), env, gpus: [], grace, release: () => {} }
  }
  if (asked.n > pool.size) {
    const message = `The job asks for ${asked.n} GPUs (${asked.asked ? GPUS_PARAM : 'OPENTUNE_GPUS_PER_JOB'}); ` +
      `this runner has ${pool.size} (OPENTUNE_GPUS: ${pool.devices.join(',')}).`
    return { code: 'invalid_hyperparameters', param: asked.asked ? GPUS_PARAM : null, message }
  }
  // a shutdown meanwhile stops the trainer as soon as it starts (train-job.ts): the other jobs
  // stopping free their GPUs, so the wait ends
  const lease = (await pool.acquire(asked.n, () => false))!
  return {
    argv: trainerArgv(command, lease.ids.length, specPath),
    env: { ...env, CUDA_VISIBLE_DEVICES: lease.ids.join(',') },
    gpus: lease.ids,
    grace,
    release: lease.release,
  }
}

/**
 * From SIGTERM to SIGKILL: at least the runner's grace (10 s by default, `atLeast`), longer for a
 * trainer that says its state write needs longer (`stop_s` in its started line, then the measured
 * `seconds` of each state it saved, ×1.5 + 5 s), up to OPENTUNE_STOP_GRACE_MAX_SECONDS. The trainer is told that
 * maximum (OPENTUNE_STOP_GRACE_S) and writes no state at SIGTERM that would not fit in it: it keeps
 * the last whole one instead (docs/trainer-protocol.md §5).
 */
export class StopGrace {
  #ms: number
  constructor (readonly baseMs: number, readonly maxMs: number) { this.#ms = baseMs }

  get ms (): number { return this.#ms }

  /** The wait for a stop the runner would give `graceMs` (0 stays 0: a hung trainer gets SIGKILL). */
  atLeast (graceMs: number): number { return graceMs === 0 ? 0 : Math.max(graceMs, this.#ms) }

  heard (line: TrainerLine): void {
    const fields = line as { stop_s?: unknown, seconds?: unknown }
    const need = line.type === 'started' ? fields.stop_s : line.type === 'state_saved' ? fields.seconds : undefined
    if (typeof need !== 'number' || !Number.isFinite(need) || need < 0) return
    this.#ms = Math.min(this.maxMs, Math.max(this.baseMs, Math.ceil(need * 1500) + 5000))
  }
}

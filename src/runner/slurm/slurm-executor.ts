// OPENTUNE_EXECUTOR=slurm: each attempt is one batch job (sbatch; docs/slurm.md says why not
// slurmrestd). Its name is chosen and stored on the job row before it is submitted, and its Slurm
// job id right after, so a runner that dies at any point finds it again (by id, or by name) rather
// than submitting twice. The runner follows the job's state (scontrol) and the trainer's protocol
// file, whose read offset is stored on the job row too: another runner carries on from there.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import type { AppContext } from '../../context.js'
import type { JobError } from '../../fine-tuning/jobs.schemas.js'
import { clearAttempt, unfollowedAttempts, updateJob, type JobRow, type StoredAttempt } from '../../fine-tuning/jobs.store.js'
import { AttemptRefused, type Attempt, type AttemptEnd, type AttemptEvents, type AttemptInput, type Executor } from '../executor.js'
import { batchScript } from './batch-script.js'
import { jobIdByName, jobState, sbatch, scancel, scancelByName, SlurmCommandError, type SlurmJobState } from './commands.js'
import { ProtocolFile } from './protocol-file.js'
import { checkSharedStorage } from './shared-storage.js'
import { attemptEnd, phaseOf } from './states.js'

const STDERR_TAIL_LINES = 40

interface AttemptFiles { script: string, out: string, err: string, protocol: string }

const filesOf = (dir: string, attempt: string): AttemptFiles => ({
  script: join(dir, 'slurm', `${attempt}.sh`),
  out: join(dir, 'slurm', `${attempt}.out`),
  err: join(dir, 'slurm', `${attempt}.err`),
  protocol: join(dir, 'slurm', `${attempt}.protocol.jsonl`),
})

export class SlurmExecutor implements Executor {
  readonly kind = 'slurm'
  #storage: Promise<JobError | null> | null = null
  readonly #following = new Set<string>() // job ids whose attempt this process follows

  constructor (private readonly ctx: AppContext) {}

  get #env (): NodeJS.ProcessEnv { return { ...this.ctx.config.childEnv } }

  /** --partition/--account/--qos as configured. */
  get #placement (): string[] {
    const { partition, account, qos } = this.ctx.config.slurm
    return [
      ...(partition ? [`--partition=${partition}`] : []),
      ...(account ? [`--account=${account}`] : []),
      ...(qos ? [`--qos=${qos}`] : []),
    ]
  }

  prepare (log: FastifyBaseLogger): void {
    // the first job waits for this same check; a failure is logged there and said in that job's error
    this.#checkStorage(log).catch(() => {})
  }

  async start (input: AttemptInput, on: AttemptEvents): Promise<Attempt> {
    const { job } = input
    const log = input.log.child({ executor: 'slurm' })
    let attempt = job.executor_attempt
    let slurmId = job.executor_job_id
    let offset = job.protocol_offset
    if (!slurmId) {
      await this.#checkStorage(log)
      if (!attempt) {
        // named before submitting: a runner that dies after sbatch finds the job by this name
        attempt = `opentune-${job.id}-${randomBytes(3).toString('hex')}`
        await updateJob(this.ctx.db, job.id, { executor_attempt: attempt, executor_job_id: null, protocol_offset: 0 })
      }
      offset = 0
      slurmId = await this.#findOrSubmit(input, attempt, log)
      await updateJob(this.ctx.db, job.id, { executor_job_id: slurmId })
    } else {
      log.info({ slurmJobId: slurmId, attempt, offset }, 'following the Slurm job of an earlier runner')
    }
    return this.#follow(job, slurmId, filesOf(input.dir, attempt ?? slurmId), offset, on, log)
  }

  /**
   * A job that ended while no runner followed its Slurm job (cancelled with every runner down)
   * leaves that job running to its end: scancel it, by id, or by its attempt name where the id was
   * never stored. Once Slurm says it ended (or has forgotten it), the job row's attempt is cleared.
   */
  async sweep (log: FastifyBaseLogger): Promise<void> {
    const rows = await unfollowedAttempts(this.ctx.db, Date.now()).catch((err: unknown) => {
      log.warn({ err }, 'reading the finished jobs\' Slurm attempts failed')
      return []
    })
    for (const row of rows) {
      if (this.#following.has(row.id)) continue // its lease ran out behind a late heartbeat: ours still
      await this.#sweepOne(row, log).catch((err: unknown) => {
        log.warn({ err, jobId: row.id, attempt: row.executor_attempt }, 'stopping an unfollowed Slurm job failed; trying again later')
      })
    }
  }

  async #sweepOne (row: StoredAttempt, log: FastifyBaseLogger): Promise<void> {
    const env = this.#env
    const { executor_attempt: attempt, executor_job_id: stored } = row
    // submitted, perhaps, by a runner that died before storing the id: every job of that name
    if (!stored && attempt) await scancelByName(env, attempt)
    const slurmId = stored ?? (attempt ? await jobIdByName(env, attempt) : null)
    const s = slurmId ? await jobState(env, slurmId) : null
    if (!slurmId || !s || phaseOf(s.state) === 'ended') return await clearAttempt(this.ctx.db, row)
    if (stored) await scancel(env, slurmId)
    // cleared at a later sweep, once Slurm says it ended (the trainer gets SIGTERM and KillWait first)
    log.info({ jobId: row.id, slurmJobId: slurmId, attempt, slurmState: s.state }, 'scancelled the Slurm job of a finished job no runner follows')
  }

  async #checkStorage (log: FastifyBaseLogger): Promise<void> {
    const check = this.#storage ??= checkSharedStorage({
      env: this.#env,
      dataDir: this.ctx.config.dataDir,
      placement: this.#placement,
      pollMs: this.ctx.config.slurm.pollMs,
      log,
    })
    // only a success is kept: a cluster that could not be reached, or a fixed mount, is asked again
    let refused: JobError | null
    try {
      refused = await check
    } catch (err) {
      this.#storage = null
      throw new AttemptRefused(submitFailed(err))
    }
    if (refused) {
      this.#storage = null
      throw new AttemptRefused(refused)
    }
  }

  async #findOrSubmit (input: AttemptInput, attempt: string, log: FastifyBaseLogger): Promise<string> {
    const env = this.#env
    const found = await jobIdByName(env, attempt)
    if (found) {
      log.info({ slurmJobId: found, attempt }, 'found the attempt already submitted')
      return found
    }
    const { slurm, trainerSilenceSeconds } = this.ctx.config
    const files = filesOf(input.dir, attempt)
    await mkdir(join(input.dir, 'slurm'), { recursive: true })
    const exported: Record<string, string> = {
      PYTHONPATH: input.env.PYTHONPATH ?? '',
      PYTHONUNBUFFERED: '1',
      OPENTUNE_HEARTBEAT_S: input.env.OPENTUNE_HEARTBEAT_S ?? String(Math.min(10, trainerSilenceSeconds / 4)),
      OPENTUNE_PROTOCOL_FILE: files.protocol,
    }
    await writeFile(files.script, batchScript({
      attempt,
      jobId: input.job.id,
      python: slurm.python,
      specPath: input.specPath,
      env: exported,
      nodes: slurm.nodes,
      gpusPerNode: slurm.gpusPerNode,
    }), { mode: 0o755 })
    const args = [
      `--job-name=${attempt}`,
      `--comment=opentune ${input.job.id}`,
      `--chdir=${input.dir}`,
      `--output=${files.out}`,
      `--error=${files.err}`,
      '--open-mode=append', // a requeued run adds to its first run's logs
      '--requeue',
      `--nodes=${slurm.nodes}`,
      ...this.#placement,
      ...(slurm.timeLimit ? [`--time=${slurm.timeLimit}`] : []),
      ...(slurm.gpusPerNode > 0 ? [`--gres=gpu:${slurm.gpusPerNode}`, '--ntasks-per-node=1'] : []),
      ...slurm.sbatchOptions,
      files.script,
    ]
    try {
      const id = await sbatch(env, args)
      log.info({ slurmJobId: id, attempt }, 'submitted the attempt')
      return id
    } catch (err) {
      throw new AttemptRefused(submitFailed(err))
    }
  }

  #follow (
    job: JobRow,
    slurmId: string,
    files: AttemptFiles,
    offset: number,
    on: AttemptEvents,
    log: FastifyBaseLogger
  ): Attempt {
    const { db, config } = this.ctx
    const env = this.#env
    const protocol = new ProtocolFile(files.protocol, offset, {
      line: on.line,
      other: (text) => on.other(text, 'stdout'),
      saveOffset: async (n) => { await updateJob(db, job.id, { protocol_offset: n }) },
    })
    this.#following.add(job.id)
    let leaving = false
    let cancelling = false
    let wake = () => {}
    const nap = () => new Promise<void>(resolve => {
      const timer = setTimeout(resolve, config.slurm.pollMs)
      wake = () => { clearTimeout(timer); resolve() }
    })
    const cancel = () => {
      scancel(env, slurmId).catch((err: unknown) => log.warn({ err, slurmJobId: slurmId }, 'scancel failed; trying again'))
    }
    const detached = (): AttemptEnd => ({ code: null, signal: null, spawnError: null, stderrTail: '', oomKilled: null, detached: true })
    const exited = (async (): Promise<AttemptEnd> => {
      let seen: { phase: string, reason: string, restarts: number } | null = null
      for (;;) {
        if (leaving) return detached()
        try {
          if (!(await protocol.readNew())) { await nap(); continue } // storing failed: the caller leaves
          const s = await jobState(env, slurmId)
          if (s === null || phaseOf(s.state) === 'ended') {
            if (!(await protocol.readNew())) return detached() // the lines written before it ended
            const stderrTail = await tail(files.err)
            const { timeLimit } = config.slurm
            return attemptEnd(s, { slurmId, cancelledByUs: cancelling, timeLimit, dataDir: config.dataDir, stderrTail })
          }
          seen = await this.#report(s, seen, slurmId, on)
          if (cancelling) cancel() // again until it ends: the controller may have missed one
        } catch (err) {
          log.warn({ err, slurmJobId: slurmId }, 'following the Slurm job failed; trying again')
        }
        await nap()
      }
    })().finally(() => this.#following.delete(job.id))
    return {
      exited,
      stop: () => {
        if (cancelling) return
        cancelling = true
        cancel() // Slurm sends SIGTERM (the trainer saves its state), SIGKILL after its KillWait
        wake()
      },
      leave: () => { leaving = true; wake() },
    }
  }

  /** Says what changed since the last look: waiting (and why), running, requeued. */
  async #report (
    s: SlurmJobState,
    seen: { phase: string, reason: string, restarts: number } | null,
    slurmId: string,
    on: AttemptEvents
  ): Promise<{ phase: string, reason: string, restarts: number }> {
    const phase = phaseOf(s.state)
    const now = { phase, reason: s.reason, restarts: s.restarts }
    const requeued = phase === 'waiting' && (seen?.phase === 'alive' || s.restarts > (seen?.restarts ?? 0))
    // reason None: the scheduler has not looked at it yet (it says why within its next pass)
    const changed = seen?.phase !== 'waiting' || seen.reason !== s.reason
    if (phase === 'waiting' && changed && (s.reason !== 'None' || requeued)) {
      await on.waiting({
        requeued,
        message: requeued
          ? `Slurm requeued job ${slurmId} (preempted, or requeued by an administrator): it is ${s.state} (${s.reason}) ` +
            'and resumes from its last saved state when Slurm starts it again.'
          : `Slurm job ${slurmId} is ${s.state} (${s.reason}): the job stays queued until Slurm starts it.`,
        data: { slurm_job_id: slurmId, slurm_state: s.state, reason: s.reason },
      })
    }
    if (phase === 'alive' && (seen?.phase !== 'alive' || seen.restarts !== s.restarts)) {
      await on.running({
        message: `Slurm job ${slurmId} is ${s.state}${s.nodes ? ` on ${s.nodes}` : ''}.`,
        data: { slurm_job_id: slurmId, slurm_state: s.state, nodes: s.nodes },
      })
    }
    return now
  }
}

function submitFailed (err: unknown): JobError {
  const why = err instanceof SlurmCommandError ? err.message : String((err as Error | undefined)?.message ?? err)
  return {
    code: 'slurm_submit_failed',
    message: `Submitting the job to Slurm failed: ${why.slice(0, 500)}. Check the OPENTUNE_SLURM_* settings ` +
      '(partition, account, QoS, options) and that this machine can reach the Slurm controller (docs/slurm.md).',
    param: null,
  }
}

async function tail (path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '')
  return text.split('\n').slice(-STDERR_TAIL_LINES - 1).join('\n')
}

// OPENTUNE_EXECUTOR=local (the default): the attempt is a child process of this runner, its
// protocol lines on stdout (trainer-process.ts). Nothing outlives the runner, so there is never
// an attempt to find again: a new runner starts a new one, which resumes from the saved state.
// The job's GPUs come from this process's pool (trainer-launch.ts, docs/multi-gpu.md): its own
// CUDA_VISIBLE_DEVICES, torchrun for several, given back when the trainer has exited.
import type { Config } from '../config.js'
import { AttemptRefused, type Attempt, type AttemptEvents, type AttemptInput, type Executor } from './executor.js'
import { oomKillCount, oomKilledBetween } from './oom-kills.js'
import { prepareLaunch } from './trainer-launch.js'
import { startTrainer } from './trainer-process.js'

export class LocalExecutor implements Executor {
  readonly kind = 'local'

  constructor (private readonly config: Readonly<Config>) {}

  prepare (): void {}

  async sweep (): Promise<void> {} // a trainer never outlives its runner

  async start (input: AttemptInput, on: AttemptEvents): Promise<Attempt> {
    const launch = await prepareLaunch(this.config, input.job, { ...input, command: input.trainerCommand })
    if ('code' in launch) throw new AttemptRefused(launch)
    const oomBefore = await oomKillCount() // a SIGKILL is the OOM killer's only if this count rises
    const trainer = startTrainer(launch.argv, {
      env: launch.env,
      onLine: (line) => { launch.grace.heard(line); void on.line(line) }, // handled in order by the caller's queue
      onOther: on.other,
    })
    void on.running(null)
    const exited = trainer.exited.then(async (exit) => ({
      ...exit,
      oomKilled: oomKilledBetween(oomBefore, await oomKillCount()),
    })).finally(launch.release)
    // leaving (shutdown): as long as the trainer said its state write needs, within the bounds
    return { exited, stop: (ms) => trainer.stop(ms), leave: (ms) => trainer.stop(launch.grace.atLeast(ms)) }
  }
}

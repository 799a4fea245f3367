// OPENTUNE_EXECUTOR=local (the default): the attempt is a child process of this runner, its
// protocol lines on stdout (trainer-process.ts). Nothing outlives the runner, so there is never
// an attempt to find again: a new runner starts a new one, which resumes from the saved state.
import type { Attempt, AttemptEvents, AttemptInput, Executor } from './executor.js'
import { oomKillCount, oomKilledBetween } from './oom-kills.js'
import { startTrainer } from './trainer-process.js'

export class LocalExecutor implements Executor {
  readonly kind = 'local'

  prepare (): void {}

  async start (input: AttemptInput, on: AttemptEvents): Promise<Attempt> {
    const oomBefore = await oomKillCount() // a SIGKILL is the OOM killer's only if this count rises
    const trainer = startTrainer([...input.trainerCommand, 'train', '--spec', input.specPath], {
      env: input.env,
      onLine: (line) => { void on.line(line) }, // handled in order by the caller's queue
      onOther: on.other,
    })
    void on.running(null)
    const exited = trainer.exited.then(async (exit) => ({
      ...exit,
      oomKilled: oomKilledBetween(oomBefore, await oomKillCount()),
    }))
    return { exited, stop: (ms) => trainer.stop(ms), leave: (ms) => trainer.stop(ms) }
  }
}

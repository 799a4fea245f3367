// The trainer as a child process (graphile-worker's executable-task seam): a spec file in, JSON
// lines out on stdout, stderr kept for logs and for the message of a crash.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { parseTrainerLine, type TrainerLine } from './protocol.js'

export interface TrainerExit {
  code: number | null
  signal: NodeJS.Signals | null
  spawnError: Error | null // the program could not be started at all (no python)
  stderrTail: string
}

export interface TrainerProcess {
  pid: number | undefined
  exited: Promise<TrainerExit>
  /** SIGTERM (the trainer saves resumable state and exits 3), then SIGKILL after graceMs. */
  stop: (graceMs: number) => void
}

const STDERR_TAIL_LINES = 40

export function startTrainer (argv: readonly string[], opts: { env: NodeJS.ProcessEnv, cwd?: string, onLine: (line: TrainerLine) => void, onOther: (text: string, stream: 'stdout' | 'stderr') => void }): TrainerProcess {
  const [command, ...args] = argv
  if (!command) throw new Error('empty trainer command')
  const child: ChildProcess = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const tail: string[] = []
  let spawnError: Error | null = null
  child.on('error', (err) => { spawnError = err })

  createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
    const parsed = parseTrainerLine(line)
    if (parsed) opts.onLine(parsed)
    else if (line.trim() !== '') opts.onOther(line, 'stdout')
  })
  createInterface({ input: child.stderr!, crlfDelay: Infinity }).on('line', (line) => {
    tail.push(line)
    if (tail.length > STDERR_TAIL_LINES) tail.shift()
    opts.onOther(line, 'stderr')
  })

  // 'close' (not 'exit') waits until stdout is drained, so no line is lost after the exit.
  const exited = new Promise<TrainerExit>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, spawnError, stderrTail: tail.join('\n') }))
  })
  let killTimer: NodeJS.Timeout | undefined
  void exited.then(() => clearTimeout(killTimer))
  return {
    pid: child.pid,
    exited,
    stop (graceMs) {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      killTimer ??= setTimeout(() => child.kill('SIGKILL'), graceMs)
      killTimer.unref()
    },
  }
}

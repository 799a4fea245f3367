// The real service as a child process (`opentune serve` through tsx), for tests that kill it.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'

const ROOT = join(import.meta.dirname, '..', '..')
const CLI = ['--import', 'tsx', join(ROOT, 'src', 'cli.ts')]

/** A port nobody listens on right now (the OS picks; we print it to the child via PORT). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address ? address.port : 0) })
    })
  })
}

/** `opentune keys create --project <name>`; the key is the last stdout line. */
export async function createKeyWithCli (env: Record<string, string>, project: string): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [...CLI, 'keys', 'create', '--project', project], {
    cwd: ROOT, env: { ...process.env, ...env },
  })
  const key = stdout.trim().split('\n').at(-1) ?? ''
  if (!key.startsWith('sk-')) throw new Error(`no key in: ${stdout}`)
  return key
}

export interface ServiceProcess {
  url: string
  child: ChildProcess
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** The last few KB of its output, for failure messages. */
  output: () => string
  kill: (signal: NodeJS.Signals) => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Sends `signal`; if the process is still there after `ms`, SIGKILLs it and reports 'timeout'. */
  stopWithin: (signal: NodeJS.Signals, ms: number) => Promise<{ code: number | null, signal: NodeJS.Signals | null } | 'timeout'>
}

export async function startServiceProcess (env: Record<string, string>): Promise<ServiceProcess> {
  const port = await freePort()
  const child = spawn(process.execPath, [...CLI, 'serve'], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let log = ''
  const keep = (chunk: Buffer) => { log = (log + chunk.toString()).slice(-4000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    child.once('exit', (code, signal) => { resolve({ code, signal }) })
  })
  let gone = false
  void exited.then(() => { gone = true })
  const url = `http://127.0.0.1:${port}`
  // tsx compiling src/ on a loaded machine: seconds; the limit only bounds a broken start
  const deadline = Date.now() + 90_000
  for (;;) {
    if (gone) throw new Error(`service exited before listening:\n${log}`)
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`service did not answer /health:\n${log}`) }
    const ok = await fetch(`${url}/health`).then(r => r.ok, () => false)
    if (ok) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return {
    url,
    child,
    exited,
    output: () => log,
    kill: async (signal) => {
      if (!gone) child.kill(signal)
      return await exited
    },
    stopWithin: async (signal, ms) => {
      if (!gone) child.kill(signal)
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, ms) })
      const result = await Promise.race([exited, late])
      clearTimeout(timer)
      if (result === 'timeout') { child.kill('SIGKILL'); await exited }
      return result
    },
  }
}

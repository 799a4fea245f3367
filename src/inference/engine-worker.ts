// The embedded engine: one long-lived Python worker (docs/inference-protocol.md) shared by every
// request, started on first use, restarted when it dies. Requests in flight on a worker that died
// end with a 503 the openai SDK retries; beyond the batch plus the queue a request gets a 429.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { Config } from '../config.js'
import { errors, type ApiError } from '../errors.js'
import { trainerEnv } from '../runner/trainer-env.js'

export interface GenerateRequest {
  model: { weights: string, adapter: string | null }
  prompt: number[]
  max_tokens: number
  temperature: number
  top_p: number
  seed: number | null
  presence_penalty: number
  frequency_penalty: number
  stop_ids: number[]
  logprobs: number | null
  prompt_logprobs: boolean
  /** An EAGLE-3 drafter folder: greedy rows decode speculatively (docs/inference-protocol.md). */
  draft?: string
  num_speculative_tokens?: number
}

export type TopLogprobs = Array<[number, number]>
export interface GeneratedToken { token: number, logprob?: number, top?: TopLogprobs }
export interface PromptLogprobs { logprobs: Array<number | null>, top?: Array<TopLogprobs | null> }
export type FinishReason = 'stop' | 'length' | 'cancelled'

/** What one generation reports, in order: prompt logprobs (if asked), tokens, then end or failure. */
export interface GenerationSink {
  prompt: (p: PromptLogprobs) => void
  token: (t: GeneratedToken) => void
  done: (reason: FinishReason) => void
  fail: (err: ApiError) => void
}

export interface Generation {
  cancel: () => void
}

type WorkerLine =
  | { type: 'ready', device: string, dtype: string }
  | { type: 'tokens', items: Array<GeneratedToken & { id: string }> }
  | { type: 'prompt', id: string } & PromptLogprobs
  | { type: 'done', id: string, finish_reason: FinishReason }
  | { type: 'error', id: string, code: string, message: string }
  | { type: 'log', level: string, message: string }

export interface EngineLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
}

export class EngineWorker {
  private child: ChildProcess | null = null
  private spawnError: Error | null = null
  private readonly inFlight = new Map<string, GenerationSink>()
  private nextId = 0
  private closed = false

  constructor (private readonly config: Readonly<Config>, private readonly log: EngineLog) {}

  /** How many requests the worker is running or holding in its queue. */
  get load (): number { return this.inFlight.size }

  /** A 429 now, before a stream opens, when `count` more requests would not fit the batch and queue. */
  checkCapacity (count: number): void {
    const { maxBatch, maxQueued } = this.config.inference
    if (this.inFlight.size + count > maxBatch + maxQueued) throw errors.inferenceBusy(this.inFlight.size)
  }

  generate (request: GenerateRequest, sink: GenerationSink): Generation {
    this.checkCapacity(1)
    const child = this.running()
    const id = `r-${++this.nextId}`
    this.inFlight.set(id, sink)
    this.send(child, { op: 'generate', id, ...request })
    return {
      // The worker reads its stdin in order, so it frees the slot before it sees any later request:
      // the slot counts as free now, and the request ends now (what the worker still says is dropped).
      cancel: () => {
        const sink = this.finish(id)
        if (!sink) return
        if (this.child === child) this.send(child, { op: 'cancel', id })
        sink.done('cancelled')
      },
    }
  }

  async close (): Promise<void> {
    this.closed = true
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
    child.stdin?.end() // the worker exits when its stdin closes
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(kill)
  }

  private running (): ChildProcess {
    if (this.closed) throw errors.inferenceUnavailable('the service is shutting down')
    if (this.child) return this.child
    const { inference, python } = this.config
    const args = ['-m', 'opentune_trainer', 'serve', '--max-batch', String(inference.maxBatch),
      '--memory-gb', String(inference.memoryGb), '--idle-seconds', String(inference.idleSeconds),
      '--device', inference.device]
    const child = spawn(python, args, { env: trainerEnv(this.config), stdio: ['pipe', 'pipe', 'pipe'] })
    this.child = child
    child.stdin?.on('error', () => {}) // EPIPE when it died: 'close' below answers the requests
    child.on('error', (err) => { this.spawnError = err; this.log.warn({ err }, 'inference worker could not start') })
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => { this.onLine(line) })
    createInterface({ input: child.stderr!, crlfDelay: Infinity }).on('line', (line) => {
      if (line.trim() !== '') this.log.info({ worker: 'inference' }, line)
    })
    child.on('close', (code, signal) => { this.onExit(child, code, signal) })
    return child
  }

  private onExit (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return
    this.child = null // the next request starts a new worker
    if (!this.closed) this.log.warn({ code, signal, inFlight: this.inFlight.size }, 'inference worker exited')
    const sinks = [...this.inFlight.values()]
    this.inFlight.clear()
    const spawnError = this.spawnError
    this.spawnError = null
    const err = spawnError
      ? errors.inferenceUnavailable(`${this.config.python} could not be run (${spawnError.message}); run npm run setup`)
      : errors.inferenceRestarted()
    for (const sink of sinks) sink.fail(err)
  }

  private send (child: ChildProcess, message: object): void {
    child.stdin?.write(JSON.stringify(message) + '\n')
  }

  private onLine (text: string): void {
    let line: WorkerLine
    try {
      line = JSON.parse(text) as WorkerLine
    } catch {
      if (text.trim() !== '') this.log.info({ worker: 'inference' }, text)
      return
    }
    switch (line.type) {
      case 'tokens':
        for (const item of line.items) this.inFlight.get(item.id)?.token(item)
        return
      case 'prompt':
        this.inFlight.get(line.id)?.prompt(line)
        return
      case 'done':
        this.finish(line.id)?.done(line.finish_reason)
        return
      case 'error':
        this.finish(line.id)?.fail(errors.generationFailed(line.code, line.message))
        return
      case 'ready':
        this.log.info({ device: line.device, dtype: line.dtype }, 'inference worker ready')
        return
      case 'log':
        this.log.info({ worker: 'inference' }, line.message)
    }
  }

  private finish (id: string): GenerationSink | undefined {
    const sink = this.inFlight.get(id)
    this.inFlight.delete(id)
    return sink
  }
}

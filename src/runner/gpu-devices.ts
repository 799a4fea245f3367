// GPUs for concurrent jobs: each training gets devices of its own from the runner's pool, handed
// to the trainer as CUDA_VISIBLE_DEVICES (trainer-launch.ts), so two jobs never share GPU 0.
// The pool is OPENTUNE_GPUS, or every GPU nvidia-smi lists; one pool per configuration, shared by
// the jobs of every runner in this process. A job waits (first come, first served) until enough
// devices are free; one asking for more than the pool has is refused before it waits.
import { execFile } from 'node:child_process'
import type { Config } from '../config.js'

export interface GpuLease {
  ids: readonly number[]
  release: () => void
}

export class GpuPool {
  readonly devices: readonly number[]
  #free: number[]
  readonly #waiting: Array<{ n: number, grant: (ids: number[]) => void }> = []

  constructor (devices: readonly number[]) {
    this.devices = devices
    this.#free = [...devices]
  }

  get size (): number { return this.devices.length }

  /** Resolves once n devices are free (lowest ids first), or with null once `stopped()` says so. */
  async acquire (n: number, stopped: () => boolean, pollMs = 200): Promise<GpuLease | null> {
    if (n > this.size) throw new RangeError(`${n} GPUs asked for, the pool has ${this.size}`)
    const ids = await new Promise<number[] | null>((resolve) => {
      const waiter = { n, grant: (got: number[]) => { clearInterval(timer); resolve(got) } }
      const timer = setInterval(() => {
        if (!stopped()) return
        clearInterval(timer)
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1)
        resolve(null)
      }, pollMs)
      this.#waiting.push(waiter)
      this.#grant()
    })
    if (ids === null) return null
    let released = false
    return {
      ids,
      release: () => {
        if (released) return
        released = true
        this.#free.push(...ids)
        this.#free.sort((a, b) => a - b)
        this.#grant()
      },
    }
  }

  // first come, first served: a job asking for many GPUs is not overtaken forever by small ones
  #grant (): void {
    while (this.#waiting.length > 0 && this.#waiting[0]!.n <= this.#free.length) {
      const w = this.#waiting.shift()!
      w.grant(this.#free.splice(0, w.n))
    }
  }
}

const pools = new WeakMap<Readonly<Config>, Promise<GpuPool>>()

/** The pool of a configuration (discovered once). */
export function gpuPool (config: Readonly<Config>): Promise<GpuPool> {
  let pool = pools.get(config)
  if (!pool) {
    pool = (config.gpus ? Promise.resolve(config.gpus) : listGpus()).then(ids => new GpuPool(ids))
    pools.set(config, pool)
  }
  return pool
}

/** CUDA device ids nvidia-smi reports; none where it is missing or fails (a CPU machine). */
export function listGpus (command = 'nvidia-smi'): Promise<number[]> {
  return new Promise((resolve) => {
    execFile(command, ['--query-gpu=index', '--format=csv,noheader'], { timeout: 10_000 }, (err, stdout) => {
      if (err) return resolve([])
      resolve(stdout.split('\n').map(s => s.trim()).filter(s => /^\d+$/.test(s)).map(Number))
    })
  })
}

import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { DatasetFormat } from './examples.js'
import type { JsonlItem } from './jsonl-reader.js'
import { BatchPreparer, type PrepareModelInfo, type PreparedBatch } from './prepare-batch.js'

/** Runs BatchPreparer on chunks of lines, here or in a worker thread; results come in order. */
export interface Preparer {
  prepare: (items: JsonlItem[]) => Promise<PreparedBatch>
  readonly format: DatasetFormat | null
  readonly stopped: boolean
  close: () => Promise<void>
}

export function inlinePreparer (
  info: PrepareModelInfo,
  templates?: ConstructorParameters<typeof BatchPreparer>[1]
): Preparer {
  const preparer = new BatchPreparer(info, templates)
  return {
    prepare: async (items) => preparer.prepare(items),
    get format () { return preparer.format },
    get stopped () { return preparer.stopped },
    close: async () => {},
  }
}

/**
 * A worker thread for the JavaScript half (JSON, validation, chat templates: ~45 µs per Llama chat
 * example, most of the main thread's time), so that it runs beside the tokenizer's native threads
 * instead of before them; it also keeps the caller's event loop free. Its young generation is kept
 * small: template rendering makes only short-lived garbage, and RSS must stay flat.
 */
export function workerPreparer (info: PrepareModelInfo): Preparer {
  const worker = startWorker(info)
  const waiting = new Map<number, { resolve: (batch: PreparedBatch) => void, reject: (error: Error) => void }>()
  let nextId = 0
  let format: DatasetFormat | null = null
  let stopped = false
  let failure: Error | null = null
  const failAll = (error: Error): void => {
    failure = error
    for (const { reject } of waiting.values()) reject(error)
    waiting.clear()
  }
  worker.on('message', (message: { id: number, batch?: PreparedBatch, format?: DatasetFormat | null, stopped?: boolean, error?: string }) => {
    const entry = waiting.get(message.id)
    waiting.delete(message.id)
    if (message.error !== undefined) {
      entry?.reject(new Error(`dataset worker: ${message.error}`))
      return
    }
    format = message.format ?? null
    stopped = message.stopped === true
    entry?.resolve(message.batch as PreparedBatch)
  })
  worker.on('error', failAll)
  worker.on('exit', (code) => { if (waiting.size > 0) failAll(new Error(`dataset worker exited with code ${code}`)) })
  return {
    prepare: async (items) => await new Promise<PreparedBatch>((resolve, reject) => {
      if (failure !== null) {
        reject(failure)
        return
      }
      const id = nextId++
      waiting.set(id, { resolve, reject })
      worker.postMessage({ id, items })
    }),
    get format () { return format },
    get stopped () { return stopped },
    close: async () => { await worker.terminate() },
  }
}

/**
 * The compiled worker is a .js file next to this one. Under tsx (tests, dev) it is the .ts source,
 * and the worker must register tsx itself: Node 20 does not apply `--import` hooks to a worker's entry.
 */
function startWorker (info: PrepareModelInfo): Worker {
  const options = { workerData: info, resourceLimits: { maxYoungGenerationSizeMb: 8 } }
  const compiled = new URL('./prepare-worker.js', import.meta.url)
  if (existsSync(fileURLToPath(compiled))) return new Worker(compiled, options)
  const source = new URL('./prepare-worker.ts', import.meta.url).href
  const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(source)}) })`
  return new Worker(bootstrap, { ...options, eval: true })
}

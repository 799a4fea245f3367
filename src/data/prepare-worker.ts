// Worker thread entry: prepares chunks of lines (JSON, validation, chat templates) in order and
// posts them back, while the main thread tokenizes and writes. See preparer.ts.
import { parentPort, workerData } from 'node:worker_threads'
import type { JsonlItem } from './jsonl-reader.js'
import { BatchPreparer, type PrepareModelInfo } from './prepare-batch.js'

const preparer = new BatchPreparer(workerData as PrepareModelInfo)
const port = parentPort
if (port === null) throw new Error('prepare-worker.ts runs as a worker thread')

port.on('message', ({ id, items }: { id: number, items: JsonlItem[] }) => {
  try {
    const batch = preparer.prepare(items)
    port.postMessage({ id, batch, format: preparer.format, stopped: preparer.stopped })
  } catch (error) {
    port.postMessage({ id, error: error instanceof Error ? error.stack ?? error.message : String(error) })
  }
})

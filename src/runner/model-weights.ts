// The built-in tiny model ships as config + tokenizer (models/opentune/tiny-llama); its weights
// are made by the trainer, deterministically, once per data dir, on first use.
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { copyFile, link, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { promisify } from 'node:util'
import type { Config } from '../config.js'
import type { BlobStore } from '../files/blob-storage.js'
import type { CheckpointSource } from '../fine-tuning/continue-from.js'
import type { BaseModel } from '../models/catalog.js'
import { trainerEnv } from './trainer-env.js'

const run = promisify(execFile)
let making: Promise<string> | undefined

/** The folder the trainer loads: the model's own, or for the built-in model its materialised copy. */
export async function modelDirForTraining (config: Readonly<Config>, model: BaseModel): Promise<string> {
  if (!model.builtin) return model.dir
  const dir = join(config.dataDir, 'builtin-models', model.id)
  if (existsSync(join(dir, 'model.safetensors'))) return dir
  making ??= (async () => {
    const tmp = `${dir}.tmp-${process.pid}`
    await rm(tmp, { recursive: true, force: true })
    await mkdir(dirname(dir), { recursive: true })
    await run(config.python, ['-m', 'opentune_trainer', 'init-tiny', '--out', tmp], { env: trainerEnv(config), timeout: 120_000 })
    await rm(dir, { recursive: true, force: true })
    await rename(tmp, dir)
    return dir
  })().finally(() => { making = undefined })
  return await making
}

/**
 * A checkpoint's result files as a folder the trainer can load (a full fine-tune's HF folder, or a
 * LoRA adapter), made once: hard links to the blobs, which never change (a copy across devices).
 * Concurrent runners may both build it; the first rename wins and the other uses that folder.
 */
export async function checkpointFolder (config: Readonly<Config>, blobs: BlobStore, source: CheckpointSource): Promise<string> {
  const dir = join(config.dataDir, 'checkpoint-models', source.id)
  const done = join(dir, '.complete')
  if (existsSync(done)) return dir
  const tmp = `${dir}.tmp-${randomUUID()}`
  try {
    await mkdir(tmp, { recursive: true })
    for (const f of source.files) {
      const from = blobs.pathOf(f.id)
      const to = join(tmp, basename(f.name))
      await link(from, to).catch(async () => { await copyFile(from, to) })
    }
    await writeFile(join(tmp, '.complete'), '')
    await rename(tmp, dir).catch((err: unknown) => { if (!existsSync(done)) throw err })
    return dir
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

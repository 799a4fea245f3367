// The built-in tiny model ships as config + tokenizer (models/opentune/tiny-llama); its weights
// are made by the trainer, deterministically, once per data dir, on first use.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, rename, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import type { Config } from '../config.js'
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

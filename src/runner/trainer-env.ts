import { join } from 'node:path'
import type { Config } from '../config.js'

/**
 * The trainer's environment: our package on PYTHONPATH, unbuffered so each line arrives at once,
 * heartbeats in long phases well inside the silence after which the runner kills it as hung, and
 * torch.compile's cache under the data directory (kept across jobs: a warm job skips minutes of
 * compiling) unless the environment names one.
 */
export function trainerEnv (config: Readonly<Config>): NodeJS.ProcessEnv {
  const inherited = config.childEnv.PYTHONPATH
  const path = inherited ? `${config.trainerDir}:${inherited}` : config.trainerDir
  const heartbeat = String(Math.min(10, config.trainerSilenceSeconds / 4))
  const compileCache = config.childEnv.TORCHINDUCTOR_CACHE_DIR ?? join(config.dataDir, 'compile-cache')
  return {
    ...config.childEnv,
    PYTHONPATH: path,
    PYTHONUNBUFFERED: '1',
    OPENTUNE_HEARTBEAT_S: heartbeat,
    TORCHINDUCTOR_CACHE_DIR: compileCache,
  }
}

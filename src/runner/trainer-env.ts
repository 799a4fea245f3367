import type { Config } from '../config.js'

/**
 * The trainer's environment: our package on PYTHONPATH, unbuffered so each line arrives at once,
 * and heartbeats in long phases well inside the silence after which the runner kills it as hung.
 */
export function trainerEnv (config: Readonly<Config>): NodeJS.ProcessEnv {
  const inherited = config.childEnv.PYTHONPATH
  const path = inherited ? `${config.trainerDir}:${inherited}` : config.trainerDir
  const heartbeat = String(Math.min(10, config.trainerSilenceSeconds / 4))
  return { ...config.childEnv, PYTHONPATH: path, PYTHONUNBUFFERED: '1', OPENTUNE_HEARTBEAT_S: heartbeat }
}

import type { Config } from '../config.js'

/** The trainer's environment: our package on PYTHONPATH, unbuffered so each line arrives at once. */
export function trainerEnv (config: Readonly<Config>): NodeJS.ProcessEnv {
  const inherited = config.childEnv.PYTHONPATH
  const path = inherited ? `${config.trainerDir}:${inherited}` : config.trainerDir
  return { ...config.childEnv, PYTHONPATH: path, PYTHONUNBUFFERED: '1' }
}

// The only module that reads process.env. loadConfig is pure so tests pass their own env.
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'

export interface Config {
  host: string
  port: number
  dataDir: string
  databaseUrl: string | null // postgres://… ; null = SQLite file in dataDir
  databaseSchema: string | null // PostgreSQL schema (created if missing); null = the connection's default
  modelsDir: string
  builtinModelsDir: string // models shipped with the repo (opentune/tiny-llama)
  maxUploadBytes: number
  maxJsonBodyBytes: number
  uploadStaleSeconds: number // .part files untouched this long are abandoned uploads
  shutdownGraceSeconds: number // on SIGTERM, requests still open after this long are cut off
  logLevel: string
  python: string
  maxConcurrentJobs: number
  runner: boolean // run training in the API process
  leaseSeconds: number // a runner that stops heartbeating loses its job after this long
  // a trainer that prints no protocol line for max(this, 4 × its slowest step) is hung: killed
  trainerSilenceSeconds: number
  trainerDir: string // the Python package, put on PYTHONPATH
  trainerDevice: string // auto | cpu | cuda
  childEnv: Readonly<Record<string, string | undefined>> // the environment child processes inherit
}

const REPO_ROOT = resolve(import.meta.dirname, '..')

export function loadConfig (env: Record<string, string | undefined> = process.env): Readonly<Config> {
  const problems: string[] = []
  const int = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = env[name]
    if (raw === undefined || raw === '') return fallback
    const n = Number(raw)
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`)
      return fallback
    }
    return n
  }
  const databaseUrl = env.OPENTUNE_DATABASE_URL || null
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('OPENTUNE_DATABASE_URL must start with postgres:// or postgresql://')
  }
  const databaseSchema = env.OPENTUNE_DATABASE_SCHEMA || null
  if (databaseSchema !== null && !/^[a-z_][a-z0-9_]{0,62}$/.test(databaseSchema)) {
    problems.push('OPENTUNE_DATABASE_SCHEMA must be a lower-case SQL identifier')
  }
  const dataDir = resolve(env.OPENTUNE_DATA_DIR || './data')
  const config: Config = {
    host: env.HOST || '127.0.0.1',
    port: int('PORT', 8000, 0, 65535),
    dataDir,
    databaseUrl,
    databaseSchema,
    modelsDir: resolve(env.OPENTUNE_MODELS_DIR || resolve(dataDir, 'models')),
    builtinModelsDir: resolve(REPO_ROOT, 'models'),
    maxUploadBytes: int('OPENTUNE_MAX_UPLOAD_BYTES', 5 * 1024 ** 3, 1),
    maxJsonBodyBytes: int('OPENTUNE_MAX_JSON_BODY_BYTES', 1024 * 1024, 1024),
    uploadStaleSeconds: int('OPENTUNE_UPLOAD_STALE_SECONDS', 3600, 0),
    shutdownGraceSeconds: int('OPENTUNE_SHUTDOWN_GRACE_SECONDS', 10, 0, 3600),
    logLevel: env.LOG_LEVEL || 'info',
    python: env.OPENTUNE_PYTHON || defaultPython(),
    maxConcurrentJobs: int('OPENTUNE_MAX_CONCURRENT_JOBS', 1, 0, 64),
    runner: env.OPENTUNE_RUNNER !== '0' && env.OPENTUNE_RUNNER !== 'false',
    leaseSeconds: int('OPENTUNE_LEASE_SECONDS', 30, 1, 3600),
    trainerSilenceSeconds: int('OPENTUNE_TRAINER_SILENCE_SECONDS', 120, 1, 86_400),
    trainerDir: resolve(REPO_ROOT, 'trainer'),
    trainerDevice: env.OPENTUNE_DEVICE || 'auto',
    childEnv: Object.freeze({ ...env }),
  }
  if (!['auto', 'cpu', 'cuda'].includes(config.trainerDevice)) problems.push('OPENTUNE_DEVICE must be auto, cpu or cuda')
  if (problems.length > 0) throw new Error(`invalid configuration:\n  ${problems.join('\n  ')}`)
  return Object.freeze(config)
}

// `npm run setup` makes .venv with PyTorch from pip; where pip could not, it installed Debian's
// python3-torch under /usr/bin/python3 (a pyenv python3 earlier on PATH usually has no torch).
function defaultPython (): string {
  const venv = resolve(REPO_ROOT, '.venv', 'bin', 'python')
  if (existsSync(venv)) return venv
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
}

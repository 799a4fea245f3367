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
  gpus: readonly number[] | null // OPENTUNE_GPUS: device ids jobs may get; null = every GPU nvidia-smi lists
  gpusPerJob: number // GPUs a job gets unless it asks (extra_body {"opentune": {"gpus": N}}): docs/multi-gpu.md
  stopGraceMaxSeconds: number // the longest wait from SIGTERM to SIGKILL for a trainer that says it needs it
  childEnv: Readonly<Record<string, string | undefined>> // the environment child processes inherit
  inference: InferenceConfig
  eventStream: EventStreamConfig
  executor: 'local' | 'slurm' // where an attempt trains (src/runner/executor.ts, docs/slurm.md)
  slurm: SlurmConfig
  webhooks: WebhooksConfig
  trackers: TrackersConfig
  hub: HubConfig
}

// The Hugging Face Hub (src/hub/): base models and checkpoints downloaded, results pushed. The names are
// huggingface_hub's own, so a machine set up for it needs nothing new.
export interface HubConfig {
  endpoint: string // HF_ENDPOINT: the Hub or a mirror of it
  token: string | null // HF_TOKEN: for gated and private repositories (a request's from_checkpoint.token wins)
  offline: boolean // HF_HUB_OFFLINE=1: nothing is downloaded; a model not on disk is refused
}

// W&B and MLflow runs of a job's `integrations` (src/trackers/): sent beside training, never in its way
export interface TrackersConfig {
  wandbBaseUrl: string // W&B's API host (a W&B Server, or a test's stand-in)
  requestTimeoutMs: number // one request to a tracker; a slower one is abandoned and retried
  attempts: number // tries of one request before its steps are given up (an event says so)
  backoffMs: number // wait before the 2nd try, doubled for each later one (up to 30 s)
  flushMs: number // once the job ends, what is still queued gets at most this long to be sent
  queueSteps: number // steps waiting per run; beyond it the oldest are dropped (and counted)
}

// Webhook deliveries from the outbox (src/webhooks/delivery.ts)
export interface WebhooksConfig {
  deliver: boolean // this service process sends due deliveries
  pollMs: number // how often the outbox is read for due deliveries
  timeoutMs: number // one attempt: a receiver that has not answered by then failed
  maxAgeSeconds: number // retries stop this long after the event (or a replay)
  retryBaseMs: number // the first retry's delay; each next one doubles, up to retryMaxMs, with jitter
  retryMaxMs: number
}

// OPENTUNE_EXECUTOR=slurm: each attempt is one sbatch job (src/runner/slurm/, docs/slurm.md)
export interface SlurmConfig {
  partition: string | null // sbatch --partition; null: the cluster's default
  account: string | null // sbatch --account
  qos: string | null // sbatch --qos
  gpusPerNode: number // --gres=gpu:N; 0: CPU only. More than one GPU in all: srun + torchrun
  nodes: number // --nodes
  timeLimit: string | null // sbatch --time (e.g. 2-00:00:00); null: the partition's default
  sbatchOptions: readonly string[] // extra sbatch arguments, split on whitespace
  python: string // the Python (with PyTorch) on the compute nodes
  pollMs: number // how often squeue and the protocol file are read
}

// GET …/events?stream=true (src/fine-tuning/event-stream.ts)
export interface EventStreamConfig {
  pollMs: number // SQLite: how often a watched job is read for other processes' events
  pgPollMs: number // PostgreSQL: the same, as a safety net behind LISTEN/NOTIFY
  pingMs: number // `: ping` on an open stream
  maxBufferBytes: number // a client's unread bytes beyond this: disconnected (it resumes with Last-Event-ID)
}

export interface InferenceConfig {
  engine: 'embedded' | 'vllm' // embedded: our Python worker (docs/inference-protocol.md); vllm: a vLLM server
  maxBatch: number // sequences decoded together per base model by the embedded worker
  maxQueued: number // requests waiting beyond the running batch; more get 429 + Retry-After
  memoryGb: number // the embedded worker's budget for loaded weights, adapters and KV cache
  idleSeconds: number // the embedded worker unloads a model unused this long
  device: string // auto | cpu | cuda, for the embedded worker
  vllmUrl: string | null // base URL of the vLLM OpenAI server (…:8000, without /v1)
  vllmApiKey: string | null // sent as Bearer to vLLM when it was started with --api-key
  vllmMaxLoraRank: number // the server's --max-lora-rank (vLLM's default 16): larger adapters are refused at deploy
  // where vLLM reads opentune's data dir (shared storage mounted elsewhere); null: the same path
  vllmDataDir: string | null
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
  const number = (name: string, fallback: number): number => {
    const raw = env[name]
    if (raw === undefined || raw === '') return fallback
    const n = Number(raw)
    if (!Number.isFinite(n) || n <= 0) problems.push(`${name} must be a positive number, got ${JSON.stringify(raw)}`)
    return Number.isFinite(n) && n > 0 ? n : fallback
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
    gpus: gpuList(env.OPENTUNE_GPUS, problems),
    gpusPerJob: int('OPENTUNE_GPUS_PER_JOB', 1, 1, 64),
    stopGraceMaxSeconds: int('OPENTUNE_STOP_GRACE_MAX_SECONDS', 300, 1, 86_400),
    childEnv: Object.freeze({ ...env }),
    inference: Object.freeze({
      engine: (env.OPENTUNE_INFERENCE || 'embedded') as InferenceConfig['engine'],
      maxBatch: int('OPENTUNE_INFERENCE_MAX_BATCH', 32, 1, 1024),
      maxQueued: int('OPENTUNE_INFERENCE_MAX_QUEUED', 256, 0, 100_000),
      memoryGb: number('OPENTUNE_INFERENCE_MEMORY_GB', 8),
      idleSeconds: int('OPENTUNE_INFERENCE_IDLE_SECONDS', 900, 1),
      device: env.OPENTUNE_INFERENCE_DEVICE || env.OPENTUNE_DEVICE || 'auto',
      vllmUrl: env.OPENTUNE_VLLM_URL ? env.OPENTUNE_VLLM_URL.replace(/\/+$/, '').replace(/\/v1$/, '') : null,
      vllmApiKey: env.OPENTUNE_VLLM_API_KEY || null,
      vllmMaxLoraRank: int('OPENTUNE_VLLM_MAX_LORA_RANK', 16, 1, 4096),
      vllmDataDir: env.OPENTUNE_VLLM_DATA_DIR ? env.OPENTUNE_VLLM_DATA_DIR.replace(/\/+$/, '') : null,
    }),
    executor: (env.OPENTUNE_EXECUTOR || 'local') as Config['executor'],
    slurm: Object.freeze({
      partition: env.OPENTUNE_SLURM_PARTITION || null,
      account: env.OPENTUNE_SLURM_ACCOUNT || null,
      qos: env.OPENTUNE_SLURM_QOS || null,
      gpusPerNode: int('OPENTUNE_SLURM_GPUS_PER_NODE', 0, 0, 64),
      nodes: int('OPENTUNE_SLURM_NODES', 1, 1, 4096),
      timeLimit: env.OPENTUNE_SLURM_TIME_LIMIT || null,
      sbatchOptions: Object.freeze((env.OPENTUNE_SLURM_SBATCH_OPTIONS ?? '').split(/\s+/).filter(Boolean)),
      python: env.OPENTUNE_SLURM_PYTHON || env.OPENTUNE_PYTHON || defaultPython(),
      pollMs: int('OPENTUNE_SLURM_POLL_MS', 1000, 10, 600_000),
    }),
    eventStream: Object.freeze({
      pollMs: int('OPENTUNE_EVENTS_POLL_MS', 500, 10, 3_600_000),
      pgPollMs: int('OPENTUNE_EVENTS_PG_POLL_MS', 5000, 10, 3_600_000),
      pingMs: int('OPENTUNE_EVENTS_PING_MS', 15_000, 10, 3_600_000),
      maxBufferBytes: int('OPENTUNE_EVENTS_CLIENT_BUFFER_BYTES', 1024 * 1024, 1024),
    }),
    webhooks: Object.freeze({
      deliver: env.OPENTUNE_WEBHOOKS_DELIVER !== '0' && env.OPENTUNE_WEBHOOKS_DELIVER !== 'false',
      pollMs: int('OPENTUNE_WEBHOOKS_POLL_MS', 1000, 10, 3_600_000),
      timeoutMs: int('OPENTUNE_WEBHOOKS_TIMEOUT_MS', 10_000, 100, 600_000),
      maxAgeSeconds: int('OPENTUNE_WEBHOOKS_MAX_AGE_SECONDS', 72 * 3600, 1),
      retryBaseMs: int('OPENTUNE_WEBHOOKS_RETRY_BASE_MS', 10_000, 1),
      retryMaxMs: int('OPENTUNE_WEBHOOKS_RETRY_MAX_MS', 6 * 3600 * 1000, 1),
    }),
    trackers: Object.freeze({
      wandbBaseUrl: (env.WANDB_BASE_URL || 'https://api.wandb.ai').replace(/\/+$/, ''),
      requestTimeoutMs: int('OPENTUNE_TRACKER_TIMEOUT_MS', 10_000, 1, 3_600_000),
      attempts: int('OPENTUNE_TRACKER_ATTEMPTS', 5, 1, 100),
      backoffMs: int('OPENTUNE_TRACKER_BACKOFF_MS', 1000, 0, 600_000),
      flushMs: int('OPENTUNE_TRACKER_FLUSH_MS', 15_000, 0, 3_600_000),
      queueSteps: int('OPENTUNE_TRACKER_QUEUE_STEPS', 10_000, 1, 10_000_000),
    }),
    hub: Object.freeze({
      endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
      token: env.HF_TOKEN || null,
      offline: ['1', 'true', 'yes', 'on'].includes((env.HF_HUB_OFFLINE ?? '').toLowerCase()),
    }),
  }
  if (!['auto', 'cpu', 'cuda'].includes(config.trainerDevice)) problems.push('OPENTUNE_DEVICE must be auto, cpu or cuda')
  if (!['local', 'slurm'].includes(config.executor)) problems.push('OPENTUNE_EXECUTOR must be local or slurm')
  if (!['embedded', 'vllm'].includes(config.inference.engine)) problems.push('OPENTUNE_INFERENCE must be embedded or vllm')
  if (config.inference.engine === 'vllm' && !config.inference.vllmUrl) problems.push('OPENTUNE_INFERENCE=vllm needs OPENTUNE_VLLM_URL')
  if (!['auto', 'cpu', 'cuda'].includes(config.inference.device)) problems.push('OPENTUNE_INFERENCE_DEVICE must be auto, cpu or cuda')
  if (problems.length > 0) throw new Error(`invalid configuration:\n  ${problems.join('\n  ')}`)
  return Object.freeze(config)
}

// OPENTUNE_GPUS: "0,1,3" (CUDA device ids), "none" (train on the CPU), unset: all nvidia-smi lists
function gpuList (raw: string | undefined, problems: string[]): readonly number[] | null {
  if (raw === undefined || raw.trim() === '') return null
  if (raw.trim() === 'none') return Object.freeze([])
  const ids = raw.split(',').map(s => s.trim())
  if (!ids.every(s => /^\d{1,3}$/.test(s)) || new Set(ids).size !== ids.length) {
    problems.push(`OPENTUNE_GPUS must be distinct device ids separated by commas (e.g. 0,1) or none, got ${JSON.stringify(raw)}`)
    return null
  }
  return Object.freeze(ids.map(Number))
}

// `npm run setup` makes .venv with PyTorch from pip; where pip could not, it installed Debian's
// python3-torch under /usr/bin/python3 (a pyenv python3 earlier on PATH usually has no torch).
function defaultPython (): string {
  const venv = resolve(REPO_ROOT, '.venv', 'bin', 'python')
  if (existsSync(venv)) return venv
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
}

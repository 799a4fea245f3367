// `opentune doctor`: what the trainer will run on — the interpreter the service starts, its PyTorch,
// the CUDA devices it sees, bf16 and the attention kernels — so a GPU user can tell before a job
// whether it would train on the GPU. The facts come from the trainer itself (opentune_trainer doctor).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Config } from '../config.js'
import { trainerEnv } from './trainer-env.js'

interface CudaDevice { index: number, name: string, memory_gib: number, compute_capability: string, bf16: boolean }

export interface DoctorReport {
  python: string
  python_version: string
  torch: string | null
  transformers: string | null
  peft: string | null
  device: 'cpu' | 'cuda' | null
  cuda_build?: string | null
  cuda_devices?: CudaDevice[]
  bf16?: boolean
  cpu_threads?: number
  attention?: Record<string, boolean | string>
  compiler?: string | null
  problem?: string
}

export async function trainerReport (config: Readonly<Config>): Promise<DoctorReport> {
  const { stdout } = await promisify(execFile)(config.python, ['-m', 'opentune_trainer', 'doctor'], {
    env: trainerEnv(config), cwd: config.trainerDir, timeout: 120_000,
  })
  return JSON.parse(stdout) as DoctorReport
}

export function formatReport (config: Readonly<Config>, r: DoctorReport): string[] {
  const lines = [
    `python       ${r.python} (${r.python_version})${config.python.endsWith('/.venv/bin/python') ? '' : '  [not the .venv npm run setup makes]'}`,
    `torch        ${r.torch ?? 'NOT INSTALLED'}${r.cuda_build ? ` (CUDA ${r.cuda_build} build)` : r.torch ? ' (CPU build)' : ''}`,
    `transformers ${r.transformers ?? '-'}    peft ${r.peft ?? '-'}`,
    `device       ${r.device ?? '-'}${config.trainerDevice === 'auto' ? '' : ` (OPENTUNE_DEVICE=${config.trainerDevice})`}`,
  ]
  for (const d of r.cuda_devices ?? []) {
    lines.push(`  cuda:${d.index}     ${d.name}, ${d.memory_gib} GiB, compute ${d.compute_capability}, bf16 ${d.bf16 ? 'yes' : 'no'}`)
  }
  if (r.attention) {
    const kernels = Object.entries(r.attention).filter(([k, v]) => k !== 'selected' && v === true).map(([k]) => k)
    lines.push(`attention    ${String(r.attention.selected)} (available: ${kernels.join(', ') || 'eager only'})`)
  }
  if (r.cpu_threads !== undefined) lines.push(`cpu threads  ${r.cpu_threads}`)
  if (r.compiler !== undefined) lines.push(`compiler     ${r.compiler ?? 'none (torch.compile falls back to eager)'}`)
  if (r.problem) lines.push(`PROBLEM      ${r.problem}`)
  return lines
}

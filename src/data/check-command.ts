import { parseArgs } from 'node:util'
import { HYPERPARAMETER_DEFAULTS } from '../fine-tuning/hyperparameters.js'
import { formatProblems, ModelFolderError, prepareDataset, type PrepareResult } from './index.js'

const USAGE = 'usage: opentune data check <file.jsonl> --model-dir <dir> [--context-length N] [--no-packing] [--batch-size N] [--json]'

interface CheckArgs {
  file: string
  modelDir: string
  contextLength: number
  packing: boolean
  batchSize: number
  json: boolean
}

/**
 * `opentune data check`: validates a dataset against a model exactly as a job would, and prints
 * the problems or the token counts. Exit code 0 = valid, 1 = problems, 2 = bad usage or model folder.
 */
export async function dataCheckCommand (args: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let parsed: CheckArgs
  try {
    parsed = parseCheckArgs(args)
  } catch (error) {
    out.write(`${(error as Error).message}\n${USAGE}\n`)
    return 2
  }
  let result: PrepareResult
  try {
    result = await prepareDataset({ path: parsed.file, split: 'train', modelDir: parsed.modelDir, contextLength: parsed.contextLength, packing: parsed.packing, batchSize: parsed.batchSize })
  } catch (error) {
    if (!(error instanceof ModelFolderError) && (error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    out.write(`${(error as Error).message}\n`)
    return 2
  }
  out.write(parsed.json ? JSON.stringify(jsonReport(parsed, result), null, 2) + '\n' : humanReport(parsed, result))
  return result.ok ? 0 : 1
}

function parseCheckArgs (args: string[]): CheckArgs {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'model-dir': { type: 'string' },
      'context-length': { type: 'string' },
      'batch-size': { type: 'string' },
      'no-packing': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  })
  const file = positionals[0]
  if (file === undefined || positionals.length > 1) throw new Error('expected exactly one dataset file')
  const modelDir = values['model-dir']
  if (modelDir === undefined) throw new Error('--model-dir is required')
  return {
    file,
    modelDir,
    contextLength: positiveInteger(values['context-length'], '--context-length', HYPERPARAMETER_DEFAULTS.context_length),
    batchSize: positiveInteger(values['batch-size'], '--batch-size', HYPERPARAMETER_DEFAULTS.batch_size),
    packing: !values['no-packing'],
    json: values.json,
  }
}

function positiveInteger (raw: string | undefined, flag: string, fallback: number): number {
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${flag} must be a positive integer (got ${JSON.stringify(raw)})`)
  return value
}

function jsonReport (args: CheckArgs, result: PrepareResult): unknown {
  return { file: args.file, ...datasetReport(result, args.batchSize) }
}

/** What `opentune data check --json` and POST /v1/files/{file_id}/check report (after `file`). */
export function datasetReport (result: PrepareResult, batchSize: number): Record<string, unknown> {
  if (!result.ok) return { ok: false, total_problems: result.totalProblems, problems: result.problems }
  const { stats } = result
  return {
    ok: true,
    format: stats.format,
    examples: stats.examples,
    rows: stats.rows,
    tokens: stats.tokens,
    loss_tokens: stats.lossTokens,
    seq_len: stats.seqLen,
    packing: stats.packing,
    batch_size: batchSize,
    steps_per_epoch: stats.stepsPerEpoch,
  }
}

function humanReport (args: CheckArgs, result: PrepareResult): string {
  if (!result.ok) return `${args.file}: invalid\n${formatProblems(result)}\n`
  const { stats } = result
  const n = (value: number): string => value.toLocaleString('en-US')
  const share = stats.tokens === 0 ? 0 : (100 * stats.lossTokens) / stats.tokens
  return [
    `${args.file}: valid (${stats.format} format)`,
    `  examples         ${n(stats.examples)}`,
    `  tokens           ${n(stats.tokens)}`,
    `  trained tokens   ${n(stats.lossTokens)} (${share.toFixed(1)}%)`,
    `  rows             ${n(stats.rows)} (seq_len ${n(stats.seqLen)}, packing ${stats.packing ? 'on' : 'off'})`,
    `  steps per epoch  ${n(stats.stepsPerEpoch)} (batch size ${args.batchSize})`,
    '',
  ].join('\n')
}

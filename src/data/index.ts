/**
 * The data pipeline: a JSONL dataset in one of the four Nebius formats → token shards + manifest
 * for the trainer (docs/trainer-protocol.md §1, docs/datasets.md).
 *
 *   const result = await prepareDataset({ path, split: 'train', modelDir, contextLength: 8192,
 *     packing: true, batchSize: 8, outDir: '/jobs/ftjob-…/data/train' })
 *   if (!result.ok) fail('invalid_training_file', formatProblems(result))
 */
import { stat } from 'node:fs/promises'
import type { DatasetFormat } from './examples.js'
import { readJsonlLines } from './jsonl-reader.js'
import { loadModelTokenizer, type ModelTokenizer } from './model.js'
import { SplitOutput, type Split } from './output.js'
import { RowPacker } from './packer.js'
import { DatasetPipeline } from './pipeline.js'
import { prepareModelInfo } from './prepare-batch.js'
import { inlinePreparer, workerPreparer } from './preparer.js'
import { ProblemCollector, type DatasetProblem } from './problems.js'

export { formatProblems, type DatasetProblem } from './problems.js'
export { loadModelTokenizer, ModelFolderError, type ModelTokenizer } from './model.js'
export { DEFAULT_MAX_LINE_BYTES } from './jsonl-reader.js'
export type { DatasetFormat } from './examples.js'
export type { Split, TokenManifest } from './output.js'

export interface PrepareDatasetOptions {
  /** The JSONL file. */
  path: string
  split: Split
  modelDir: string
  /** The job's `context_length`; the effective length is capped by the model's `max_position_embeddings`. */
  contextLength: number
  packing: boolean
  /** Rows per optimizer step, for `stepsPerEpoch`. */
  batchSize: number
  /** Where the split's folder goes (replaced atomically). Omit to validate and count only. */
  outDir?: string | null
  signal?: AbortSignal
  /** Reuse a tokenizer already loaded (train and valid splits of one job share it). */
  model?: ModelTokenizer
  /** Longest accepted line in bytes (default 32 MiB). */
  maxLineBytes?: number
  /** Tokens per shard before a new shard starts (default 256M). */
  maxShardTokens?: number
  /**
   * Validate and render in a worker thread, beside the tokenizer's threads. `auto` (default): for
   * files of 4 MiB and more, where it pays for the thread's start (~50 ms).
   */
  workerThread?: boolean | 'auto'
}

export interface DatasetStats {
  format: DatasetFormat
  examples: number
  /** Sequences the trainer will see per epoch. */
  rows: number
  tokens: number
  /** Positions whose target is trained. */
  lossTokens: number
  /** Effective context length: min(context_length, max_position_embeddings). */
  seqLen: number
  packing: boolean
  stepsPerEpoch: number
}

export type PrepareResult =
  | { ok: true, stats: DatasetStats, outDir: string | null }
  | { ok: false, problems: DatasetProblem[], totalProblems: number }

/**
 * Validates the whole file and, when it is clean and `outDir` is given, writes its token shards.
 * Dataset problems come back as `{ok: false}` (up to 10 of them, plus the total); an unusable model
 * folder throws ModelFolderError; an aborted `signal` throws its reason and leaves nothing behind.
 */
export async function prepareDataset (options: PrepareDatasetOptions): Promise<PrepareResult> {
  if (!Number.isInteger(options.contextLength) || options.contextLength < 1) throw new RangeError('contextLength must be a positive integer')
  if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw new RangeError('batchSize must be a positive integer')
  const model = options.model ?? await loadModelTokenizer(options.modelDir)
  const seqLen = effectiveSeqLen(options.contextLength, model)
  const output = options.outDir ? await SplitOutput.create(options.outDir, options.split, options.maxShardTokens) : null
  try {
    const problems = new ProblemCollector()
    const packer = new RowPacker(
      seqLen,
      options.packing,
      output === null ? () => {} : (row) => output.writer.writeRow(row)
    )
    const preparer = await useWorkerThread(options)
      ? workerPreparer(prepareModelInfo(model))
      : inlinePreparer(prepareModelInfo(model), model.chatTemplates)
    const pipeline = new DatasetPipeline(
      model,
      preparer,
      { seqLen, requestedContextLength: options.contextLength },
      packer,
      problems
    )
    const lines = readJsonlLines(options.path, {
      maxLineBytes: options.maxLineBytes,
      chunkBytes: 256 * 1024,
      signal: options.signal,
    })
    try {
      await pipeline.run(lines, options.signal)
    } finally {
      await preparer.close()
    }
    if (!problems.empty || pipeline.format === null) {
      await output?.discard()
      return { ok: false, problems: problems.kept, totalProblems: problems.total }
    }
    const stats: DatasetStats = {
      format: pipeline.format,
      examples: pipeline.examples,
      rows: packer.rows,
      tokens: pipeline.tokens,
      lossTokens: pipeline.lossTokens,
      seqLen,
      packing: options.packing,
      stepsPerEpoch: Math.ceil(packer.rows / options.batchSize),
    }
    await output?.commit({
      split: options.split,
      seq_len: seqLen,
      packing: options.packing,
      vocab_size: model.vocabSize,
      examples: stats.examples,
      rows: stats.rows,
      tokens: stats.tokens,
      loss_tokens: stats.lossTokens,
    })
    return { ok: true, stats, outDir: output?.outDir ?? null }
  } catch (error) {
    await output?.discard()
    throw error
  }
}

const WORKER_THREAD_MIN_BYTES = 4 * 1024 * 1024

async function useWorkerThread (options: PrepareDatasetOptions): Promise<boolean> {
  const setting = options.workerThread ?? 'auto'
  if (setting !== 'auto') return setting
  try {
    return (await stat(options.path)).size >= WORKER_THREAD_MIN_BYTES
  } catch {
    return false // the reader reports the missing file
  }
}

export function effectiveSeqLen (contextLength: number, model: Pick<ModelTokenizer, 'maxPositionEmbeddings'>): number {
  return Math.min(contextLength, model.maxPositionEmbeddings ?? contextLength)
}

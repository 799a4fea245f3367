import type { DatasetFormat, TokenizedDoc } from './examples.js'
import type { JsonlItem } from './jsonl-reader.js'
import type { ModelTokenizer } from './model.js'
import type { RowPacker } from './packer.js'
import type { PreparedBatch } from './prepare-batch.js'
import type { Preparer } from './preparer.js'
import type { DatasetProblem, ProblemCollector } from './problems.js'
import { tokenizePlans } from './tokenize.js'

export interface PipelineLimits {
  /** Effective context length: no document may be longer. */
  seqLen: number
  /** What the user asked for, to explain the limit in messages. */
  requestedContextLength: number
}

/** Chunks of lines between reading and writing: enough to keep both cores busy, few enough for flat memory. */
const MAX_CHUNKS_IN_FLIGHT = 3

/**
 * Read → prepare (JSON, validation, templates) → tokenize → check → pack, one chunk of lines at a
 * time, several chunks in flight: while the tokenizer's native threads work on one chunk, the
 * preparer works on the next. Results are finished strictly in file order. Once any problem is
 * found nothing more is packed, but every line is still checked so the report is complete.
 */
export class DatasetPipeline {
  examples = 0
  tokens = 0
  lossTokens = 0

  constructor (
    private readonly model: ModelTokenizer,
    private readonly preparer: Preparer,
    private readonly limits: PipelineLimits,
    private readonly packer: RowPacker,
    private readonly problems: ProblemCollector
  ) {}

  get format (): DatasetFormat | null {
    return this.preparer.format
  }

  async run (chunks: AsyncIterable<JsonlItem[]>, signal?: AbortSignal): Promise<void> {
    let finished: Promise<void> = Promise.resolve()
    const inFlight: Array<Promise<void>> = []
    for await (const items of chunks) {
      signal?.throwIfAborted()
      const tokenized = this.preparer.prepare(items)
        .then(async (batch) => ({ batch, docs: await tokenizePlans(this.model, batch.plans) }))
      // Chained at once so a failure is never an unhandled rejection; finishes stay in line order.
      finished = Promise.all([finished, tokenized]).then(([, { batch, docs }]) => this.finish(batch, docs))
      finished.catch(() => {})
      inFlight.push(finished)
      if (inFlight.length >= MAX_CHUNKS_IN_FLIGHT) await inFlight.shift()
      if (this.preparer.stopped) break
    }
    await finished
    this.packer.finish()
    if (this.examples === 0 && this.problems.empty) this.problems.add(null, 'the file has no examples (it is empty or holds only blank lines)')
  }

  private finish (batch: PreparedBatch, tokenized: TokenizedDoc[]): void {
    const docs = batch.docs.length > 0 ? batch.docs.concat(tokenized) : tokenized
    const problems = batch.problems
    const accepted: TokenizedDoc[] = []
    for (const doc of docs) {
      const problem = this.checkDoc(doc)
      if (problem === null) accepted.push(doc)
      else problems.push(problem)
    }
    this.examples += docs.length
    problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0))
    for (const problem of problems) this.problems.add(problem.line, problem.message, problem.param)
    if (!this.problems.empty) return
    for (const doc of accepted) {
      this.tokens += doc.tokens.length
      this.lossTokens += doc.lossTokens
      this.packer.add(doc)
    }
  }

  private checkDoc (doc: TokenizedDoc): DatasetProblem | null {
    const { seqLen, requestedContextLength } = this.limits
    const length = doc.tokens.length
    if (length > seqLen) {
      const why = seqLen < requestedContextLength ? `the model's max_position_embeddings; context_length asked for ${requestedContextLength}` : 'context_length'
      return { line: doc.line, message: `the example is ${length} tokens long, more than the context length of ${seqLen} (${why}); shorten or split it, examples are never truncated` }
    }
    if (doc.lossTokens === 0) return { line: doc.line, message: 'the example has no trained tokens (every label is -100)' }
    const bos = this.model.bosId
    if (bos !== null && length > 1 && doc.tokens[0] === bos && doc.tokens[1] === bos) {
      return { line: doc.line, message: 'the example starts with two BOS tokens' }
    }
    return null
  }
}

import { ChatRenderer } from './chat-template.js'
import type { DatasetFormat, TokenizedDoc } from './examples.js'
import type { JsonlItem } from './jsonl-reader.js'
import type { ModelTokenizer } from './model.js'
import type { RowPacker } from './packer.js'
import { ExampleError, type DatasetProblem, type ProblemCollector } from './problems.js'
import { makeSpecialTokenFinder } from './special-tokens.js'
import { planExample, pretokenizedDoc, tokenizePlans, type TokenPlan } from './tokenize.js'
import { detectFormat, missingFieldsMessage, parseRecord, validateRecord, type ValidationContext } from './validate.js'

interface PreparedBatch {
  /** Pretokenized documents, ready as they are. */
  docs: TokenizedDoc[]
  plans: TokenPlan[]
  problems: DatasetProblem[]
}

export interface PipelineLimits {
  /** Effective context length: no document may be longer. */
  seqLen: number
  /** What the user asked for, to explain the limit in messages. */
  requestedContextLength: number
}

/**
 * Read → validate → template → tokenize → check → pack, one chunk of lines at a time. The JS
 * work of a chunk (JSON, validation, templates) overlaps the native tokenization of the previous
 * one; at most two chunks are in flight, so memory does not grow with the file. Once any problem
 * is found nothing more is packed, but every line is still checked so the report is complete.
 */
export class DatasetPipeline {
  format: DatasetFormat | null = null
  examples = 0
  tokens = 0
  lossTokens = 0
  private formatLine = 0
  private stopped = false
  private renderer: ChatRenderer | null = null
  private readonly validation: ValidationContext

  constructor (
    private readonly model: ModelTokenizer,
    private readonly limits: PipelineLimits,
    private readonly packer: RowPacker,
    private readonly problems: ProblemCollector
  ) {
    this.validation = { vocabSize: model.vocabSize, findSpecialToken: makeSpecialTokenFinder(model.specialTokens) }
  }

  async run (batches: AsyncIterable<JsonlItem[]>, signal?: AbortSignal): Promise<void> {
    let inFlight: Promise<void> = Promise.resolve()
    for await (const items of batches) {
      signal?.throwIfAborted()
      const prepared = this.prepare(items)
      const previous = inFlight
      const tokenized = tokenizePlans(this.model, prepared.plans)
      // Chained at once so a failure is never an unhandled rejection; finishes stay in line order.
      inFlight = Promise.all([previous, tokenized]).then(([, docs]) => this.finish(prepared, docs))
      inFlight.catch(() => {})
      await previous
      if (this.stopped) break
    }
    await inFlight
    this.packer.finish()
    if (this.examples === 0 && this.problems.empty) this.problems.add(null, 'the file has no examples (it is empty or holds only blank lines)')
  }

  private prepare (items: JsonlItem[]): PreparedBatch {
    const batch: PreparedBatch = { docs: [], plans: [], problems: [] }
    for (const item of items) {
      if (this.stopped) break
      if ('error' in item) {
        batch.problems.push({ line: item.line, message: item.error })
        continue
      }
      try {
        this.prepareLine(item.line, item.text, batch)
      } catch (error) {
        if (!(error instanceof ExampleError)) throw error
        const problem: DatasetProblem = { line: item.line, message: error.message }
        if (error.param !== undefined) problem.param = error.param
        batch.problems.push(problem)
      }
    }
    return batch
  }

  private prepareLine (line: number, text: string, batch: PreparedBatch): void {
    const record = parseRecord(text)
    const detected = detectFormat(record)
    if (detected === null) throw new ExampleError(missingFieldsMessage(this.format))
    if (this.format === null) this.adoptFormat(detected, line)
    if (detected !== this.format) {
      throw new ExampleError(`this line is in the ${detected} format but the file is in the ${this.format} format (from line ${this.formatLine}); use one format per file`)
    }
    const example = validateRecord(record, detected, line, this.validation)
    if (example.format === 'pretokenized') batch.docs.push(pretokenizedDoc(line, example.tokenIds, example.labels))
    else batch.plans.push(planExample(example, this.model, this.renderer))
  }

  private adoptFormat (format: DatasetFormat, line: number): void {
    this.format = format
    this.formatLine = line
    if (format !== 'chat') return
    if (this.model.chatTemplates.size === 0) {
      this.stopped = true
      throw new ExampleError('the file is in the chat format but the model has no chat template (tokenizer_config.json "chat_template"); use the text, prompt/completion or token_ids format')
    }
    this.renderer = new ChatRenderer(this.model)
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

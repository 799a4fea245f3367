// The JavaScript half of the pipeline — JSON, validation, chat templates — for one chunk of lines.
// It imports no native code, so it can run in a worker thread (prepare-worker.ts) beside the
// tokenizer's threads.
import { ChatRenderer, parseChatTemplates } from './chat-template.js'
import type { DatasetExample, DatasetFormat, TokenizedDoc } from './examples.js'
import type { JsonlItem } from './jsonl-reader.js'
import type { ModelTokenizer } from './model.js'
import { ExampleError, type DatasetProblem } from './problems.js'
import { makeSpecialTokenFinder } from './special-tokens.js'
import { pretokenizedDoc, type TokenPlan } from './tokenize.js'
import { detectFormat, missingFieldsMessage, parseRecord, validateRecord, type ValidationContext } from './validate.js'

/** What preparing needs from the model; plain data, so it can be sent to a worker thread. */
export interface PrepareModelInfo {
  vocabSize: number
  specialTokens: string[]
  chatTemplateSource: unknown
  specialTokenVars: Record<string, string>
  eosToken: string | null
  eosId: number | null
  sequencePrefixIds: number[]
  sequenceSuffixIds: number[]
}

export function prepareModelInfo (model: ModelTokenizer): PrepareModelInfo {
  const {
    vocabSize,
    specialTokens,
    chatTemplateSource,
    specialTokenVars,
    eosToken,
    eosId,
    sequencePrefixIds,
    sequenceSuffixIds,
  } = model
  return {
    vocabSize,
    specialTokens,
    chatTemplateSource,
    specialTokenVars,
    eosToken,
    eosId,
    sequencePrefixIds,
    sequenceSuffixIds,
  }
}

export interface PreparedBatch {
  /** Pretokenized documents, ready as they are. */
  docs: TokenizedDoc[]
  plans: TokenPlan[]
  problems: DatasetProblem[]
}

/** Validates and plans lines in file order; remembers the file's format from its first example. */
export class BatchPreparer {
  format: DatasetFormat | null = null
  formatLine = 0
  /** Set when going on is pointless (a chat file for a model without a chat template). */
  stopped = false
  private renderer: ChatRenderer | null = null
  private readonly validation: ValidationContext

  constructor (
    private readonly info: PrepareModelInfo,
    private readonly templates = parseChatTemplates(info.chatTemplateSource)
  ) {
    this.validation = { vocabSize: info.vocabSize, findSpecialToken: makeSpecialTokenFinder(info.specialTokens) }
  }

  prepare (items: readonly JsonlItem[]): PreparedBatch {
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
    else batch.plans.push(this.plan(example))
  }

  private adoptFormat (format: DatasetFormat, line: number): void {
    this.format = format
    this.formatLine = line
    if (format !== 'chat') return
    if (this.templates.size === 0) {
      this.stopped = true
      throw new ExampleError('the file is in the chat format but the model has no chat template (tokenizer_config.json "chat_template"); use the text, prompt/completion or token_ids format')
    }
    this.renderer = new ChatRenderer({
      chatTemplates: this.templates,
      specialTokenVars: this.info.specialTokenVars,
      eosToken: this.info.eosToken,
    })
  }

  private plan (example: Exclude<DatasetExample, { format: 'pretokenized' }>): TokenPlan {
    const line = example.line
    const eos = this.info.eosId === null ? this.info.sequenceSuffixIds : [this.info.eosId]
    switch (example.format) {
      case 'chat': {
        const { text, spans } = (this.renderer as ChatRenderer).render(example)
        return { line, text, spans, prefixIds: [], suffixIds: [] }
      }
      // Raw formats get what the tokenizer's post-processor adds (Llama: BOS) and EOS at the end.
      case 'prompt_completion': {
        const text = example.prompt + example.completion
        return {
          line,
          text,
          spans: [[example.prompt.length, text.length]],
          prefixIds: this.info.sequencePrefixIds,
          suffixIds: eos,
        }
      }
      case 'text': return {
        line,
        text: example.text,
        spans: [[0, example.text.length]],
        prefixIds: this.info.sequencePrefixIds,
        suffixIds: eos,
      }
    }
  }
}

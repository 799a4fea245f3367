import { IGNORE_INDEX, type DatasetExample, type DatasetFormat } from './examples.js'
import { describeValue, isObject, type JsonObject } from './json-values.js'
import { ExampleError } from './problems.js'
import { validateChat } from './validate-chat.js'

export interface ValidationContext {
  /** Token ids must be below this (the model's embedding size). */
  vocabSize: number
  findSpecialToken: (text: string) => string | null
}

/** The key that marks each format, and what a line of that format must hold (for error messages). */
const FORMAT_KEYS: Record<DatasetFormat, { keys: string[], required: string }> = {
  chat: { keys: ['messages'], required: '"messages"' },
  prompt_completion: { keys: ['prompt', 'completion'], required: '"prompt" and "completion"' },
  text: { keys: ['text'], required: '"text"' },
  pretokenized: { keys: ['token_ids'], required: '"token_ids"' },
}
const FORMAT_LIST = Object.entries(FORMAT_KEYS) as Array<[DatasetFormat, { keys: string[] }]>

export function parseRecord (text: string): JsonObject {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new ExampleError(`not valid JSON: ${(error as Error).message}`)
  }
  if (!isObject(value)) throw new ExampleError(`expected a JSON object, got ${describeValue(value)}`)
  return value
}

/** Which format a record is written in; null when it has none of the formats' keys. */
export function detectFormat (record: JsonObject): DatasetFormat | null {
  let found: DatasetFormat | null = null
  for (const [format, { keys }] of FORMAT_LIST) {
    if (!keys.some((key) => record[key] !== undefined)) continue
    if (found !== null) {
      throw new ExampleError(`the line mixes the fields of two formats (${found} and ${format}); use one format per line and per file`)
    }
    found = format
  }
  return found
}

export function missingFieldsMessage (format: DatasetFormat | null): string {
  if (format !== null) return `missing ${FORMAT_KEYS[format].required}`
  return 'expected one of the dataset formats: {"messages": […]}, {"prompt": …, "completion": …}, {"text": …} or {"token_ids": […]}'
}

export function validateRecord (
  record: JsonObject,
  format: DatasetFormat,
  line: number,
  context: ValidationContext
): DatasetExample {
  switch (format) {
    case 'chat': return validateChat(record, line, context)
    case 'prompt_completion': return {
      format,
      line,
      prompt: requireText(record, 'prompt'),
      completion: requireText(record, 'completion'),
    }
    case 'text': return { format, line, text: requireText(record, 'text') }
    case 'pretokenized': return validatePretokenized(record, line, context)
  }
}

function requireText (record: JsonObject, key: string): string {
  const value = record[key]
  if (typeof value !== 'string') throw new ExampleError(`"${key}" must be a string (got ${describeValue(value)})`, key)
  if (value.trim() === '') throw new ExampleError(`"${key}" is empty`, key)
  return value
}

function validatePretokenized (record: JsonObject, line: number, context: ValidationContext): DatasetExample {
  const tokenIds = record.token_ids
  if (!Array.isArray(tokenIds) || tokenIds.length === 0) {
    throw new ExampleError(`"token_ids" must be a non-empty array of token ids (got ${describeValue(tokenIds)})`, 'token_ids')
  }
  checkIds(tokenIds, 'token_ids', context.vocabSize, false)
  const labels = record.labels
  if (labels === undefined || labels === null) return { format: 'pretokenized', line, tokenIds, labels: null }
  if (!Array.isArray(labels)) throw new ExampleError(`"labels" must be an array (got ${describeValue(labels)})`, 'labels')
  if (labels.length !== tokenIds.length) {
    throw new ExampleError(`"labels" has ${labels.length} entries but "token_ids" has ${tokenIds.length}; they must be aligned one to one`, 'labels')
  }
  checkIds(labels, 'labels', context.vocabSize, true)
  return { format: 'pretokenized', line, tokenIds, labels }
}

function checkIds (ids: unknown[], key: string, vocabSize: number, allowIgnore: boolean): asserts ids is number[] {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]
    if (typeof id === 'number' && Number.isInteger(id) && ((id >= 0 && id < vocabSize) || (allowIgnore && id === IGNORE_INDEX))) continue
    const allowed = allowIgnore ? `${IGNORE_INDEX} or a token id in [0, ${vocabSize})` : `a token id in [0, ${vocabSize})`
    throw new ExampleError(`${key}[${i}] must be ${allowed} (got ${describeValue(id)})`, `${key}[${i}]`)
  }
}

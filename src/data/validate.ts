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
  // input_ids (+ attention_mask): the Nebius Custom Speculator rows, Hugging Face's names
  pretokenized: { keys: ['token_ids', 'input_ids'], required: '"token_ids" (or "input_ids")' },
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
  return 'expected one of the dataset formats: {"messages": […]}, {"prompt": …, "completion": …}, {"text": …} or {"token_ids": […]} ({"input_ids": […]})'
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
  if (record.token_ids !== undefined && record.input_ids !== undefined) {
    throw new ExampleError('the line has both "token_ids" and "input_ids", two names for the same field; give one', 'input_ids')
  }
  const key = record.token_ids !== undefined ? 'token_ids' : 'input_ids'
  const tokenIds = record[key]
  if (!Array.isArray(tokenIds) || tokenIds.length === 0) {
    throw new ExampleError(`"${key}" must be a non-empty array of token ids (got ${describeValue(tokenIds)})`, key)
  }
  const mask = attentionMask(record, key, tokenIds.length)
  checkIds(tokenIds, key, context.vocabSize, false, mask)
  const labels = record.labels
  if (labels === undefined || labels === null) return { format: 'pretokenized', line, tokenIds: unmasked(tokenIds, mask), labels: null }
  if (!Array.isArray(labels)) throw new ExampleError(`"labels" must be an array (got ${describeValue(labels)})`, 'labels')
  if (labels.length !== tokenIds.length) {
    throw new ExampleError(`"labels" has ${labels.length} entries but "${key}" has ${tokenIds.length}; they must be aligned one to one`, 'labels')
  }
  checkIds(labels, 'labels', context.vocabSize, true, mask)
  return { format: 'pretokenized', line, tokenIds: unmasked(tokenIds, mask), labels: unmasked(labels, mask) }
}

/** Hugging Face's attention_mask (optional): 1 keeps a position, 0 marks padding, which is dropped
 *  with its label (packing puts documents side by side: padding inside a row would be trained on). */
function attentionMask (record: JsonObject, key: string, length: number): number[] | null {
  const mask = record.attention_mask
  if (mask === undefined || mask === null) return null
  if (!Array.isArray(mask)) throw new ExampleError(`"attention_mask" must be an array of 0 and 1 (got ${describeValue(mask)})`, 'attention_mask')
  if (mask.length !== length) {
    throw new ExampleError(`"attention_mask" has ${mask.length} entries but "${key}" has ${length}; they must be aligned one to one`, 'attention_mask')
  }
  const bad = mask.findIndex(v => v !== 0 && v !== 1)
  if (bad >= 0) throw new ExampleError(`attention_mask[${bad}] must be 0 or 1 (got ${describeValue(mask[bad])})`, `attention_mask[${bad}]`)
  if (!mask.includes(1)) throw new ExampleError('"attention_mask" is 0 everywhere: the line has no tokens', 'attention_mask')
  return mask as number[]
}

const unmasked = (ids: number[], mask: number[] | null) => (mask ? ids.filter((_id, i) => mask[i] === 1) : ids)

/** Positions the mask drops (padding) are not checked: whatever a tokenizer pads with is dropped. */
function checkIds (
  ids: unknown[],
  key: string,
  vocabSize: number,
  allowIgnore: boolean,
  mask: number[] | null = null
): asserts ids is number[] {
  for (let i = 0; i < ids.length; i++) {
    if (mask?.[i] === 0) continue
    const id = ids[i]
    if (typeof id === 'number' && Number.isInteger(id) && ((id >= 0 && id < vocabSize) || (allowIgnore && id === IGNORE_INDEX))) continue
    const allowed = allowIgnore ? `${IGNORE_INDEX} or a token id in [0, ${vocabSize})` : `a token id in [0, ${vocabSize})`
    throw new ExampleError(`${key}[${i}] must be ${allowed} (got ${describeValue(id)})`, `${key}[${i}]`)
  }
}

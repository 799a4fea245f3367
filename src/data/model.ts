import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Template } from '@huggingface/jinja'
import { Tokenizer } from 'tokenizers'
import { readAddedTokens } from './added-tokens.js'
import { parseChatTemplates } from './chat-template.js'
import { isObject, type JsonObject } from './json-values.js'
import { ModelFolderError } from './problems.js'
import { SegmentTokenizer } from './segment-tokenizer.js'

export { ModelFolderError }

/** Everything the data pipeline needs from a Hugging Face model folder. */
export interface ModelTokenizer {
  dir: string
  tokenizer: Tokenizer
  /** Named chat templates (`default`, `tool_use`, …); empty when the model has none. */
  chatTemplates: Map<string, Template>
  /** tokenizer_config.json's `chat_template` as written (a string or a list of named templates), for worker threads. */
  chatTemplateSource: unknown
  /** `bos_token`, `eos_token`, … as the chat template sees them. */
  specialTokenVars: Record<string, string>
  bosId: number | null
  eosToken: string | null
  eosId: number | null
  /** Strings of the tokenizer's special added tokens; user text must not smuggle them into chats. */
  specialTokens: string[]
  /** The fast exact tokenization path, or null when this tokenizer needs whole texts (see SegmentTokenizer). */
  segmenter: SegmentTokenizer | null
  /** What the tokenizer's post-processor wraps a lone sequence in (Llama: BOS before; Qwen: nothing). */
  sequencePrefixIds: number[]
  sequenceSuffixIds: number[]
  maxPositionEmbeddings: number | null
  vocabSize: number
}

export async function loadModelTokenizer (dir: string): Promise<ModelTokenizer> {
  const tokenizerPath = join(dir, 'tokenizer.json')
  if (!existsSync(tokenizerPath)) throw new ModelFolderError(`the model folder ${dir} has no tokenizer.json`)
  let tokenizer: Tokenizer
  try {
    tokenizer = Tokenizer.fromFile(tokenizerPath)
  } catch (error) {
    throw new ModelFolderError(`cannot load ${tokenizerPath}: ${(error as Error).message}`)
  }
  const tokenizerConfig = await readJsonObject(join(dir, 'tokenizer_config.json')) ?? {}
  const modelConfig = await readJsonObject(join(dir, 'config.json')) ?? {}
  const specialTokenVars = readSpecialTokenVars(tokenizerConfig)
  const eosToken = specialTokenVars.eos_token ?? null
  const bosToken = specialTokenVars.bos_token ?? null
  const { prefix, suffix } = await probeSequenceWrapping(tokenizer)
  const added = await readAddedTokens(tokenizerPath)
  const chatTemplateSource = await readChatTemplateSource(dir, tokenizerConfig)
  return {
    dir,
    tokenizer,
    chatTemplates: parseChatTemplates(chatTemplateSource),
    chatTemplateSource,
    specialTokenVars,
    bosId: bosToken === null ? null : tokenizer.tokenToId(bosToken),
    eosToken,
    eosId: eosToken === null ? null : tokenizer.tokenToId(eosToken),
    specialTokens: added.tokens.filter((token) => token.special).map((token) => token.content),
    segmenter: await SegmentTokenizer.create(tokenizer, added),
    sequencePrefixIds: prefix,
    sequenceSuffixIds: suffix,
    maxPositionEmbeddings: readModelNumber(modelConfig, 'max_position_embeddings'),
    vocabSize: readModelNumber(modelConfig, 'vocab_size') ?? tokenizer.getVocabSize(true),
  }
}

async function readJsonObject (path: string): Promise<JsonObject | null> {
  if (!existsSync(path)) return null
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'))
  } catch (error) {
    throw new ModelFolderError(`cannot read ${path}: ${(error as Error).message}`)
  }
  if (!isObject(parsed)) throw new ModelFolderError(`${path} is not a JSON object`)
  return parsed
}

/** Multimodal configs keep the language model's numbers under `text_config`. */
function readModelNumber (config: JsonObject, key: string): number | null {
  const value = config[key] ?? (isObject(config.text_config) ? config.text_config[key] : undefined)
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : null
}

/** Special tokens may be plain strings or AddedToken objects (`{content, lstrip, …}`). */
function readSpecialTokenVars (config: JsonObject): Record<string, string> {
  const vars: Record<string, string> = {}
  for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    const value = config[key]
    if (typeof value === 'string') vars[key] = value
    else if (isObject(value) && typeof value.content === 'string') vars[key] = value.content
  }
  return vars
}

/** `chat_template` in tokenizer_config.json, else the newer separate `chat_template.jinja` file. */
async function readChatTemplateSource (dir: string, config: JsonObject): Promise<unknown> {
  if (config.chat_template !== undefined && config.chat_template !== null) return config.chat_template
  const jinjaPath = join(dir, 'chat_template.jinja')
  if (existsSync(jinjaPath)) return await readFile(jinjaPath, 'utf8')
  return null
}

/** Learns which ids `add_special_tokens=True` puts around a sequence, by encoding a probe both ways. */
async function probeSequenceWrapping (tokenizer: Tokenizer): Promise<{ prefix: number[], suffix: number[] }> {
  const probe = 'probe'
  const bare = (await tokenizer.encode(probe, null, { addSpecialTokens: false })).getIds()
  const wrapped = (await tokenizer.encode(probe, null, { addSpecialTokens: true })).getIds()
  for (let offset = 0; offset + bare.length <= wrapped.length; offset++) {
    if (bare.every((id, i) => wrapped[offset + i] === id)) {
      return { prefix: wrapped.slice(0, offset), suffix: wrapped.slice(offset + bare.length) }
    }
  }
  return { prefix: [], suffix: [] }
}

// Prompts as the model was trained on them: chat messages rendered with the model's own chat
// template (with the generation prompt), raw prompts wrapped like the raw training formats (BOS on
// Llama-like tokenizers), both tokenized by the data pipeline's tokenizer. Also which token ids end
// a generation: the template's end-of-turn and every EOS of generation_config.json / config.json.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { LRUCache } from 'lru-cache'
import type { Template } from '@huggingface/jinja'
import { ApiError } from '../errors.js'
import type { TemplateMessage } from '../data/examples.js'
import { loadModelTokenizer, type ModelTokenizer } from '../data/model.js'
import { ExampleError } from '../data/problems.js'
import { makeSpecialTokenFinder } from '../data/special-tokens.js'
import { validateMessage, validateTools } from '../data/validate-chat.js'

export interface PromptModel {
  tokenizer: ModelTokenizer
  stopIds: number[]
  findSpecialToken: (text: string) => string | null
}

const LOADED_TOKENIZERS = 16 // ~10–30 MB each for real vocabularies
const cache = new LRUCache<string, Promise<PromptModel>>({ max: LOADED_TOKENIZERS })

/** The tokenizer folder's prompt model, loaded once (a failed load is retried next time). */
export async function promptModel (tokenizerDir: string, weightsDir: string): Promise<PromptModel> {
  const key = `${tokenizerDir}\n${weightsDir}`
  let loading = cache.get(key)
  if (!loading) {
    loading = loadPromptModel(tokenizerDir, weightsDir)
    cache.set(key, loading)
    loading.catch(() => cache.delete(key))
  }
  return await loading
}

async function loadPromptModel (tokenizerDir: string, weightsDir: string): Promise<PromptModel> {
  const tokenizer = await loadModelTokenizer(tokenizerDir)
  const stop = new Set<number>()
  if (tokenizer.eosId !== null) stop.add(tokenizer.eosId)
  for (const dir of [tokenizerDir, weightsDir]) {
    for (const file of ['generation_config.json', 'config.json']) {
      for (const id of eosIds(join(dir, file))) stop.add(id)
    }
  }
  const findSpecialToken = makeSpecialTokenFinder(tokenizer.specialTokens)
  return { tokenizer, stopIds: [...stop].sort((a, b) => a - b), findSpecialToken }
}

function eosIds (path: string): number[] {
  if (!existsSync(path)) return []
  try {
    const eos = (JSON.parse(readFileSync(path, 'utf8')) as { eos_token_id?: unknown }).eos_token_id
    const ids = Array.isArray(eos) ? eos : [eos]
    return ids.filter((id): id is number => Number.isInteger(id))
  } catch {
    return []
  }
}

/** OpenAI chat messages → the template's messages, checked as the data pipeline checks training data. */
export function templateMessages (model: PromptModel, raw: unknown[]): TemplateMessage[] {
  return raw.map((message, i) => {
    try {
      return validateMessage(message, `messages[${i}]`, { vocabSize: model.tokenizer.vocabSize, findSpecialToken: model.findSpecialToken }).message
    } catch (err) {
      if (err instanceof ExampleError) throw badPrompt(err.message, err.param ?? 'messages')
      throw err
    }
  })
}

export function checkTools (tools: unknown): unknown[] {
  try {
    return validateTools(tools)
  } catch (err) {
    if (err instanceof ExampleError) throw badPrompt(err.message, 'tools')
    throw err
  }
}

/** The rendered chat (ending in the generation prompt) and its token ids. */
export async function chatPrompt (
  model: PromptModel,
  messages: TemplateMessage[],
  tools: unknown[] | undefined
): Promise<{ text: string, ids: number[] }> {
  const template = pickTemplate(model.tokenizer, tools !== undefined)
  const vars = model.tokenizer.specialTokenVars
  const context: Record<string, unknown> = { ...vars, messages, add_generation_prompt: true }
  if (tools !== undefined) context.tools = tools
  let text: string
  try {
    text = template.render(context)
  } catch (err) {
    throw badPrompt(`the model's chat template failed on these messages: ${(err as Error).message}`, 'messages')
  }
  return { text, ids: await encode(model, text) }
}

/** A raw prompt's ids, wrapped as the raw training formats were (tokenize.ts prefixIds). */
export async function textPrompt (model: PromptModel, text: string): Promise<number[]> {
  return [...model.tokenizer.sequencePrefixIds, ...await encode(model, text)]
}

/** Hugging Face's rule, as in training: a `tool_use` template when tools are given, else `default`. */
function pickTemplate (tokenizer: ModelTokenizer, withTools: boolean): Template {
  const templates = tokenizer.chatTemplates
  const named = (withTools ? templates.get('tool_use') : undefined) ?? templates.get('default') ??
    templates.values().next().value
  if (!named) throw badPrompt('this model has no chat template; use /v1/completions with a raw prompt', 'messages')
  return named
}

async function encode (model: PromptModel, text: string): Promise<number[]> {
  if (model.tokenizer.segmenter) return (await model.tokenizer.segmenter.encodeAll([text]))[0] ?? []
  return (await model.tokenizer.tokenizer.encode(text, null, { addSpecialTokens: false })).getIds()
}

function badPrompt (message: string, param: string): ApiError {
  return new ApiError(400, 'invalid_request_error', 'invalid_prompt', message, param)
}

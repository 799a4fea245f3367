import { Template } from '@huggingface/jinja'
import type { ChatExample, TemplateMessage } from './examples.js'
import type { ModelTokenizer } from './model.js'
import { isObject } from './json-values.js'
import { ExampleError, ModelFolderError } from './problems.js'

/** Character range [start, end) of the rendered text that carries loss. */
export type Span = readonly [number, number]

export interface RenderedChat {
  text: string
  /** Trained assistant turns, in order: content (as the template renders it) through the end-of-turn token. */
  spans: Span[]
}

export type TemplateModel = Pick<ModelTokenizer, 'chatTemplates' | 'specialTokenVars' | 'eosToken'>

/**
 * Renders chats with the model's own template and finds which characters belong to trained
 * assistant turns, without trusting string search on contents.
 *
 * A turn starts where the template's generation prompt ends: `render(messages[0..k), add_generation_prompt)`
 * must be a prefix of the whole render, and its length is where message k's trained text begins
 * (what the model will generate after that prompt at inference). The turn ends after the first
 * end-of-turn (`eos_token`) that follows; contents may not hold special tokens, so it is the template's.
 *
 * That costs one extra render per assistant turn, so a fast path first tries a single render: the
 * generation prompt (e.g. `<|start_header_id|>assistant<|end_header_id|>\n\n`) found once per assistant
 * message, each followed by its own content and tool calls before the end-of-turn token. Any doubt
 * (Qwen3's reasoning split, a template that reorders) falls back to the prefix method, which either
 * proves the spans or reports the example.
 */
export class ChatRenderer {
  private readonly headers = new Map<Template, string | null>()

  constructor (private readonly model: TemplateModel) {
    if (model.chatTemplates.size === 0) throw new Error('the model has no chat template')
  }

  render (example: ChatExample): RenderedChat {
    const template = this.pickTemplate(example)
    const text = this.renderWith(template, example, example.messages, false)
    const header = this.generationHeader(template, example)
    const spans = (header === null ? null : this.spansFromHeaders(text, example, header)) ??
      this.spansFromPrefixes(text, example, template)
    return { text, spans }
  }

  /** Hugging Face's rule: a `tool_use` template for examples with tools, else `default`. */
  private pickTemplate (example: ChatExample): Template {
    const templates = this.model.chatTemplates
    const named = (example.tools !== undefined ? templates.get('tool_use') : undefined) ?? templates.get('default')
    return named ?? templates.values().next().value as Template
  }

  private renderWith (
    template: Template,
    example: ChatExample,
    messages: TemplateMessage[],
    addGenerationPrompt: boolean
  ): string {
    const context: Record<string, unknown> = {
      ...this.model.specialTokenVars,
      messages,
      add_generation_prompt: addGenerationPrompt,
    }
    if (example.tools !== undefined) context.tools = example.tools
    try {
      return template.render(context)
    } catch (error) {
      throw new ExampleError(`the model's chat template failed on this example: ${(error as Error).message}`, 'messages')
    }
  }

  /** What `add_generation_prompt` appends after a one-message user conversation; null if it cannot be told. */
  private generationHeader (template: Template, example: ChatExample): string | null {
    if (this.headers.has(template)) return this.headers.get(template) ?? null
    let header: string | null = null
    try {
      const probe: TemplateMessage[] = [{ role: 'user', content: 'ping' }]
      const without = this.renderWith(template, example, probe, false)
      const withPrompt = this.renderWith(template, example, probe, true)
      if (withPrompt.length > without.length && withPrompt.startsWith(without)) {
        header = withPrompt.slice(without.length)
      }
    } catch {
      header = null
    }
    this.headers.set(template, header)
    return header
  }

  private spansFromHeaders (text: string, example: ChatExample, header: string): Span[] | null {
    const starts: number[] = []
    for (let at = text.indexOf(header); at !== -1; at = text.indexOf(header, at + header.length)) {
      starts.push(at + header.length)
    }
    const assistants = example.messages.flatMap((message, k) => message.role === 'assistant' ? [k] : [])
    if (starts.length !== assistants.length) return null
    const spans: Span[] = []
    for (let j = 0; j < assistants.length; j++) {
      const k = assistants[j] as number
      const start = starts[j] as number
      const limit = j + 1 < starts.length ? (starts[j + 1] as number) - header.length : text.length
      const end = this.turnEnd(text, start, limit, k === example.messages.length - 1)
      if (end === null || !showsMessage(text, start, end, example.messages[k] as TemplateMessage)) return null
      if (example.trained[k] === true) spans.push([start, end])
    }
    return spans
  }

  private spansFromPrefixes (text: string, example: ChatExample, template: Template): Span[] {
    const spans: Span[] = []
    const messages = example.messages
    for (let k = 0; k < messages.length; k++) {
      // Untrained tool-call turns are located too: a template that drops tool calls must be caught.
      const message = messages[k] as TemplateMessage
      if (example.trained[k] !== true && message.tool_calls === undefined) continue
      const prompt = this.renderWith(template, example, messages.slice(0, k), true)
      if (!text.startsWith(prompt)) {
        throw new ExampleError(`the model's chat template renders messages[0..${k - 1}] differently on their own than inside the whole conversation, so the tokens of messages[${k}] cannot be located`, `messages[${k}]`)
      }
      const start = prompt.length
      const isLast = k === messages.length - 1
      const next = isLast ? null : this.renderWith(template, example, messages.slice(0, k + 1), false)
      const limit = next !== null && text.startsWith(next) ? next.length : text.length
      const end = this.turnEnd(text, start, limit, isLast || limit < text.length)
      if (end === null) throw new ExampleError(`cannot find where the chat template ends the assistant turn messages[${k}]`, `messages[${k}]`)
      if (!showsToolCalls(text, start, end, message)) {
        throw new ExampleError(`the model's chat template does not render tool_calls (messages[${k}]); training on this example would teach the model to call no tool`, `messages[${k}].tool_calls`)
      }
      if (example.trained[k] === true) spans.push([start, end])
    }
    return spans
  }

  /** After the first end-of-turn token from `start` (before `limit`); else `limit` if it is known to close the turn. */
  private turnEnd (text: string, start: number, limit: number, limitClosesTurn: boolean): number | null {
    const eos = this.model.eosToken
    const at = eos === null ? -1 : text.indexOf(eos, start)
    if (eos !== null && at !== -1 && at + eos.length <= limit) return at + eos.length
    return limitClosesTurn ? limit : null
  }
}

function showsMessage (text: string, start: number, end: number, message: TemplateMessage): boolean {
  const probe = message.content.trim()
  if (probe !== '') {
    const at = text.indexOf(probe, start)
    if (at === -1 || at + probe.length > end) return false
  }
  return showsToolCalls(text, start, end, message)
}

function showsToolCalls (text: string, start: number, end: number, message: TemplateMessage): boolean {
  for (const call of message.tool_calls ?? []) {
    const at = text.indexOf(call.function.name, start)
    if (at === -1 || at + call.function.name.length > end) return false
  }
  return true
}

/** `chat_template` is a string, or a list of `{name, template}` (Hugging Face's named templates). */
export function parseChatTemplates (source: unknown): Map<string, Template> {
  const templates = new Map<string, Template>()
  const add = (name: string, text: unknown): void => {
    if (typeof text !== 'string') throw new ModelFolderError(`chat template ${name} is not a string`)
    try {
      templates.set(name, new Template(text))
    } catch (error) {
      throw new ModelFolderError(`cannot parse the chat template ${name}: ${(error as Error).message}`)
    }
  }
  if (typeof source === 'string') add('default', source)
  else if (Array.isArray(source)) {
    for (const entry of source) {
      if (!isObject(entry) || typeof entry.name !== 'string') throw new ModelFolderError('a chat template in the list has no name')
      add(entry.name, entry.template)
    }
  }
  return templates
}

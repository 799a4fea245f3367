// Tool calls back from generated text, for the template families whose tool-call format we know:
// Hermes-style `<tool_call>{"name", "arguments"}</tool_call>` (Qwen2.5, Qwen3) and Llama 3.1's bare
// JSON `{"name", "parameters"}`. The data pipeline trains tool calls through any template that
// renders them; serving parses only these two, and refuses `tools` for other templates (400).
import { randomBytes } from 'node:crypto'
import type { ModelTokenizer } from '../data/model.js'

export type ToolFormat = 'hermes' | 'llama3_json'

export interface ParsedToolCall { id: string, type: 'function', function: { name: string, arguments: string } }

/** Which format this model's tool-use template teaches, or null when we cannot parse its calls. */
export function toolFormat (tokenizer: ModelTokenizer): ToolFormat | null {
  const source = JSON.stringify(tokenizer.chatTemplateSource ?? '')
  if (source.includes('<tool_call>')) return 'hermes'
  if (source.includes('\\"parameters\\"') && source.includes('ipython')) return 'llama3_json'
  return null
}

/** Where a streamed text may start a tool call: text before it can be shown at once. */
export function toolCallStart (format: ToolFormat, text: string): number {
  if (format === 'hermes') return text.indexOf('<tool_call>')
  return /^\s*\{/.test(text) ? 0 : -1
}

/** The calls in a finished generation and the content around them; no calls: the text as content. */
export function parseToolCalls (format: ToolFormat, text: string): { content: string | null, calls: ParsedToolCall[] } {
  const calls: ParsedToolCall[] = []
  if (format === 'hermes') {
    const found = [...text.matchAll(/<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g)]
    for (const match of found) {
      const call = readCall(match[1] ?? '', 'arguments')
      if (!call) return { content: text, calls: [] }
      calls.push(call)
    }
    if (calls.length === 0) return { content: text, calls }
    const content = text.slice(0, text.indexOf('<tool_call>')).trim()
    return { content: content === '' ? null : content, calls }
  }
  const call = /^\s*\{/.test(text) ? readCall(text.trim(), 'parameters') : null
  return call ? { content: null, calls: [call] } : { content: text, calls: [] }
}

function readCall (json: string, argumentsKey: 'arguments' | 'parameters'): ParsedToolCall | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed === null) return null
  const { name, [argumentsKey]: args } = parsed as Record<string, unknown>
  if (typeof name !== 'string' || name === '') return null
  return {
    id: `call_${randomBytes(12).toString('hex')}`,
    type: 'function',
    function: { name, arguments: typeof args === 'string' ? args : JSON.stringify(args ?? {}) },
  }
}

import { CHAT_ROLES, type ChatExample, type ChatRole, type TemplateMessage, type TemplateToolCall } from './examples.js'
import { ExampleError } from './problems.js'
import { describeValue, isObject, type JsonObject } from './json-values.js'
import type { ValidationContext } from './validate.js'

const ROLE_SET = new Set<string>(CHAT_ROLES)

/** Validates one `{"messages": […], "tools"?: […]}` line; throws ExampleError naming the field. */
export function validateChat (record: JsonObject, line: number, context: ValidationContext): ChatExample {
  const raw = record.messages
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new ExampleError(`"messages" must be a non-empty array (got ${describeValue(raw)})`, 'messages')
  }
  const messages: TemplateMessage[] = []
  const trained: boolean[] = []
  for (let i = 0; i < raw.length; i++) {
    const previous = messages[i - 1]
    const { message, weight } = validateMessage(raw[i], `messages[${i}]`, context)
    if (message.role === 'tool' && !(previous?.role === 'tool' || previous?.tool_calls !== undefined)) {
      throw new ExampleError(`messages[${i}] is a tool result but does not follow an assistant message with tool_calls`, `messages[${i}].role`)
    }
    messages.push(message)
    trained.push(message.role === 'assistant' && weight !== 0)
  }
  checkLastMessage(messages)
  if (!trained.includes(true)) {
    throw new ExampleError('every assistant message has weight 0, so the example trains nothing', 'messages')
  }
  const example: ChatExample = { format: 'chat', line, messages, trained }
  if (record.tools !== undefined && record.tools !== null) example.tools = validateTools(record.tools)
  return example
}

function checkLastMessage (messages: TemplateMessage[]): void {
  const index = messages.length - 1
  const last = messages[index] as TemplateMessage
  if (last.role !== 'assistant') {
    throw new ExampleError(`the last message must be from the assistant (got "${last.role}")`, `messages[${index}].role`)
  }
  if (last.content.trim() === '') {
    throw new ExampleError('the last message must be the assistant\'s answer in text, not only tool_calls', `messages[${index}].content`)
  }
}

export function validateMessage (
  raw: unknown,
  path: string,
  context: ValidationContext
): { message: TemplateMessage, weight: number | undefined } {
  if (!isObject(raw)) throw new ExampleError(`${path} must be an object (got ${describeValue(raw)})`, path)
  const role = raw.role
  if (typeof role !== 'string' || !ROLE_SET.has(role)) {
    throw new ExampleError(`${path}.role must be one of ${CHAT_ROLES.map((r) => `"${r}"`).join(', ')} (got ${describeValue(role)})`, `${path}.role`)
  }
  const message: TemplateMessage = { role: role as ChatRole, content: '' }
  if (raw.tool_calls !== undefined && raw.tool_calls !== null) {
    if (role !== 'assistant') throw new ExampleError(`${path}.tool_calls is only allowed on assistant messages`, `${path}.tool_calls`)
    message.tool_calls = validateToolCalls(raw.tool_calls, `${path}.tool_calls`)
  }
  message.content = readContent(raw.content, `${path}.content`, message.tool_calls !== undefined)
  const special = context.findSpecialToken(message.content)
  if (special !== null) {
    throw new ExampleError(`${path}.content contains the special token "${special}", which would be read as a control token`, `${path}.content`)
  }
  copyOptionalStrings(raw, message, path)
  const weight = raw.weight
  if (weight !== undefined) {
    if (role !== 'assistant') throw new ExampleError(`${path}.weight is only allowed on assistant messages`, `${path}.weight`)
    if (weight !== 0 && weight !== 1) throw new ExampleError(`${path}.weight must be 0 or 1 (got ${describeValue(weight)})`, `${path}.weight`)
  }
  return { message, weight: weight as number | undefined }
}

/** Content is a string or OpenAI-style text parts; it may be empty only beside tool_calls. */
function readContent (raw: unknown, path: string, hasToolCalls: boolean): string {
  let content: string
  if (typeof raw === 'string') content = raw
  else if ((raw === undefined || raw === null) && hasToolCalls) content = ''
  else if (Array.isArray(raw)) content = joinTextParts(raw, path)
  else throw new ExampleError(`${path} must be a string (got ${describeValue(raw)})`, path)
  if (!hasToolCalls && content.trim() === '') throw new ExampleError(`${path} is empty`, path)
  return content
}

function joinTextParts (parts: unknown[], path: string): string {
  return parts.map((part, i) => {
    if (isObject(part) && part.type === 'text' && typeof part.text === 'string') return part.text
    throw new ExampleError(`${path}[${i}] must be a text part {"type": "text", "text": "…"}`, `${path}[${i}]`)
  }).join('')
}

function copyOptionalStrings (raw: JsonObject, message: TemplateMessage, path: string): void {
  for (const key of ['name', 'tool_call_id', 'reasoning_content'] as const) {
    const value = raw[key]
    if (value === undefined || value === null) continue
    if (typeof value !== 'string') throw new ExampleError(`${path}.${key} must be a string (got ${describeValue(value)})`, `${path}.${key}`)
    message[key] = value
  }
}

function validateToolCalls (raw: unknown, path: string): TemplateToolCall[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new ExampleError(`${path} must be a non-empty array (got ${describeValue(raw)})`, path)
  return raw.map((call, j) => {
    const callPath = `${path}[${j}]`
    if (!isObject(call)) throw new ExampleError(`${callPath} must be an object (got ${describeValue(call)})`, callPath)
    if (call.type !== undefined && call.type !== 'function') {
      throw new ExampleError(`${callPath}.type must be "function" (got ${describeValue(call.type)})`, `${callPath}.type`)
    }
    const fn = call.function
    if (!isObject(fn)) throw new ExampleError(`${callPath}.function must be an object (got ${describeValue(fn)})`, `${callPath}.function`)
    if (typeof fn.name !== 'string' || fn.name === '') {
      throw new ExampleError(`${callPath}.function.name must be a non-empty string (got ${describeValue(fn.name)})`, `${callPath}.function.name`)
    }
    const toolCall: TemplateToolCall = { type: 'function', function: { name: fn.name, arguments: parseArguments(fn.arguments, `${callPath}.function.arguments`) } }
    if (typeof call.id === 'string') toolCall.id = call.id
    return toolCall
  })
}

function parseArguments (raw: unknown, path: string): unknown {
  if (typeof raw !== 'string') {
    throw new ExampleError(`${path} must be a string holding JSON, as in the OpenAI format (got ${describeValue(raw)})`, path)
  }
  try {
    return JSON.parse(raw)
  } catch (error) {
    throw new ExampleError(`${path} is not valid JSON: ${(error as Error).message}`, path)
  }
}

export function validateTools (raw: unknown): unknown[] {
  if (!Array.isArray(raw)) throw new ExampleError(`"tools" must be an array (got ${describeValue(raw)})`, 'tools')
  raw.forEach((tool, k) => {
    const fn = isObject(tool) ? tool.function : undefined
    if (!isObject(tool) || (tool.type !== undefined && tool.type !== 'function') || !isObject(fn) || typeof fn.name !== 'string' || fn.name === '') {
      throw new ExampleError(`tools[${k}] must be {"type": "function", "function": {"name": …, "parameters": …}}`, `tools[${k}]`)
    }
  })
  return raw
}

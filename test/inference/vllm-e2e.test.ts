// OPENTUNE_INFERENCE=vllm end to end with the openai client: the same URL, keys and model names,
// answered by a vLLM server (the stand-in: a test double of vLLM's v0.11 API, vllm-standin.ts).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import OpenAI from 'openai'
import { startService, type Service } from '../../src/server.js'
import { DIALECTS, sdkClient, testConfig } from '../helper.js'
import { deploy, makeLoraCheckpoint } from './checkpoints.js'
import { startVllmStandin, type VllmStandin } from './vllm-standin.js'

const BASE = 'opentune/tiny-llama'
const ask = [{ role: 'user' as const, content: 'Hi' }]

describe(`${DIALECTS[0]}: a vLLM server behind opentune`, () => {
  let vllm: VllmStandin
  let service: Service
  let cleanup: () => Promise<void>
  let client: OpenAI
  let checkpoint: Awaited<ReturnType<typeof makeLoraCheckpoint>>

  before(async () => {
    vllm = await startVllmStandin({ root: BASE, maxLoraRank: 16 })
    const made = await testConfig(DIALECTS[0] ?? 'sqlite', {
      PORT: '0', OPENTUNE_RUNNER: '0', OPENTUNE_INFERENCE: 'vllm', OPENTUNE_VLLM_URL: vllm.url,
    })
    cleanup = made.cleanup
    service = await startService(made.config)
    client = await sdkClient(service)
    checkpoint = await makeLoraCheckpoint(service, client, 'main')
  })
  after(async () => {
    await service?.close()
    await cleanup?.()
    await vllm?.close()
  })

  it('forwards a base-model chat to vLLM and a checkpoint to its adapter, registered on first use', async () => {
    const base = await client.chat.completions.create({ model: BASE, messages: ask, max_tokens: 5 })
    assert.match(base.choices[0]?.message.content ?? '', /served by/)
    const tuned = await client.chat.completions.create({ model: checkpoint.name, messages: ask, max_tokens: 5 })
    assert.equal(tuned.model, checkpoint.name)
    assert.equal(vllm.adapters.get(checkpoint.name)?.endsWith(checkpoint.id), true, 'lora_path is the served adapter folder')
    const forwarded = vllm.requests.filter(r => r.path === '/v1/chat/completions').at(-1)?.body as Record<string, unknown>
    assert.equal(forwarded.model, checkpoint.name)
    assert.deepEqual(forwarded.messages, ask, 'the rest of the request is unchanged')
  })

  it('streams through unchanged and deploys a checkpoint checked against the server', async () => {
    const stream = await client.completions.create({ model: checkpoint.name, prompt: 'Hi', max_tokens: 3, stream: true })
    let text = ''
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? ''
    assert.match(text, /served by/)
    const deployed = await deploy(client, checkpoint)
    assert.equal(deployed.status, 'active')
    const viaDeployment = await client.chat.completions.create({ model: deployed.name, messages: ask, max_tokens: 5 })
    assert.equal(viaDeployment.model, deployed.name)
  })

  it('refuses draft_model with a 400 naming it: vLLM takes a drafter only at its launch', async () => {
    const before = vllm.requests.length
    for (const extra of [{ draft_model: checkpoint.name }, { num_speculative_tokens: 3 }]) {
      const asked = client.chat.completions.create({ model: BASE, messages: ask, max_tokens: 5, ...extra } as never)
      await assert.rejects(asked,
        (err: { status?: number, param?: string, message?: string }) =>
          err.status === 400 && err.param === Object.keys(extra)[0] && /--speculative-config/.test(err.message ?? ''))
    }
    assert.equal(vllm.requests.length, before, 'nothing was forwarded')
  })
})

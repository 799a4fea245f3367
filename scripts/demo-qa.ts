// What `npm run demo` teaches opentune/tiny-llama and how it checks it, shared with
// test/e2e/demo-loop.test.ts so that the test asserts what the demo shows. The facts are made up
// (examples/data/qa-train.jsonl), so a random-initialised model cannot know them before training.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type OpenAI from 'openai'

export const QA_FILE = join(import.meta.dirname, '..', 'examples', 'data', 'qa-train.jsonl')

export interface QA { question: string, answer: string }

interface ChatRow { messages: Array<{ role: string, content: string }> }

/** The question → answer pairs of the training file, one per line. */
export const QA_PAIRS: readonly QA[] = readFileSync(QA_FILE, 'utf8').split('\n').filter(l => l.trim() !== '')
  .map(line => {
    const { messages } = JSON.parse(line) as ChatRow
    const question = messages.find(m => m.role === 'user')?.content
    const answer = messages.find(m => m.role === 'assistant')?.content
    if (question === undefined || answer === undefined) throw new Error(`${QA_FILE}: a row without a question or answer`)
    return { question, answer }
  })

// The fine-tuning job, Nebius SupervisedHParameters included. A random-initialised 0.8M-parameter
// model memorises a dozen short answers with full fine-tuning (LoRA on random weights barely moves)
// at 200 times a real model's learning rate; batch 1 and no packing for the most steps an epoch can
// have (240 in all, ~15 s on 2 CPU cores), a short warmup. Seed 0 fixes the data order; on seeds 0–3
// this scores 12/12, on seed 4 11/12 (at 3e-3 8–12/12 by seed; at batch 2 10–11/12, batch 4 3/12).
export const DEMO_JOB = {
  model: 'opentune/tiny-llama',
  seed: 0,
  hyperparameters: {
    n_epochs: 20,
    batch_size: 1,
    learning_rate: 2e-3,
    warmup_ratio: 0.1,
    lora: false,
    packing: false,
  },
}

/** Enough for the longest answer (a byte per token) and its end-of-turn token. */
export const MAX_TOKENS = Math.max(...QA_PAIRS.map(p => Buffer.byteLength(p.answer))) + 8

export interface Asked extends QA { got: string, exact: boolean }

/** Each question as a chat completion, greedy, one after another; an answer is exact when it is
 *  equal once whitespace is trimmed. */
export async function askAll (client: OpenAI, model: string): Promise<Asked[]> {
  const asked: Asked[] = []
  for (const p of QA_PAIRS) {
    const reply = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: p.question }],
      temperature: 0,
      max_tokens: MAX_TOKENS,
    })
    const got = reply.choices[0]?.message.content ?? ''
    asked.push({ ...p, got, exact: got.trim() === p.answer.trim() })
  }
  return asked
}

export const exactCount = (asked: readonly Asked[]) => asked.filter(a => a.exact).length

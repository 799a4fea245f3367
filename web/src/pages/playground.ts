// Playground: the same conversation with a checkpoint and its base model side by side, each answer
// streamed from POST /v1/chat/completions (stream: true), read with fetch.
import { getJson, readSse, request, type List, type Model } from '../api.js'
import { clear, h } from '../dom.js'

interface Msg { role: 'user' | 'assistant', content: string }

/** ft:<base>:<project>:…: the base model a checkpoint was trained from. */
export function baseOf (model: string): string {
  return model.startsWith('ft:') ? (model.split(':')[1] ?? model) : model
}

function side (label: string, testid: string) {
  const select = h('select', { 'data-testid': `${testid}-model` })
  const log = h('div', { class: 'chat-log', 'data-testid': `${testid}-log` })
  const el = h('section', { class: 'chat-side' }, h('label', { class: 'field' }, `${label} `, select), log)
  return { el, select, log, history: [] as Msg[] }
}

export function playgroundPage (main: HTMLElement, params: URLSearchParams): () => void {
  const ac = new AbortController()
  const left = side('Checkpoint', 'left')
  const right = side('Base model', 'right')
  const input = h('textarea', { rows: 3, placeholder: 'Ask something…', 'data-testid': 'prompt' })
  const maxTokens = h('input', { type: 'number', min: 1, max: 4096, value: 128 })
  const temperature = h('input', { type: 'number', min: 0, max: 2, step: 0.1, value: 0 })
  const send = h('button', { type: 'submit', class: 'primary', 'data-testid': 'send' }, 'Send')
  const reset = h('button', { type: 'button' }, 'New conversation')
  const note = h('p', { class: 'muted' })
  const form = h('form', { class: 'chat-form' }, input,
    h('div', { class: 'row' }, h('label', {}, 'max tokens ', maxTokens), h('label', {}, 'temperature ', temperature), send, reset))
  clear(main, h('h1', {}, 'Playground'), h('div', { class: 'chat' }, left.el, right.el), form, note)

  getJson<List<Model>>('/v1/models').then(list => {
    const ids = list.data.map(m => m.id)
    const options = () => ids.map(id => h('option', { value: id }, id))
    clear(left.select, ...options())
    clear(right.select, ...options())
    const wanted = params.get('model') ?? ids.filter(id => id.startsWith('ft:')).at(-1) ?? ids[0] ?? ''
    left.select.value = wanted
    right.select.value = baseOf(wanted)
    if (!ids.some(id => id.startsWith('ft:'))) note.textContent = 'No fine-tuned checkpoint yet: both sides can only be base models.'
  }, (err: Error) => { note.textContent = `Could not list the models: ${err.message}` })
  left.select.addEventListener('change', () => { right.select.value = baseOf(left.select.value) })

  async function ask (s: ReturnType<typeof side>, text: string): Promise<void> {
    s.history.push({ role: 'user', content: text })
    s.log.append(h('div', { class: 'msg user' }, text))
    const out = h('div', { class: 'msg assistant' })
    s.log.append(out)
    let answer = ''
    try {
      const res = await request('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({
          model: s.select.value,
          messages: s.history,
          stream: true,
          max_tokens: Number(maxTokens.value) || 128,
          temperature: Number(temperature.value) || 0,
        }),
        signal: ac.signal,
      })
      await readSse(res, m => {
        if (m.data === '[DONE]') return
        type Chunk = { choices?: { delta?: { content?: string } }[], error?: { message?: string } }
        const chunk = JSON.parse(m.data) as Chunk
        if (chunk.error) throw new Error(chunk.error.message ?? 'stream error')
        answer += chunk.choices?.[0]?.delta?.content ?? ''
        out.textContent = answer
        s.log.scrollTop = s.log.scrollHeight
      }, ac.signal)
      s.history.push({ role: 'assistant', content: answer })
      if (!answer) out.append(h('span', { class: 'muted' }, '(empty answer)'))
      out.dataset.done = 'ok'
    } catch (err) {
      out.dataset.done = 'error'
      out.classList.add('error')
      out.textContent = `${answer}${answer ? '\n' : ''}[${(err as Error).message}]`
      s.history.pop()
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const text = input.value.trim()
    if (!text) return
    input.value = ''
    send.disabled = true
    void Promise.all([ask(left, text), ask(right, text)]).finally(() => { send.disabled = false })
  })
  reset.addEventListener('click', () => {
    for (const s of [left, right]) { s.history = []; clear(s.log) }
  })
  return () => { ac.abort() }
}

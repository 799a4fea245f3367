// The dashboard's entry: sign-in (an API key kept in sessionStorage), then a hash router over the
// pages. The key never goes in a URL: every request carries it as `Authorization: Bearer`.
import { ApiError, checkKey, onUnauthorized, session } from './api.js'
import { clear, h } from './dom.js'
import { filesPage } from './pages/files.js'
import { jobPage } from './pages/job.js'
import { jobsPage } from './pages/jobs.js'
import { newJobPage } from './pages/new-job.js'
import { playgroundPage } from './pages/playground.js'

const main = document.getElementById('main')!
const nav = document.getElementById('nav')!
let cleanup: (() => void) | null = null

function signIn (message?: string): void {
  cleanup?.()
  cleanup = null
  nav.hidden = true
  const key = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'paste your API key', 'data-testid': 'api-key', required: true })
  const error = h('p', { class: 'error', role: 'alert', 'data-testid': 'signin-error' }, message ?? '')
  const button = h('button', { type: 'submit', class: 'primary', 'data-testid': 'signin' }, 'Sign in')
  const form = h('form', { class: 'signin' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste an API key of your project (', h('code', {}, 'opentune keys create'), '). It is kept in this tab only.'),
    key, button, error)
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const value = key.value.trim()
    if (!value) { error.textContent = 'Paste an API key first.'; return }
    button.disabled = true
    error.textContent = ''
    checkKey(value).then(() => {
      session.set(value)
      nav.hidden = false
      if (!location.hash || location.hash === '#/signin') location.hash = '#/jobs'
      else route()
    }, (err: Error) => {
      error.textContent = err instanceof ApiError && err.status === 401
        ? `This API key was not accepted (${err.message}). Check that you pasted the whole key, and that it was not revoked.`
        : `Could not reach the service: ${err.message}`
    }).finally(() => { button.disabled = false })
  })
  clear(main, form)
  key.focus()
}

function route (): void {
  if (!session.key) { signIn(); return }
  cleanup?.()
  cleanup = null
  nav.hidden = false
  const [path = '', query = ''] = location.hash.replace(/^#/, '').split('?')
  const params = new URLSearchParams(query)
  const parts = path.split('/').filter(Boolean)
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.getAttribute('href') === `#/${parts[0] ?? 'jobs'}`)
  if (parts[0] === 'jobs' && parts[1]) cleanup = jobPage(main, decodeURIComponent(parts[1]))
  else if (parts[0] === 'new') cleanup = newJobPage(main)
  else if (parts[0] === 'files') cleanup = filesPage(main)
  else if (parts[0] === 'playground') cleanup = playgroundPage(main, params)
  else cleanup = jobsPage(main)
}

onUnauthorized.handler = (message) => {
  session.clear()
  signIn(`The service no longer accepts this key (${message}). Sign in again.`)
}
document.getElementById('signout')!.addEventListener('click', () => { session.clear(); signIn() })
window.addEventListener('hashchange', route)
route()

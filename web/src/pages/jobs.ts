// Jobs list: status, model, progress (trained_steps/total_steps) with ETA, created/finished, a
// status filter; refreshed every 3 s while shown.
import { getJson, type Job, type List } from '../api.js'
import { clear, fmtEta, fmtTime, h } from '../dom.js'

export const STATUSES = ['validating_files', 'queued', 'running', 'succeeded', 'failed', 'cancelled']

export function statusBadge (status: string): HTMLElement {
  return h('span', { class: `badge status-${status}`, 'data-status': status }, status.replace('_', ' '))
}

export function progress (job: Job): HTMLElement {
  const done = job.trained_steps ?? 0
  const total = job.total_steps ?? 0
  const pct = job.status === 'succeeded' ? 100 : total > 0 ? Math.min(100, (100 * done) / total) : 0
  const fill = h('div', { class: 'fill' })
  fill.style.width = `${pct.toFixed(1)}%` // CSSOM, which the CSP allows (a style attribute it would not)
  return h('div', { class: 'progress', title: total ? `${done}/${total} steps` : 'steps not known yet' },
    h('div', { class: 'bar' }, fill),
    h('span', { class: 'steps' }, total ? `${done}/${total}` : '—'))
}

export function jobsPage (main: HTMLElement): () => void {
  let filter = sessionStorage.getItem('opentune.jobsFilter') ?? ''
  const select = h('select', {
    'data-testid': 'status-filter',
    onchange: () => { filter = select.value; sessionStorage.setItem('opentune.jobsFilter', filter); void load() },
  }, h('option', { value: '' }, 'all statuses'), ...STATUSES.map(s => h('option', { value: s }, s.replace('_', ' '))))
  select.value = filter
  const body = h('tbody')
  const note = h('p', { class: 'muted' })
  clear(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Fine-tuning jobs'),
      h('div', { class: 'actions' }, h('label', {}, 'Show ', select), h('a', { class: 'button', href: '#/new' }, 'New job'))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'jobs', 'data-testid': 'jobs-table' },
      h('thead', {}, h('tr', {}, ...['Job', 'Status', 'Model', 'Progress', 'ETA', 'Created', 'Finished'].map(t => h('th', {}, t)))),
      body)),
    note)

  let stopped = false
  async function load () {
    const list = await getJson<List<Job>>('/v1/fine_tuning/jobs?limit=100')
    if (stopped) return
    const jobs = list.data.filter(j => !filter || j.status === filter)
    clear(body, ...jobs.map(j => h('tr', { 'data-job-id': j.id },
      h('td', { 'data-label': 'Job' }, h('a', { href: `#/jobs/${j.id}` }, j.suffix ? `${j.suffix} · ` : '', h('code', {}, j.id.slice(0, 14) + '…'))),
      h('td', { 'data-label': 'Status' }, statusBadge(j.status)),
      h('td', { 'data-label': 'Model' }, j.model),
      h('td', { 'data-label': 'Progress' }, progress(j)),
      h('td', { 'data-label': 'ETA' }, j.status === 'running' ? fmtEta(j.estimated_finish) : '—'),
      h('td', { 'data-label': 'Created' }, fmtTime(j.created_at)),
      h('td', { 'data-label': 'Finished' }, fmtTime(j.finished_at)))))
    note.textContent = jobs.length === 0
      ? (filter ? `No ${filter.replace('_', ' ')} jobs.` : 'No jobs yet: start one from "New job".')
      : list.has_more ? 'Showing the newest 100 jobs.' : ''
  }
  const timer = setInterval(() => { load().catch(() => {}) }, 3000)
  load().catch((err: Error) => { note.textContent = `Could not load the jobs: ${err.message}` })
  return () => { stopped = true; clearInterval(timer) }
}

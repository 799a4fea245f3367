// One job: status and progress, the error of a failed job, cancel, live curves (the metrics
// endpoint; without it, the metrics events plus the checkpoints' validation metrics), the resolved
// hyperparameters, the checkpoints with the best by full_valid_loss marked, result-file downloads
// and the event log, tailed live (the SSE stream; polling `?after=` every 2 s where there is none).
import {
  ApiError, downloadFile, ENDED, getJson, METRIC_KEYS, postJson, readSse, request,
  type Checkpoint, type FileObject, type Job, type JobEvent, type List, type MetricPoint,
} from '../api.js'
import { Charts } from '../charts.js'
import { clear, fmtEta, fmtNum, fmtTime, h } from '../dom.js'
import { progress, statusBadge } from './jobs.js'

const sleep = async (ms: number, signal: AbortSignal) => await new Promise<void>(resolve => {
  const t = setTimeout(resolve, ms)
  signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
})

const fileNames = new Map<string, string>()
async function fileName (id: string): Promise<string> {
  const known = fileNames.get(id)
  if (known) return known
  const meta = await getJson<FileObject>(`/v1/files/${encodeURIComponent(id)}`)
  const name = meta.filename.split('/').pop() || id
  fileNames.set(id, name)
  return name
}

export function downloadButton (fileId: string, label?: string): HTMLButtonElement {
  const button = h('button', { type: 'button', class: 'small', 'data-file-id': fileId }, label ?? '…')
  if (!label) fileName(fileId).then(n => { button.textContent = n }, () => { button.textContent = fileId })
  button.addEventListener('click', () => {
    button.disabled = true
    downloadFile(fileId).catch((err: Error) => { alertError(button, err) }).finally(() => { button.disabled = false })
  })
  return button
}

function alertError (near: Element, err: Error): void {
  const p = h('p', { class: 'error', role: 'alert' }, err.message)
  near.parentElement?.append(p)
  setTimeout(() => p.remove(), 8000)
}

/** A checkpoint's metrics beyond the seven (a drafter's acceptance rates), as one line under its name. */
function extraMetrics (metrics: Record<string, number | null>): HTMLElement[] {
  const standard = new Set<string>(METRIC_KEYS)
  const extra = Object.entries(metrics).filter(([k]) => !standard.has(k)).sort(([a], [b]) => a.localeCompare(b))
  if (extra.length === 0) return []
  return [h('div', { class: 'muted', 'data-testid': 'extra-metrics' }, extra.map(([k, v]) => `${k} ${fmtNum(v)}`).join(' · '))]
}

export function jobPage (main: HTMLElement, id: string): () => void {
  const ac = new AbortController()
  const { signal } = ac
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`
  const charts = new Charts()
  const summary = h('div', { class: 'summary' })
  const errorBox = h('div')
  const chartNote = h('p', { class: 'muted', 'data-testid': 'metrics-source' })
  const hpBody = h('tbody')
  const ckptBody = h('tbody')
  const ckptNote = h('p', { class: 'muted' })
  const resultFiles = h('div', { class: 'buttons' })
  const eventsEl = h('ol', { class: 'events', 'data-testid': 'events' })
  const eventsNote = h('p', { class: 'muted', 'data-testid': 'events-mode' })
  const cancelButton = h('button', { type: 'button', class: 'danger', 'data-testid': 'cancel', hidden: true }, 'Cancel job')
  const title = h('h1', {}, 'Job ', h('code', {}, id))

  clear(main,
    h('div', { class: 'page-head' }, title, h('div', { class: 'actions' }, cancelButton)),
    errorBox, summary,
    h('h2', {}, 'Curves'), charts.el, chartNote,
    h('h2', {}, 'Checkpoints'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'checkpoints', 'data-testid': 'checkpoints' },
      h('thead', {}, h('tr', {}, ...['Step', 'Train loss', 'Train acc.', 'Valid loss', 'Valid acc.', 'Full valid loss',
        'Full valid acc.', 'Model', 'Files'].map(t => h('th', {}, t)))),
      ckptBody)),
    ckptNote,
    h('h2', {}, 'Result files'), resultFiles,
    h('div', { class: 'two-col' },
      h('section', {}, h('h2', {}, 'Hyperparameters'), h('table', { class: 'kv', 'data-testid': 'hyperparameters' }, hpBody)),
      h('section', {}, h('h2', {}, 'Events'), eventsNote, eventsEl)))

  let job: Job | null = null
  let checkpoints: Checkpoint[] = []
  const points = new Map<number, MetricPoint>()
  let metricsFrom: 'endpoint' | 'events' | null = null
  let lastMetricStep: number | null = null
  const eventsSeen = new Set<string>()

  cancelButton.addEventListener('click', () => {
    if (!confirm('Cancel this job? A running trainer stops within seconds.')) return
    cancelButton.disabled = true
    postJson<Job>(`${path}/cancel`, {}).then(j => { job = j; renderJob() }, (err: Error) => { alertError(cancelButton, err) })
      .finally(() => { cancelButton.disabled = false })
  })

  // a spec-draft job's checkpoints are drafters: no chat with them (they draft for the target)
  const isDrafterJob = () => job?.method?.type === 'spec-draft'

  function renderJob (): void {
    if (!job) return
    const j = job
    const drafter = isDrafterJob()
    title.replaceChildren('Job ', h('code', {}, j.id), ' ', statusBadge(j.status))
    cancelButton.hidden = ENDED.has(j.status)
    clear(summary, h('dl', {},
      h('dt', {}, drafter ? 'Target model' : 'Model'), h('dd', {}, j.model),
      h('dt', {}, 'Method'), h('dd', {}, drafter ? 'spec-draft (an EAGLE-3 drafter for the model)' : 'supervised'),
      h('dt', {}, 'Progress'), h('dd', {}, progress(j)),
      h('dt', {}, 'ETA'), h('dd', {}, j.status === 'running' ? fmtEta(j.estimated_finish) : '—'),
      h('dt', {}, 'Trained tokens'), h('dd', {}, j.trained_tokens ?? '—'),
      h('dt', {}, 'Created'), h('dd', {}, fmtTime(j.created_at)),
      h('dt', {}, 'Finished'), h('dd', {}, fmtTime(j.finished_at)),
      h('dt', {}, 'Training file'), h('dd', {}, h('code', {}, j.training_file)),
      h('dt', {}, 'Validation file'), h('dd', {}, j.validation_file ? h('code', {}, j.validation_file) : 'none'),
      h('dt', {}, drafter ? 'Drafter' : 'Fine-tuned model'), h('dd', {}, j.fine_tuned_model
        ? h('span', {}, h('code', {}, j.fine_tuned_model), ' ', drafter ? null : h('a', { href: `#/playground?model=${encodeURIComponent(j.fine_tuned_model)}` }, 'chat'))
        : '—')))
    if (j.status === 'failed') {
      clear(errorBox, h('div', { class: 'error-box', role: 'alert', 'data-testid': 'job-error' },
        h('strong', {}, 'This job failed. '), j.error?.message ?? 'The server gave no reason.',
        j.error?.code ? h('span', { class: 'muted' }, ` (code ${j.error.code}${j.error.param ? `, on ${j.error.param}` : ''})`) : null))
    } else if (j.status === 'cancelled') {
      clear(errorBox, h('div', { class: 'info-box' }, 'This job was cancelled.'))
    } else clear(errorBox)
    clear(hpBody, ...Object.entries(j.hyperparameters ?? j.method?.spec_draft?.hyperparameters ?? {}).map(([k, v]) =>
      h('tr', {}, h('th', {}, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v)))))
    clear(resultFiles, ...(j.result_files ?? []).map(f => downloadButton(f)))
    if ((j.result_files ?? []).length === 0) resultFiles.append(h('span', { class: 'muted' }, ENDED.has(j.status) ? 'none' : 'when the job has finished'))
  }

  function renderCheckpoints (): void {
    const losses = checkpoints.map(c => c.metrics.full_valid_loss).filter((v): v is number => typeof v === 'number')
    const best = losses.length > 0 ? Math.min(...losses) : null
    clear(ckptBody, ...checkpoints.map(c => {
      const isBest = best !== null && c.metrics.full_valid_loss === best
      const cells = METRIC_KEYS.map(k => h('td', { 'data-label': k }, k === 'step' ? (c.metrics.step ?? c.step_number) : fmtNum(c.metrics[k])))
      if (isBest) cells[5]?.append(' ', h('span', { class: 'badge best-badge' }, 'best'))
      return h('tr', { class: isBest ? 'best' : '', 'data-best': isBest ? 'true' : null, 'data-checkpoint-id': c.id },
        ...cells,
        h('td', { 'data-label': 'model' }, h('code', { class: 'wrap' }, c.fine_tuned_model_checkpoint), ' ',
          isDrafterJob() ? null : h('a', { href: `#/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, 'chat'),
          ...extraMetrics(c.metrics)),
        h('td', { 'data-label': 'files' }, h('div', { class: 'buttons' }, ...(c.result_files ?? []).map(f => downloadButton(f)))))
    }))
    ckptNote.textContent = checkpoints.length === 0
      ? 'No checkpoint yet (one per epoch).'
      : best === null ? 'No validation file: no best checkpoint by full_valid_loss.' : '★ best: the lowest full_valid_loss.'
  }

  function renderCurves (): void {
    // the checkpoints carry the validation metrics at their steps, whichever source the points came from
    for (const c of checkpoints) {
      const p = points.get(c.step_number) ?? { step: c.step_number }
      for (const k of ['valid_loss', 'valid_mean_token_accuracy', 'full_valid_loss', 'full_valid_mean_token_accuracy'] as const) {
        if (p[k] === null || p[k] === undefined) p[k] = c.metrics[k] ?? null
      }
      if ((p.train_loss === null || p.train_loss === undefined) && metricsFrom === 'events') p.train_loss = c.metrics.train_loss ?? null
      points.set(c.step_number, p)
    }
    charts.update([...points.values()].sort((a, b) => a.step - b.step))
    chartNote.textContent = metricsFrom === 'events'
      ? 'From the metrics events (this server has no metrics endpoint): no learning rate; at most ~100 training points.'
      : metricsFrom === 'endpoint' ? 'Per-step metrics from the metrics endpoint; validation at each checkpoint.' : ''
  }

  async function loadMetrics (): Promise<void> {
    if (metricsFrom === 'events') return
    const after = lastMetricStep === null ? '' : `&after_step=${lastMetricStep}`
    try {
      for (;;) {
        const page = await getJson<List<MetricPoint>>(`${path}/metrics?limit=10000${after}`)
        metricsFrom = 'endpoint'
        for (const p of page.data) {
          const old = points.get(p.step)
          const known = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== null))
          points.set(p.step, { ...old, ...known, step: p.step })
          lastMetricStep = Math.max(lastMetricStep ?? 0, p.step)
        }
        if (!page.has_more || page.data.length === 0) break
      }
    } catch (err) {
      if (err instanceof ApiError && [404, 400, 405, 422].includes(err.status) && metricsFrom === null) metricsFrom = 'events'
      else throw err
    }
  }

  let curvesQueued = false
  function curvesSoon (): void { // the metrics events come in bursts: one redraw a frame
    if (curvesQueued || metricsFrom !== 'events') return
    curvesQueued = true
    requestAnimationFrame(() => { curvesQueued = false; renderCurves() })
  }

  function addEvent (ev: JobEvent): void {
    if (eventsSeen.has(ev.id)) return
    eventsSeen.add(ev.id)
    if (ev.type === 'metrics' && metricsFrom === 'events' && ev.data && typeof ev.data.step === 'number') {
      const d = ev.data as Record<string, number>
      const p = points.get(d.step!) ?? { step: d.step! }
      p.train_loss = d.train_loss ?? null
      p.train_mean_token_accuracy = d.train_mean_token_accuracy ?? null
      points.set(p.step, p)
      curvesSoon()
    }
    const atBottom = eventsEl.scrollTop + eventsEl.clientHeight >= eventsEl.scrollHeight - 8
    eventsEl.append(h('li', { class: `level-${ev.level}` },
      h('time', {}, new Date(ev.created_at * 1000).toLocaleTimeString()), ' ', ev.message))
    while (eventsEl.childElementCount > 1000) eventsEl.firstElementChild?.remove()
    if (atBottom) eventsEl.scrollTop = eventsEl.scrollHeight
  }

  /** The SSE stream, reconnecting with Last-Event-ID; false when the server has none (poll instead). */
  async function streamEvents (): Promise<boolean> {
    let last: string | null = null
    while (!signal.aborted) {
      let res: Response
      try {
        const headers: Record<string, string> = { accept: 'text/event-stream' }
        if (last) headers['last-event-id'] = last
        res = await request(`${path}/events?stream=true`, { headers, signal })
      } catch (err) {
        if (signal.aborted) return true
        if (err instanceof ApiError && [400, 404, 405, 422].includes(err.status)) return false
        await sleep(2000, signal)
        continue
      }
      if (!(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
        await res.body?.cancel()
        return false
      }
      eventsNote.textContent = 'Live (stream).'
      let done = false
      try {
        await readSse(res, m => {
          if (m.data === '[DONE]') { done = true; return }
          const ev = JSON.parse(m.data) as JobEvent
          addEvent(ev)
          last = m.id ?? ev.id
          if (ev.type === 'metrics' || /checkpoint|completed|failed|cancel/i.test(ev.message)) void tick()
        }, signal)
      } catch { /* connection dropped: reconnect */ }
      if (done) { eventsNote.textContent = 'The job has ended.'; return true }
      await sleep(1000, signal)
    }
    return true
  }

  async function pollEvents (): Promise<void> {
    eventsNote.textContent = 'Live (polling every 2 s).'
    let last: string | null = null
    while (!signal.aborted) {
      try {
        let page: List<JobEvent>
        do {
          page = await getJson<List<JobEvent>>(`${path}/events?limit=100${last ? `&after=${encodeURIComponent(last)}` : ''}`)
          for (const ev of page.data) { addEvent(ev); last = ev.id }
        } while (page.has_more && !signal.aborted)
        if (job && ENDED.has(job.status) && page.data.length === 0) { eventsNote.textContent = 'The job has ended.'; return }
      } catch { /* retried */ }
      await sleep(2000, signal)
    }
  }

  let ticking = false
  let finalDone = false
  async function tick (): Promise<void> {
    if (ticking || signal.aborted) return
    ticking = true
    try {
      job = await getJson<Job>(path)
      renderJob()
      const ended = ENDED.has(job.status)
      await loadMetrics()
      checkpoints = (await getJson<List<Checkpoint>>(`${path}/checkpoints?limit=100`)).data
      renderCheckpoints()
      renderCurves()
      if (ended) finalDone = true
    } catch (err) {
      if (!job) clear(errorBox, h('div', { class: 'error-box', role: 'alert' }, `Could not load this job: ${(err as Error).message}`))
    } finally { ticking = false }
  }

  void (async () => {
    await tick()
    if (!job) return
    void streamEvents().then(async ok => { if (!ok) await pollEvents() })
    while (!signal.aborted && !finalDone) {
      await sleep(2000, signal)
      await tick()
    }
  })()
  return () => { ac.abort(); charts.destroy() }
}

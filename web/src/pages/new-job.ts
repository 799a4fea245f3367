// New job: upload a JSONL file (purpose fine-tune) or pick an uploaded one, see what the server and a
// quick look in the browser say about it, pick a model from GET /v1/models, set the Nebius
// hyperparameters (ranges and defaults from trainer/opentune_trainer/hyperparameters.json, the one
// definition, bundled at build time) and create the job. Each upload is checked at once against the
// chosen model with POST /v1/files/{file_id}/check (what `opentune data check` and a job's
// validating_files run), and the report is shown before any job exists.
import hyperparameters from '../../../trainer/opentune_trainer/hyperparameters.json'
import { getJson, postJson, request, type FileObject, type Job, type List, type Model } from '../api.js'
import { clear, fmtBytes, h } from '../dom.js'

interface HpDef { type: 'integer' | 'number' | 'boolean', minimum?: number, maximum?: number, exclusiveMinimum?: number, default: number | boolean }
const HP = hyperparameters.properties as Record<string, HpDef>

interface CheckReport {
  ok: boolean
  format?: string
  examples?: number
  tokens?: number
  loss_tokens?: number
  rows?: number
  seq_len?: number
  steps_per_epoch?: number
  batch_size?: number
  total_problems: number
  problems: Array<{ line: number | null, message: string }>
}

function range (d: HpDef): string {
  const lo = d.minimum !== undefined ? `≥ ${d.minimum}` : d.exclusiveMinimum !== undefined ? `> ${d.exclusiveMinimum}` : ''
  const hi = d.maximum !== undefined ? `≤ ${d.maximum}` : ''
  return [lo, hi].filter(Boolean).join(', ')
}

/** What the browser can tell without the server: lines, and which are not JSON objects. */
function lookAt (text: string): { lines: number, bad: number[], kinds: Set<string> } {
  const bad: number[] = []
  const kinds = new Set<string>()
  let lines = 0
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return
    lines++
    try {
      const v = JSON.parse(line) as unknown
      if (typeof v !== 'object' || v === null || Array.isArray(v)) bad.push(i + 1)
      else kinds.add('messages' in v ? 'chat (messages)' : 'prompt' in v ? 'prompt/completion' : 'text' in v ? 'text' : 'other')
    } catch { bad.push(i + 1) }
  })
  return { lines, bad, kinds }
}

export function newJobPage (main: HTMLElement): () => void {
  const picker = h('input', { type: 'file', accept: '.jsonl,.json,application/jsonl', 'data-testid': 'file-picker' })
  const uploadButton = h('button', { type: 'button', 'data-testid': 'upload' }, 'Upload')
  const report = h('div', { class: 'report', 'data-testid': 'upload-report' })
  const trainingSelect = h('select', { 'data-testid': 'training-file', required: true })
  const validationSelect = h('select', { 'data-testid': 'validation-file' })
  const modelSelect = h('select', { 'data-testid': 'model', required: true })
  const suffix = h('input', { type: 'text', maxlength: 64, placeholder: 'optional', 'data-testid': 'suffix' })
  const createButton = h('button', { type: 'submit', class: 'primary', 'data-testid': 'create' }, 'Create job')
  const result = h('div', { 'data-testid': 'create-result' })

  const inputs = new Map<string, HTMLInputElement>()
  const hpRows = Object.entries(HP).map(([name, d]) => {
    const input = d.type === 'boolean'
      ? h('input', { type: 'checkbox', name, checked: d.default === true, 'data-hp': name })
      : h('input', {
        type: 'number',
        name,
        value: String(d.default),
        min: d.minimum ?? d.exclusiveMinimum,
        max: d.maximum,
        step: d.type === 'integer' ? 1 : 'any',
        'data-hp': name,
      })
    inputs.set(name, input)
    return h('label', { class: 'hp' }, h('span', { class: 'hp-name' }, name), input,
      h('span', { class: 'muted' }, `default ${String(d.default)}${range(d) ? `; ${range(d)}` : ''}`))
  })

  const form = h('form', { class: 'new-job', novalidate: true },
    h('section', {}, h('h2', {}, '1. Training data'),
      h('p', { class: 'muted' }, 'A JSONL file: one JSON object per line (chat "messages", "prompt"/"completion" or "text"; see docs/datasets.md).'),
      h('div', { class: 'row' }, picker, uploadButton), report,
      h('label', { class: 'field' }, 'Training file ', trainingSelect),
      h('label', { class: 'field' }, 'Validation file ', validationSelect)),
    h('section', {}, h('h2', {}, '2. Model'), h('label', { class: 'field' }, 'Base model or checkpoint ', modelSelect),
      h('label', { class: 'field' }, 'Suffix ', suffix)),
    h('section', {}, h('h2', {}, '3. Hyperparameters'), h('div', { class: 'hps' }, ...hpRows)),
    h('div', { class: 'row' }, createButton), result)
  clear(main, h('h1', {}, 'New fine-tuning job'), form)

  async function loadFiles (select?: string): Promise<void> {
    const files = (await getJson<List<FileObject>>('/v1/files?purpose=fine-tune&limit=500')).data
    const opts = (none: string) => [h('option', { value: '' }, none),
      ...files.map(f => h('option', { value: f.id }, `${f.filename} (${fmtBytes(f.bytes)}, ${f.id.slice(0, 13)}…)`))]
    const keepT = select ?? trainingSelect.value
    const keepV = validationSelect.value
    clear(trainingSelect, ...opts('— choose —'))
    clear(validationSelect, ...opts('none'))
    trainingSelect.value = keepT
    validationSelect.value = keepV
  }
  async function loadModels (): Promise<void> {
    const models = (await getJson<List<Model>>('/v1/models')).data
    clear(modelSelect, ...models.map(m => h('option', { value: m.id }, m.id.startsWith('ft:') ? `${m.id} (checkpoint)` : m.id)))
  }
  loadFiles().catch(() => {})
  loadModels().catch((err: Error) => { clear(result, h('p', { class: 'error' }, `Could not list the models: ${err.message}`)) })

  uploadButton.addEventListener('click', () => {
    const file = picker.files?.[0]
    if (!file) { clear(report, h('p', { class: 'error', role: 'alert' }, 'Choose a file first.')); return }
    uploadButton.disabled = true
    clear(report, h('p', {}, `Uploading ${file.name}…`))
    void (async () => {
      try {
        const look = lookAt(await file.text())
        const body = new FormData()
        body.append('purpose', 'fine-tune')
        body.append('file', file, file.name)
        const uploaded = await (await request('/v1/files', { method: 'POST', body })).json() as FileObject
        await loadFiles(uploaded.id)
        clear(report, h('div', { class: look.bad.length ? 'warn-box' : 'ok-box', 'data-testid': 'report-ok', 'data-file-id': uploaded.id },
          h('p', {}, h('strong', {}, `Uploaded ${uploaded.filename}`), ` — ${fmtBytes(uploaded.bytes)}, status ${uploaded.status ?? 'processed'}, id `,
            h('code', {}, uploaded.id)),
          h('p', {}, `${look.lines} non-empty lines; format: ${[...look.kinds].join(', ') || 'unknown'}.`),
          look.bad.length
            ? h('p', {}, `${look.bad.length} line(s) are not JSON objects (first: line ${look.bad[0]}); the job will fail on them.`)
            : null,
          h('div', { 'data-testid': 'check-report' }, h('p', { class: 'muted' }, `Checking against ${modelSelect.value || 'the model'}…`))))
        await showCheck(uploaded.id)
      } catch (err) {
        clear(report, h('p', { class: 'error', role: 'alert' }, `Upload failed: ${(err as Error).message}`))
      } finally { uploadButton.disabled = false }
    })()
  })

  /** The server's report on the file for the chosen model and the rows' hyperparameters. */
  async function showCheck (fileId: string): Promise<void> {
    const into = report.querySelector('[data-testid="check-report"]')
    if (!into || !modelSelect.value) return
    const num = (name: string) => (inputs.get(name)?.value ? Number(inputs.get(name)?.value) : undefined)
    const body = {
      model: modelSelect.value,
      context_length: num('context_length'),
      batch_size: num('batch_size'),
      packing: inputs.get('packing')?.checked
    }
    try {
      const r = await postJson<CheckReport>(`/v1/files/${fileId}/check`, body)
      if (r.ok) {
        clear(into as HTMLElement, h('p', { 'data-testid': 'check-ok' }, `Valid for ${modelSelect.value}: ${r.examples} ${r.format} examples, ` +
          `${r.tokens} tokens (${r.loss_tokens} trained), ${r.rows} rows of ${r.seq_len}, ${r.steps_per_epoch} steps per epoch ` +
          `at batch size ${r.batch_size}.`))
      } else {
        clear(into as HTMLElement, h('div', { class: 'error', 'data-testid': 'check-problems' },
          h('p', {}, `${r.total_problems} problem(s); a job on this file would fail:`),
          h('ul', {}, ...r.problems.map(p => h('li', {}, `${p.line === null ? '' : `line ${p.line}: `}${p.message}`)))))
      }
    } catch (err) {
      clear(into as HTMLElement, h('p', { class: 'error' }, `The check failed: ${(err as Error).message}`))
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault()
    if (!trainingSelect.value) { clear(result, h('p', { class: 'error', role: 'alert' }, 'Choose or upload a training file.')); return }
    const hp: Record<string, number | boolean> = {}
    for (const [name, input] of inputs) {
      const d = HP[name]!
      if (d.type === 'boolean') hp[name] = input.checked
      else if (input.value.trim() !== '') hp[name] = Number(input.value)
    }
    const body: Record<string, unknown> = {
      model: modelSelect.value, training_file: trainingSelect.value, hyperparameters: hp,
    }
    if (validationSelect.value) body.validation_file = validationSelect.value
    if (suffix.value.trim()) body.suffix = suffix.value.trim()
    createButton.disabled = true
    postJson<Job>('/v1/fine_tuning/jobs', body).then(job => { location.hash = `#/jobs/${job.id}` },
      (err: Error) => { clear(result, h('p', { class: 'error', role: 'alert', 'data-testid': 'create-error' }, `The job was not created: ${err.message}`)) })
      .finally(() => { createButton.disabled = false })
  })
  return () => {}
}

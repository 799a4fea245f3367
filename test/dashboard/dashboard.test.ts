// The web dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core; no
// browser download), against a listening service that really trains opentune/tiny-llama on the CPU:
// sign in (a wrong key first), create a job from the New job page with files chosen in the file
// picker, watch the loss curve gain points, the checkpoints table fill with three rows and mark the
// best, download a result file, cancel a second job. OPENTUNE_SCREENSHOTS=1 (`npm run screenshots`)
// also writes docs/dashboard-jobs.png and docs/dashboard-job.png.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import { DASHBOARD_CSP, DASHBOARD_DIR } from '../../src/http/dashboard.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { startService, type Service } from '../../src/server.js'
import { testConfig } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const EXAMPLES = join(ROOT, 'examples', 'data')
const CHROMIUM = process.env.OPENTUNE_CHROMIUM ?? '/usr/bin/chromium'
const SCREENSHOTS = process.env.OPENTUNE_SCREENSHOTS === '1'
const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  console.warn(`\n!!! ${CHROMIUM} is missing: the dashboard browser tests are SKIPPED. ` +
    '`npm run setup` installs it (apt-get install chromium). !!!\n')
}

/** Rebuilds dist/web when a file under web/ is newer than the build (npm run build made it otherwise). */
function ensureBuilt (): void {
  const built = join(DASHBOARD_DIR, 'app.js')
  const newest = (dir: string): number => Math.max(...readdirSync(dir, { withFileTypes: true }).map(e =>
    e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs))
  if (existsSync(built) && statSync(built).mtimeMs >= newest(join(ROOT, 'web'))) return
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-web.mjs')], { stdio: 'inherit' })
}

async function until (check: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

describe('web dashboard in Chromium', { skip: !haveChromium && `${CHROMIUM} missing` }, () => {
  let service: Service
  let cleanup: () => Promise<void>
  let browser: Browser
  let page: Page
  let key: string
  const consoleErrors: string[] = []

  before(async () => {
    ensureBuilt()
    const made = await testConfig('sqlite', { OPENTUNE_DEVICE: 'cpu' })
    cleanup = made.cleanup
    service = await startService({ ...made.config, port: 0 })
    const project = await ensureProject(service.ctx.db, 'dashboard')
    key = (await createKey(service.ctx.db, project.id)).key
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } })
    page = await context.newPage()
    page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text()) })
    page.on('pageerror', e => { consoleErrors.push(String(e)) })
    page.on('dialog', d => { void d.accept() })
  })
  after(async () => {
    await browser?.close()
    await service?.close()
    await cleanup?.()
  })

  const api = async (path: string, init: RequestInit = {}): Promise<any> => {
    const res = await fetch(`${service.url}${path}`, {
      ...init, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers },
    })
    assert.ok(res.ok, `${path}: ${res.status} ${await res.clone().text()}`)
    return await res.json()
  }

  it('serves the page with a strict CSP, and the API keeps its own 404s', async () => {
    const res = await fetch(`${service.url}/`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP)
    assert.doesNotMatch(await res.text(), /<script>|<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script')
    assert.equal((await fetch(`${service.url}/app.js`)).status, 200)
    assert.equal((await fetch(`${service.url}/nope.js`)).status, 404)
    assert.equal((await fetch(`${service.url}/v1/files`)).status, 401)
  })

  it('a wrong key gets a clear message; the right one signs in', async () => {
    await page.goto(service.url)
    await page.getByTestId('api-key').fill('ot-this-is-not-a-key')
    await page.getByTestId('signin').click()
    await page.getByTestId('signin-error').getByText('not accepted').waitFor()
    assert.ok(!page.url().includes('ot-this-is-not-a-key'), 'the key is not in the URL')
    await page.getByTestId('api-key').fill(key)
    await page.getByTestId('signin').click()
    await page.getByTestId('jobs-table').waitFor()
    assert.ok(!page.url().includes(key), 'the key is not in the URL')
  })

  let jobId = ''
  it('creates a job from the New job page with files from the file picker', async () => {
    await page.goto(`${service.url}/#/new`)
    const upload = async (name: string) => {
      await page.getByTestId('file-picker').setInputFiles(join(EXAMPLES, name))
      await page.getByTestId('upload').click()
      const report = page.getByTestId('report-ok').filter({ hasText: name })
      await report.waitFor()
      const text = await report.textContent()
      const lines = readFileSync(join(EXAMPLES, name), 'utf8').trim().split('\n').length
      assert.match(text ?? '', new RegExp(`${lines} non-empty lines`))
      // the server's check for the model, shown before any job exists
      const checked = await report.getByTestId('check-ok').textContent({ timeout: 30_000 })
      assert.match(checked ?? '', new RegExp(`Valid for opentune/tiny-llama: ${lines} chat examples`))
      return (await report.getAttribute('data-file-id'))!
    }
    const validId = await upload('valid.jsonl')
    const trainId = await upload('train.jsonl')
    assert.equal(await page.getByTestId('training-file').inputValue(), trainId)
    await page.getByTestId('validation-file').selectOption(validId)
    await page.getByTestId('model').selectOption('opentune/tiny-llama')
    await page.getByTestId('suffix').fill('dash')
    // 12 steps an epoch, ~3 s each on a CPU (after the trainer's ~10 s start): the page sees the curve grow.
    // A random tiny model needs a large rate.
    for (const [name, value] of [['n_epochs', '3'], ['batch_size', '8'], ['learning_rate', '0.003']]) {
      await page.locator(`[data-hp="${name}"]`).fill(value!)
    }
    await page.locator('[data-hp="packing"]').uncheck()
    await page.getByTestId('create').click()
    await page.waitForURL(/#\/jobs\/ftjob-/)
    jobId = page.url().split('#/jobs/')[1]!
    const job = await api(`/v1/fine_tuning/jobs/${jobId}`)
    assert.equal(job.hyperparameters.n_epochs, 3)
    assert.equal(job.hyperparameters.batch_size, 8)
    assert.equal(job.validation_file, validId)
  })

  it('the loss curve gains points while it trains; three checkpoints, the best marked', async () => {
    const chart = page.locator('[data-chart="loss"]')
    const seen: number[] = []
    let shot = false
    const deadline = Date.now() + 90_000
    for (;;) {
      assert.ok(Date.now() < deadline, `job did not finish in time; points seen ${seen.join(',')}`)
      const n = Number(await chart.getAttribute('data-points'))
      if (seen.at(-1) !== n) seen.push(n)
      // (count first: getAttribute on a missing element would wait for it)
      const badge = page.locator('h1 [data-status]')
      const status = await badge.count() > 0 ? await badge.getAttribute('data-status') : null
      if (SCREENSHOTS && !shot && status === 'running' && n >= 16) {
        await page.screenshot({ path: join(ROOT, 'docs', 'dashboard-job.png'), fullPage: true })
        shot = true
      }
      if (status === 'succeeded' || status === 'failed') {
        if (status === 'failed') assert.fail(`the job failed: ${await page.getByTestId('job-error').textContent()}`)
        break
      }
      await page.waitForTimeout(250)
    }
    const growing = seen.filter(n => n > 0)
    assert.ok(growing.length >= 2 && growing.every((n, i) => i === 0 || n > growing[i - 1]!),
      `plotted train-loss points grew while it trained: ${seen.join(' → ')}`)
    const rows = page.getByTestId('checkpoints').locator('tbody tr')
    await until(async () => await rows.count() === 3, 'three checkpoint rows')
    assert.equal(await rows.count(), 3)
    const best = page.getByTestId('checkpoints').locator('tbody tr[data-best="true"]')
    assert.equal(await best.count(), 1)
    const checkpoints = (await api(`/v1/fine_tuning/jobs/${jobId}/checkpoints`)).data as { id: string, metrics: { full_valid_loss: number } }[]
    const lowest = checkpoints.reduce((a, b) => (b.metrics.full_valid_loss < a.metrics.full_valid_loss ? b : a))
    assert.equal(await best.getAttribute('data-checkpoint-id'), lowest.id)
    // after the job: the whole curve is there (every step from the metrics endpoint; without one, the
    // metrics events, which are at most ~100 a job)
    const res = await fetch(`${service.url}/v1/fine_tuning/jobs/${jobId}/metrics?limit=10000`, { headers: { authorization: `Bearer ${key}` } })
    const expected = res.status === 200
      ? ((await res.json()) as { data: { train_loss: number | null }[] }).data.filter(p => p.train_loss !== null).length
      : 90
    await until(async () => Number(await chart.getAttribute('data-points')) >= expected, `${expected} points plotted`)
    console.log(`# ${await page.getByTestId('metrics-source').textContent()} | events: ${await page.getByTestId('events-mode').textContent()}`)
    await page.getByTestId('events').getByText('The job has successfully completed').waitFor()
  })

  it('downloads a result file with the bearer header', async () => {
    const job = await api(`/v1/fine_tuning/jobs/${jobId}`)
    const fileId = job.result_files[0] as string
    const meta = await api(`/v1/files/${fileId}`)
    const button = page.locator(`button[data-file-id="${fileId}"]`).first()
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()])
    assert.equal(download.suggestedFilename(), meta.filename.split('/').pop())
    const path = await download.path()
    assert.equal(readFileSync(path).length, meta.bytes)
  })

  it('without the stream and metrics routes (a 404): polls the events and plots the metrics events', async () => {
    await page.route(/\/events\?stream=true/, route => route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":{"message":"Not Found"}}' }))
    await page.route(/\/metrics(\?|$)/, route => route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":{"message":"Not Found"}}' }))
    try {
      await page.goto(`${service.url}/#/jobs`)
      await page.goto(`${service.url}/#/jobs/${jobId}`)
      await page.getByTestId('events').getByText('The job has successfully completed').waitFor()
      await page.getByTestId('events-mode').getByText(/polling|ended/).waitFor()
      await page.getByTestId('metrics-source').getByText('metrics events').waitFor()
      const chart = page.locator('[data-chart="loss"]')
      await until(async () => Number(await chart.getAttribute('data-points')) >= 36, 'the 36 steps from the metrics events')
      assert.equal(await page.getByTestId('checkpoints').locator('tbody tr').count(), 3)
    } finally {
      await page.unrouteAll()
    }
  })

  it('the playground streams a checkpoint and its base model side by side', async () => {
    const job = await api(`/v1/fine_tuning/jobs/${jobId}`)
    await page.goto(`${service.url}/#/playground?model=${encodeURIComponent(job.fine_tuned_model)}`)
    await until(async () => await page.getByTestId('left-model').inputValue() === job.fine_tuned_model, 'the checkpoint chosen')
    assert.equal(await page.getByTestId('right-model').inputValue(), 'opentune/tiny-llama')
    await page.getByTestId('prompt').fill('Hello')
    await page.getByTestId('send').click()
    for (const side of ['left', 'right']) {
      const answer = page.getByTestId(`${side}-log`).locator('.msg.assistant')
      await answer.and(page.locator('[data-done]')).waitFor({ timeout: 60_000 })
      assert.equal(await answer.getAttribute('data-done'), 'ok', (await answer.textContent()) ?? '')
    }
  })

  it('a failed job says why in plain words', async () => {
    const form = new FormData()
    form.append('purpose', 'fine-tune')
    form.append('file', new Blob(['this is not json\n']), 'broken.jsonl')
    const res = await fetch(`${service.url}/v1/files`, { method: 'POST', body: form, headers: { authorization: `Bearer ${key}` } })
    const file = await res.json() as { id: string }
    const job = await api('/v1/fine_tuning/jobs', {
      method: 'POST', body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: file.id }),
    })
    await page.goto(`${service.url}/#/jobs/${job.id}`)
    await page.getByTestId('job-error').waitFor({ timeout: 20_000 })
    const failed = await api(`/v1/fine_tuning/jobs/${job.id}`)
    assert.equal(failed.status, 'failed')
    const shown = (await page.getByTestId('job-error').textContent()) ?? ''
    assert.ok(shown.startsWith('This job failed.') && shown.includes(failed.error.message), shown)
  })

  it('cancels a second job from its page', async () => {
    const job = await api('/v1/fine_tuning/jobs', {
      method: 'POST',
      body: JSON.stringify({
        model: 'opentune/tiny-llama',
        training_file: (await api(`/v1/fine_tuning/jobs/${jobId}`)).training_file,
        hyperparameters: { n_epochs: 20, batch_size: 1, packing: false },
      }),
    })
    if (SCREENSHOTS) {
      await page.goto(`${service.url}/#/jobs`)
      await page.locator(`tr[data-job-id="${job.id}"] [data-status="running"]`).waitFor({ timeout: 30_000 })
      await page.waitForTimeout(3500) // a few steps, for the progress bar
      await page.screenshot({ path: join(ROOT, 'docs', 'dashboard-jobs.png'), fullPage: true })
    }
    await page.goto(`${service.url}/#/jobs/${job.id}`)
    await page.getByTestId('cancel').click()
    await page.locator('h1 [data-status="cancelled"]').waitFor()
    assert.equal((await api(`/v1/fine_tuning/jobs/${job.id}`)).status, 'cancelled')
    await page.goto(`${service.url}/#/jobs`)
    await page.getByTestId('status-filter').selectOption('cancelled')
    // the list refetches with the filter: the cancelled row may be on screen before the new list is
    await page.locator(`tr[data-job-id="${jobId}"]`).waitFor({ state: 'detached', timeout: 10_000 })
      .catch(() => { throw new Error('the filter hides the succeeded job') })
    await page.locator(`tr[data-job-id="${job.id}"]`).waitFor()
    await page.getByTestId('status-filter').selectOption('')
  })

  it('logged no browser errors', () => {
    // the wrong key's 401 and the fallback test's 404s are logged by Chromium as failed resources
    assert.deepEqual(consoleErrors.filter(e => !/^Failed to load resource: .* status of (401|404)/.test(e)), [])
  })
})

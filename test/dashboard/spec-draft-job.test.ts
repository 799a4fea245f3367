// A spec-draft job's page in headless Chromium (as dashboard.test.ts drives it; no training: the
// runner is off and the drafter's checkpoint is registered by hand): its hyperparameters (under
// method.spec_draft), the drafter's own metrics beside each checkpoint, and no chat link to a drafter.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { chromium, type Browser } from 'playwright-core'
import { insertCheckpoint } from '../../src/fine-tuning/checkpoints.store.js'
import { updateJob } from '../../src/fine-tuning/jobs.store.js'
import { DASHBOARD_DIR } from '../../src/http/dashboard.js'
import { createKey, ensureProject } from '../../src/projects/keys.store.js'
import { startService, type Service } from '../../src/server.js'
import { CHAT_LINE, testConfig } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const CHROMIUM = process.env.OPENTUNE_CHROMIUM ?? '/usr/bin/chromium'

function ensureBuilt (): void {
  const built = join(DASHBOARD_DIR, 'app.js')
  const newest = (dir: string): number => Math.max(...readdirSync(dir, { withFileTypes: true }).map(e =>
    e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs))
  if (existsSync(built) && statSync(built).mtimeMs >= newest(join(ROOT, 'web'))) return
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-web.mjs')], { stdio: 'inherit' })
}

describe('a spec-draft job in the dashboard', { skip: !existsSync(CHROMIUM) && `${CHROMIUM} missing` }, () => {
  let service: Service
  let cleanup: () => Promise<void>
  let browser: Browser
  let key: string
  before(async () => {
    ensureBuilt()
    const made = await testConfig('sqlite', { OPENTUNE_RUNNER: '0' })
    cleanup = made.cleanup
    service = await startService({ ...made.config, port: 0 })
    key = (await createKey(service.ctx.db, (await ensureProject(service.ctx.db, 'main')).id)).key
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  })
  after(async () => {
    await browser?.close()
    await service?.close()
    await cleanup?.()
  })

  const api = async (path: string, init: RequestInit = {}): Promise<any> => {
    const res = await fetch(`${service.url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...init.headers } })
    assert.ok(res.ok, `${path}: ${res.status} ${await res.clone().text()}`)
    return await res.json()
  }

  it('shows the drafter\'s hyperparameters and metrics, and offers no chat with it', async () => {
    const form = new FormData()
    form.append('purpose', 'fine-tune')
    form.append('file', new Blob([CHAT_LINE]), 'train.jsonl')
    const file = await api('/v1/files', { method: 'POST', body: form })
    const method = { type: 'spec-draft', spec_draft: { hyperparameters: { num_decoding_heads: 2, loss: { type: 'lk_alpha' } } } }
    const job = await api('/v1/fine_tuning/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'opentune/tiny-llama', training_file: file.id, method }),
    })
    const name = `ft:opentune/tiny-llama:main::${job.id}:ckpt-step-4`
    const metrics = { step: 4, train_loss: 1.25, valid_acceptance_rate_1: 0.625, valid_acceptance_length: 1.5 }
    const checkpoint = { jobId: job.id, stepNumber: 4, fineTunedModelCheckpoint: name, metrics, resultFiles: [] }
    await insertCheckpoint(service.ctx.db, checkpoint)
    await updateJob(service.ctx.db, job.id, { status: 'succeeded', fine_tuned_model: name, finished_at: job.created_at })

    const page = await (await browser.newContext()).newPage()
    const errors: string[] = []
    page.on('pageerror', e => { errors.push(String(e)) })
    await page.goto(service.url)
    await page.getByTestId('api-key').fill(key)
    await page.getByTestId('signin').click()
    await page.getByTestId('jobs-table').waitFor()
    await page.goto(`${service.url}/#/jobs/${job.id}`)
    const row = page.getByTestId('checkpoints').locator('tbody tr')
    await row.first().waitFor()
    const hp = await page.getByTestId('hyperparameters').textContent()
    assert.match(hp ?? '', /num_decoding_heads\s*2/)
    assert.match(hp ?? '', /"type":"lk_alpha"/)
    const extra = await row.first().getByTestId('extra-metrics').textContent()
    assert.match(extra ?? '', /valid_acceptance_length 1\.5/)
    assert.match(extra ?? '', /valid_acceptance_rate_1 0\.625/)
    assert.equal(await page.getByRole('link', { name: 'chat' }).count(), 0, 'no chat with a drafter')
    assert.deepEqual(errors, [])
  })
})

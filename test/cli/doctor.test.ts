// `opentune doctor`: what a user runs to see whether training will use the GPU they have.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, describe, it } from 'node:test'

const ROOT = join(import.meta.dirname, '..', '..')
const run = promisify(execFile)
const doctor = async (env: Record<string, string>) =>
  await run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'doctor'], { cwd: ROOT, env: { ...process.env, ...env } })

describe('opentune doctor', () => {
  const dirs: string[] = []
  after(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

  it('names the interpreter, its torch and the device training will use', async () => {
    const { stdout } = await doctor({})
    assert.match(stdout, /^python +\S+ \(3\.\d+/m)
    assert.match(stdout, /^torch +\d+\.\d+/m)
    assert.match(stdout, /^device +(cpu|cuda)/m)
    assert.match(stdout, /^attention +\w+ \(available: /m)
  })

  it('exits 1 and says what to do when the interpreter has no PyTorch', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'opentune-bare-venv-'))
    dirs.push(dir)
    await run('python3', ['-m', 'venv', '--without-pip', dir]) // a fresh venv sees no site packages
    const failed = await doctor({ OPENTUNE_PYTHON: join(dir, 'bin', 'python') }).then(() => null, (err: { code: number, stdout: string }) => err)
    assert.ok(failed, 'doctor must fail')
    assert.equal(failed.code, 1)
    assert.match(failed.stdout, /^torch +NOT INSTALLED/m)
    assert.match(failed.stdout, /^PROBLEM +PyTorch is not installed for this interpreter: run `npm run setup`/m)
  })
})

// `opentune keys …`: what an operator types to hand out access.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'

const ROOT = join(import.meta.dirname, '..', '..')
const cli = async (env: Record<string, string>, ...args: string[]) =>
  (await promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env } })).stdout

describe('opentune keys', () => {
  let dataDir: string
  let env: Record<string, string>
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'opentune-keys-'))
    env = { OPENTUNE_DATA_DIR: dataDir, OPENTUNE_DATABASE_URL: '' }
  })
  after(async () => { await rm(dataDir, { recursive: true, force: true }) })

  it('list shows each key with its project name and the project id that ?ai_project_id= takes', async () => {
    const created = await cli(env, 'keys', 'create', '--project', 'team-a')
    const projectId = /\((proj_[^)]+)\)/.exec(created)?.[1]
    assert.ok(projectId, created)
    const listed = await cli(env, 'keys', 'list')
    assert.match(listed, new RegExp(`project=team-a \\(${projectId}\\)`))
    assert.doesNotMatch(listed, /sk-[\w-]{20,}/, 'never the key itself')
  })
})

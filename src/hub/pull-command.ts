// `opentune models pull <repo>[@revision]`: a Hub model downloaded into OPENTUNE_MODELS_DIR ahead of any
// job, the same way a job downloads it (download.ts: only what training needs, resumable, hash-checked,
// one download per repo across processes); then it is a model like any folder there.
import { join } from 'node:path'
import type { Config } from '../config.js'
import type { ModelSupport } from '../models/support.js'
import { downloadRepo } from './download.js'
import { hubAccess, hubFailure } from './hub-access.js'
import { isHubRepoName } from './hub-checkpoint.js'

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`

/** Exit code: 0 pulled (or already there), 1 the Hub refused or failed, 2 a bad argument. */
export async function modelsPullCommand (
  config: Readonly<Config>,
  support: ModelSupport,
  args: string[]
): Promise<number> {
  const [spec] = args
  const [repo = '', revision = null] = (spec ?? '').split('@')
  if (args.length !== 1 || !isHubRepoName(repo) || revision === '') {
    console.error('usage: opentune models pull <owner/name>[@revision]')
    return 2
  }
  if (config.hub.offline) {
    console.error(`HF_HUB_OFFLINE is set: ${repo} cannot be downloaded from the Hugging Face Hub.`)
    return 1
  }
  const dest = join(config.modelsDir, repo)
  const abort = new AbortController()
  const stop = () => abort.abort()
  process.once('SIGINT', stop) // a cut download resumes where it stopped next time
  let lastShown = 0
  try {
    const done = await downloadRepo({
      repo,
      revision,
      dest,
      workDir: join(config.modelsDir, '.hub'),
      access: hubAccess(config.hub, null, abort.signal),
      signal: abort.signal,
      refuseConfig: support.unsupportedReason,
      onPlan: (p) => console.error(`${p.repo}@${p.commit.slice(0, 12)}: ${p.files} files, ${mb(p.bytes)}`),
      onProgress: (p) => {
        if (Date.now() - lastShown < 2000 && p.files < p.totalFiles) return
        lastShown = Date.now()
        console.error(`  ${p.files}/${p.totalFiles} files, ${mb(p.bytes)} of ${mb(p.totalBytes)}`)
      },
      onWait: () => console.error(`waiting for another download of ${repo} to finish`),
    })
    console.log(done.fetched ? `pulled ${repo} into ${done.dir}` : `${repo} is already in ${done.dir}`)
    return 0
  } catch (err) {
    const failure = hubFailure(err, repo, config.hub, config.modelsDir)
    if (!failure) throw err
    console.error(failure.message)
    return 1
  } finally {
    process.off('SIGINT', stop)
  }
}

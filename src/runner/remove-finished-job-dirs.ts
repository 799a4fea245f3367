// The runner's sweep of job work dirs (token shards, trainer output) that nothing else removes.
import { readdir, rm } from 'node:fs/promises'
import type { AppContext } from '../context.js'
import { jobDir, jobsRoot } from '../fine-tuning/job-dir.js'
import { finishedJobIds } from '../fine-tuning/jobs.store.js'

/**
 * A job cancelled while queued (or during validation) is never claimed again, so nothing else
 * removes its token shards: the runner sweeps work dirs of finished jobs now and then.
 */
export async function removeFinishedJobDirs (ctx: AppContext): Promise<void> {
  const ids = await readdir(jobsRoot(ctx)).catch(() => [] as string[])
  for (const id of await finishedJobIds(ctx.db, ids, Date.now())) {
    await rm(jobDir(ctx, id), { recursive: true, force: true })
  }
}

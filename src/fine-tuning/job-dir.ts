// Where a job's working files live: token shards (data/), the trainer's output (out/), and the
// checkpoint it continues from (from/). Removed by the runner once the job has finished.
import { join } from 'node:path'
import type { AppContext } from '../context.js'

export const jobsRoot = (ctx: Pick<AppContext, 'config'>) => join(ctx.config.dataDir, 'jobs')
export const jobDir = (ctx: Pick<AppContext, 'config'>, jobId: string) => join(jobsRoot(ctx), jobId)

/** A continued checkpoint's files, linked at job creation: `weights/` (a full checkpoint's HF
 *  folder) and/or `adapter/` (a LoRA adapter), each complete once it holds `.complete`. */
export const sourceDirs = (ctx: Pick<AppContext, 'config'>, jobId: string) => ({
  weights: join(jobDir(ctx, jobId), 'from', 'weights'),
  adapter: join(jobDir(ctx, jobId), 'from', 'adapter'),
})

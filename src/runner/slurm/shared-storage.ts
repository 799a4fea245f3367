// The data directory must be on storage the compute nodes share (the spec, token shards and
// outputs live there, and the protocol file the runner follows): checked once per runner before
// its first submission by writing a marker and having a tiny Slurm job read it and answer.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { JobError } from '../../fine-tuning/jobs.schemas.js'
import { jobState, sbatch } from './commands.js'
import { shq } from './batch-script.js'
import { phaseOf, storageNotShared } from './states.js'

export interface StorageCheckInput {
  env: NodeJS.ProcessEnv
  dataDir: string
  /** partition, account, QoS: where the training jobs will run */
  placement: readonly string[]
  pollMs: number
  log: FastifyBaseLogger
}

/** null when a job on the cluster read our marker and answered through the same folder. */
export async function checkSharedStorage (o: StorageCheckInput): Promise<JobError | null> {
  const dir = join(o.dataDir, 'slurm-check')
  await mkdir(dir, { recursive: true })
  const token = randomBytes(8).toString('hex')
  const marker = join(dir, `${token}.marker`)
  const answer = join(dir, `${token}.answer`)
  await writeFile(marker, token)
  try {
    const id = await sbatch(o.env, [...o.placement, '--job-name=opentune-storage-check', '--time=5',
      '--output=/dev/null', '--error=/dev/null',
      `--wrap=[ "$(cat ${shq(marker)})" = ${token} ] && echo ${token} > ${shq(answer)}`])
    let said = ''
    for (;;) {
      const s = await jobState(o.env, id)
      if (s === null || phaseOf(s.state) === 'ended') break
      if (s.state === 'PENDING' && s.reason !== said) o.log.info({ slurmJobId: id, reason: s.reason }, 'storage check job pending')
      said = s.reason
      await sleep(o.pollMs)
    }
    if ((await readFile(answer, 'utf8').catch(() => '')).trim() === token) return null
    const message = storageNotShared(o.dataDir, null)
    o.log.error({ slurmJobId: id }, message)
    return { code: 'slurm_storage_not_shared', message, param: null }
  } finally {
    await rm(marker, { force: true })
    await rm(answer, { force: true })
  }
}

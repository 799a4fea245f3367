// The run each tracker integration of a job logs to (migration 0008): written once the run exists
// and after each batch the tracker acknowledged, so a runner that takes the job over after a
// restart continues the same run from the step after the last one it holds.
import type { Kysely } from 'kysely'
import type { Database } from '../db/database.js'

export interface RunState {
  runId: string | null // null until the run exists (MLflow's id is the server's)
  lines: number // W&B: history lines sent, the file_stream offset of the next one
  lastStep: number // the last step the run acknowledged; a resumed trainer's earlier steps are skipped
}

export async function loadRun (db: Kysely<Database>, jobId: string, slot: number): Promise<RunState | null> {
  const row = await db.selectFrom('tracker_runs').select(['run_id', 'lines', 'last_step'])
    .where('job_id', '=', jobId).where('slot', '=', slot).executeTakeFirst()
  return row ? { runId: row.run_id, lines: row.lines, lastStep: row.last_step } : null
}

export async function saveRun (
  db: Kysely<Database>,
  jobId: string,
  slot: number,
  kind: string,
  s: RunState
): Promise<void> {
  if (s.runId === null) return
  const values = { run_id: s.runId, lines: s.lines, last_step: s.lastStep }
  await db.insertInto('tracker_runs').values({ job_id: jobId, slot, kind, ...values })
    .onConflict(oc => oc.columns(['job_id', 'slot']).doUpdateSet(values))
    .execute()
}

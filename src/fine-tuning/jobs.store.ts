// SQL for fine-tuning jobs. Reads are scoped by project; another project's job is not found.
import type { Kysely, Updateable } from 'kysely'
import type { Database, JobRow, JobTable, NewJob } from '../db/database.js'
import { toPage, unknownAfter, type Page, type PageRequest } from '../db/paging.js'

export async function insertJob (db: Kysely<Database>, row: NewJob): Promise<JobRow> {
  return await db.insertInto('fine_tuning_jobs').values(row).returningAll().executeTakeFirstOrThrow()
}

export async function getJob (db: Kysely<Database>, projectId: string, id: string): Promise<JobRow | undefined> {
  return await db.selectFrom('fine_tuning_jobs').selectAll().where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
}

/** For the runner, which works across projects. */
export async function getJobById (db: Kysely<Database>, id: string): Promise<JobRow | undefined> {
  return await db.selectFrom('fine_tuning_jobs').selectAll().where('id', '=', id).executeTakeFirst()
}

export async function listJobs (db: Kysely<Database>, projectId: string, req: PageRequest): Promise<Page<JobRow>> {
  let q = db.selectFrom('fine_tuning_jobs').selectAll().where('project_id', '=', projectId)
  if (req.after !== undefined) {
    const after = await getJob(db, projectId, req.after)
    if (!after) throw unknownAfter(req.after)
    q = q.where('seq', req.order === 'desc' ? '<' : '>', after.seq)
  }
  return toPage(await q.orderBy('seq', req.order).limit(req.limit + 1).execute(), req.limit)
}

/**
 * Updates a job only while its status is one of `from` (compare-and-set), so a cancel and a
 * runner's transition cannot overwrite each other. Returns the updated row, or undefined.
 */
export async function updateJobIf (db: Kysely<Database>, id: string, from: readonly string[], set: Updateable<JobTable>): Promise<JobRow | undefined> {
  return await db.updateTable('fine_tuning_jobs').set(set).where('id', '=', id).where('status', 'in', from)
    .returningAll().executeTakeFirst()
}

export async function updateJob (db: Kysely<Database>, id: string, set: Updateable<JobTable>): Promise<void> {
  await db.updateTable('fine_tuning_jobs').set(set).where('id', '=', id).execute()
}

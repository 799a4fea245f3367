// SQL for files. Every query is scoped by project: another project's file is simply not found.
import type { Kysely } from 'kysely'
import type { Database, FileRow } from '../db/database.js'
import { toPage, unknownAfter, type Page, type PageRequest } from '../db/paging.js'

export const UNFINISHED_STATUSES = ['validating_files', 'queued', 'running'] as const

export async function insertFile (db: Kysely<Database>, row: Omit<FileRow, 'seq'>): Promise<FileRow> {
  return await db.insertInto('files').values(row).returningAll().executeTakeFirstOrThrow()
}

export async function getFile (db: Kysely<Database>, projectId: string, id: string): Promise<FileRow | undefined> {
  return await db.selectFrom('files').selectAll().where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
}

export async function listFiles (db: Kysely<Database>, projectId: string, req: PageRequest & { purpose?: string | undefined }): Promise<Page<FileRow>> {
  let q = db.selectFrom('files').selectAll().where('project_id', '=', projectId)
  if (req.purpose) q = q.where('purpose', '=', req.purpose)
  if (req.after !== undefined) {
    const after = await getFile(db, projectId, req.after)
    if (!after || (req.purpose && after.purpose !== req.purpose)) throw unknownAfter(req.after)
    q = q.where('seq', req.order === 'desc' ? '<' : '>', after.seq)
  }
  const rows = await q.orderBy('seq', req.order).limit(req.limit + 1).execute()
  return toPage(rows, req.limit)
}

export async function deleteFile (db: Kysely<Database>, projectId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom('files').where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
  return Number(result.numDeletedRows) > 0
}

/** The id of an unfinished job that reads this file, if any (such a file cannot be deleted). */
export async function unfinishedJobUsing (db: Kysely<Database>, projectId: string, fileId: string): Promise<string | undefined> {
  const row = await db.selectFrom('fine_tuning_jobs').select('id')
    .where('project_id', '=', projectId)
    .where('status', 'in', UNFINISHED_STATUSES)
    .where(eb => eb.or([eb('training_file', '=', fileId), eb('validation_file', '=', fileId)]))
    .executeTakeFirst()
  return row?.id
}

export async function existingFileIds (db: Kysely<Database>, ids: string[]): Promise<Set<string>> {
  const found = new Set<string>()
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom('files').select('id').where('id', 'in', ids.slice(i, i + 500)).execute()
    for (const r of rows) found.add(r.id)
  }
  return found
}

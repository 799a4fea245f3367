// SQL for files. Every query is scoped by project: another project's file is simply not found.
import type { Kysely, Selectable } from 'kysely'
import type { Database, FileTable } from '../db/database.js'
import { toPage, unknownAfter, type Page, type PageRequest } from '../db/paging.js'
import { nowSeconds } from '../ids.js'
import type { FilePurpose } from './files.schemas.js'

/** No JSON columns: a file row is what is stored. */
export type FileRow = Selectable<FileTable>

export async function insertFile (db: Kysely<Database>, row: Omit<FileRow, 'seq'>): Promise<FileRow> {
  return await db.insertInto('files').values(row).returningAll().executeTakeFirstOrThrow()
}

/** What training leaves in the Files API: a checkpoint's files and the job's metrics CSV. */
export async function insertResultFile (
  db: Kysely<Database>,
  f: { id: string, projectId: string, filename: string, bytes: number }
): Promise<FileRow> {
  return await insertFile(db, {
    id: f.id,
    project_id: f.projectId,
    filename: f.filename,
    purpose: 'fine-tune-results',
    bytes: f.bytes,
    created_at: nowSeconds(),
    status: 'processed',
    status_details: null,
  })
}

export async function getFile (db: Kysely<Database>, projectId: string, id: string): Promise<FileRow | undefined> {
  return await db.selectFrom('files').selectAll().where('id', '=', id).where('project_id', '=', projectId).executeTakeFirst()
}

/** Those of `ids` that are this project's files (any order). */
export async function getFiles (db: Kysely<Database>, projectId: string, ids: readonly string[]): Promise<FileRow[]> {
  if (ids.length === 0) return []
  return await db.selectFrom('files').selectAll().where('project_id', '=', projectId).where('id', 'in', ids).execute()
}

export async function listFiles (
  db: Kysely<Database>,
  projectId: string,
  req: PageRequest & { purpose?: FilePurpose | undefined }
): Promise<Page<FileRow>> {
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

export async function existingFileIds (db: Kysely<Database>, ids: string[]): Promise<Set<string>> {
  const found = new Set<string>()
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db.selectFrom('files').select('id').where('id', 'in', ids.slice(i, i + 500)).execute()
    for (const r of rows) found.add(r.id)
  }
  return found
}

// Cursor pagination shared by every list: `after` names an item of the same list (exclusive) and
// pages are cut by the insertion-order column `seq`, so ids stay opaque and order is total.
import type { Kysely } from 'kysely'
import { fieldError } from '../errors.js'
import type { Database } from './database.js'

export interface PageRequest {
  limit: number
  after?: string | undefined
  order: 'asc' | 'desc'
}

export interface Page<T> {
  data: T[]
  hasMore: boolean
}

export function unknownAfter (after: string) {
  return fieldError(['query', 'after'], `No item with id '${after.slice(0, 80)}' in this list`, 'value_error', after)
}

/** Rows were fetched with limit + 1: the extra row only says whether there is more. */
export function toPage<T> (rows: T[], limit: number): Page<T> {
  return { data: rows.slice(0, limit), hasMore: rows.length > limit }
}

/** One page of a job's events or checkpoints, oldest first: the two lists page alike. Kysely
 *  types the rows with both tables' columns; each caller declares its own table's row type. */
export async function pageOfJob (db: Kysely<Database>, table: 'job_events' | 'checkpoints', jobId: string,
  req: Omit<PageRequest, 'order'>) {
  let q = db.selectFrom(table).selectAll().where('job_id', '=', jobId)
  if (req.after !== undefined) {
    const after = await db.selectFrom(table).select('seq').where('id', '=', req.after).where('job_id', '=', jobId).executeTakeFirst()
    if (!after) throw unknownAfter(req.after)
    q = q.where('seq', '>', after.seq)
  }
  return toPage(await q.orderBy('seq', 'asc').limit(req.limit + 1).execute(), req.limit)
}

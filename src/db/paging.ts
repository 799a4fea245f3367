// Cursor pagination shared by every list: `after` names an item of the same list (exclusive) and
// pages are cut by the insertion-order column `seq`, so ids stay opaque and order is total.
import { fieldError } from '../errors.js'

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

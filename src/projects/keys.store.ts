// Projects and their API keys. Only a sha256 of each key is stored; keys are 256 random bits, so a
// fast hash is enough (nothing to brute-force), and lookups go by a short prefix so the final
// comparison can be constant-time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Kysely } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { Database } from '../db/database.js'
import { newKeyId, newProjectId, nowSeconds } from '../ids.js'

const PREFIX_LENGTH = 12 // "sk-" + 9 characters: enough to tell keys apart in `keys list`

export interface Project { id: string, name: string, createdAt: number }
export interface KeyInfo {
  id: string
  projectId: string
  projectName: string
  prefix: string
  createdAt: number
  revokedAt: number | null
}

const hashKey = (key: string) => createHash('sha256').update(key).digest('hex')

// A key that authenticated is remembered (by its hash) for a few seconds, so most requests make no
// key query: that query was about a fifth of the database time of a checkpoint GET (docs/benchmarks.md).
// revokeKeys() forgets at once in its own process; a revocation by another process (`opentune keys
// revoke` against a running server) takes effect within KEY_CACHE_MS.
const KEY_CACHE_MS = 5000
const KEY_CACHE_MAX = 10_000
const keyCaches = new WeakMap<Kysely<Database>, LRUCache<string, string>>() // key hash → project id

export async function ensureProject (db: Kysely<Database>, name: string): Promise<Project> {
  const existing = await db.selectFrom('projects').selectAll().where('name', '=', name).executeTakeFirst()
  if (existing) return { id: existing.id, name: existing.name, createdAt: existing.created_at }
  const row = { id: newProjectId(), name, created_at: nowSeconds() }
  await db.insertInto('projects').values(row).onConflict(oc => oc.column('name').doNothing()).execute()
  const saved = await db.selectFrom('projects').selectAll().where('name', '=', name).executeTakeFirstOrThrow()
  return { id: saved.id, name: saved.name, createdAt: saved.created_at }
}

export async function createKey (db: Kysely<Database>, projectId: string): Promise<{ key: string, info: KeyInfo }> {
  const key = `sk-${randomBytes(32).toString('base64url')}`
  const row = {
    id: newKeyId(),
    project_id: projectId,
    prefix: key.slice(0, PREFIX_LENGTH),
    hash: hashKey(key),
    created_at: nowSeconds(),
    revoked_at: null,
  }
  await db.insertInto('api_keys').values(row).execute()
  return {
    key,
    info: {
      id: row.id,
      projectId,
      projectName: await projectName(db, projectId),
      prefix: row.prefix,
      createdAt: row.created_at,
      revokedAt: null,
    },
  }
}

/** A project's name (it appears in fine-tuned model names); throws for an unknown id. */
export async function projectName (db: Kysely<Database>, projectId: string): Promise<string> {
  return (await db.selectFrom('projects').select('name').where('id', '=', projectId).executeTakeFirstOrThrow()).name
}

export async function listKeys (db: Kysely<Database>): Promise<KeyInfo[]> {
  const rows = await db.selectFrom('api_keys')
    .innerJoin('projects', 'projects.id', 'api_keys.project_id')
    .select(['api_keys.id', 'api_keys.project_id', 'projects.name', 'api_keys.prefix', 'api_keys.created_at', 'api_keys.revoked_at'])
    .orderBy('api_keys.created_at').orderBy('api_keys.id')
    .execute()
  return rows.map(r => ({
    id: r.id,
    projectId: r.project_id,
    projectName: r.name,
    prefix: r.prefix,
    createdAt: r.created_at,
    revokedAt: r.revoked_at,
  }))
}

/** Revokes every live key whose prefix starts with `prefix`; returns how many. */
export async function revokeKeys (db: Kysely<Database>, prefix: string): Promise<number> {
  if (prefix.length < 6) throw new Error('give at least 6 characters of the key prefix')
  // Matched in JS rather than with LIKE: '_' is a LIKE wildcard and a legal key character.
  const live = await db.selectFrom('api_keys').select(['id', 'prefix']).where('revoked_at', 'is', null).execute()
  const ids = live.filter(k => k.prefix.startsWith(prefix) || prefix.startsWith(k.prefix)).map(k => k.id)
  if (ids.length === 0) return 0
  await db.updateTable('api_keys').set({ revoked_at: nowSeconds() }).where('id', 'in', ids).execute()
  keyCaches.get(db)?.clear()
  return ids.length
}

const plausibleKey = (key: string) => key.startsWith('sk-') && key.length >= PREFIX_LENGTH && key.length <= 200

/** The project of a key that authenticated in the last few seconds, without touching the database. */
export function recentlyAuthenticated (db: Kysely<Database>, key: string): string | undefined {
  if (!plausibleKey(key)) return undefined
  return keyCaches.get(db)?.get(hashKey(key))
}

/** The project id a key belongs to, or null for an unknown or revoked key. */
export async function authenticate (db: Kysely<Database>, key: string): Promise<string | null> {
  if (!plausibleKey(key)) return null
  const hash = hashKey(key)
  let cache = keyCaches.get(db)
  if (cache === undefined) keyCaches.set(db, cache = new LRUCache({ max: KEY_CACHE_MAX, ttl: KEY_CACHE_MS }))
  const known = cache.get(hash)
  if (known !== undefined) return known
  const candidates = await db.selectFrom('api_keys').select(['hash', 'project_id', 'revoked_at'])
    .where('prefix', '=', key.slice(0, PREFIX_LENGTH)).execute()
  const wanted = Buffer.from(hash, 'hex')
  let projectId: string | null = null
  for (const c of candidates) {
    // Compare every candidate, matching or not, so timing does not depend on where a match is.
    const same = timingSafeEqual(Buffer.from(c.hash, 'hex'), wanted)
    if (same && c.revoked_at === null) projectId = c.project_id
  }
  if (projectId === null) cache.delete(hash)
  else cache.set(hash, projectId)
  return projectId
}

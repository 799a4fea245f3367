// Opens the store: SQLite (one file in the data dir, WAL) by default, PostgreSQL when a URL is set.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, PostgresDialect, SqliteDialect, type SqliteDatabase } from 'kysely'
import { LRUCache } from 'lru-cache'
import pg from 'pg'
import type { Config } from '../config.js'
import type { Database } from './database.js'
import { migrateToLatest } from './migrations.js'
import { withStorableText } from './storable-text.js'

export type Dialect = 'sqlite' | 'postgres'

export interface Store {
  db: Kysely<Database>
  dialect: Dialect
  close: () => Promise<void>
}

type StoreConfig = Pick<Config, 'dataDir' | 'databaseUrl' | 'databaseSchema'>

export async function openStore (config: StoreConfig, opts: { migrate?: boolean } = {}): Promise<Store> {
  const store = config.databaseUrl
    ? await openPostgres(config.databaseUrl, config.databaseSchema)
    : openSqlite(config.dataDir)
  if (opts.migrate !== false) {
    try {
      await migrateToLatest(store.db, store.dialect, config.databaseUrl ? config.databaseSchema : null)
    } catch (err) {
      await store.close()
      throw err
    }
  }
  return store
}

function openSqlite (dataDir: string): Store {
  mkdirSync(dataDir, { recursive: true })
  const sqlite = new SQLite(join(dataDir, 'opentune.db'))
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = NORMAL') // with WAL: durable across process crashes, one fsync per checkpoint
  sqlite.pragma('busy_timeout = 5000') // a runner process may hold the write lock briefly
  sqlite.pragma('foreign_keys = ON')
  const dialect = withStorableText(new SqliteDialect({ database: reusingStatements(sqlite) }))
  const db = new Kysely<Database>({ dialect })
  return { db, dialect: 'sqlite', close: () => db.destroy() }
}

// Kysely's SQLite driver prepares every query anew, which was 17% of the CPU of a checkpoint GET
// (docs/benchmarks.md); our queries are few and repeat, so their prepared statements are kept.
// Bounded (least recently used goes), because `IN (?, ?, …)` lists make one-off SQL; a statement
// still iterating is not reused.
function reusingStatements (sqlite: SQLite.Database, max = 256): SqliteDatabase {
  const statements = new LRUCache<string, SQLite.Statement>({ max })
  return {
    close: () => { statements.clear(); sqlite.close() },
    prepare (sql) {
      let stmt = statements.get(sql)
      if (stmt === undefined || stmt.busy) {
        stmt = sqlite.prepare(sql)
        statements.set(sql, stmt)
      }
      return stmt
    },
  }
}

// node-pg returns int8 as strings to avoid precision loss; our int8 columns (bytes, seconds, seq)
// stay far below 2^53, so numbers are the honest type.
const pgTypes = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'),
}

async function openPostgres (url: string, schema: string | null): Promise<Store> {
  if (schema) {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
    } finally {
      await client.end()
    }
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    types: pgTypes,
    ...(schema ? { options: `-c search_path="${schema}"` } : {}),
  })
  const db = new Kysely<Database>({ dialect: withStorableText(new PostgresDialect({ pool })) })
  return { db, dialect: 'postgres', close: () => db.destroy() }
}

// Text that PostgreSQL cannot store never reaches a store. PostgreSQL's text refuses U+0000
// ("invalid byte sequence for encoding UTF8: 0x00": a 500 for `GET /v1/files/x%00`, a job's
// `internal_error` for a dataset whose error message quotes a NUL), and a lone UTF-16 surrogate
// (`"\ud800"` in a JSON body) has no UTF-8 form at all; SQLite stored both as given. So every string
// bound to any query — built, raw or precompiled (compiled-query.ts), in a transaction or not — is
// made storable here, below Kysely, identically on both dialects:
//   - U+0000 becomes the six characters `\u0000` (how JSON writes it, so a reader sees what it was);
//   - a lone surrogate becomes U+FFFD (what UTF-8 encoders put in its place).
// A value stored is then the same on both stores, and a lookup by an id or cursor holding either
// (which no generated id does) is a lookup of another id that cannot exist: simply not found.
// JSON columns need nothing: JSON.stringify already escapes both.
import type {
  CompiledQuery, DatabaseConnection, Dialect, Driver, QueryResult, TransactionSettings,
} from 'kysely'

// In /u mode a well-formed pair is one code point (not Cs); only a lone surrogate is Cs.
const UNSTORABLE = /\0|\p{Cs}/u
const LONE_SURROGATE = /\p{Cs}/gu

/** The string as it can be stored on both dialects; the same string when it already can be. */
export function storableText (text: string): string {
  if (!UNSTORABLE.test(text)) return text
  return text.replace(LONE_SURROGATE, '\ufffd').replaceAll('\0', '\\u0000')
}

function storableParameters (query: CompiledQuery): CompiledQuery {
  const { parameters } = query
  // the common case allocates nothing: ~150 ns for a query of three ids, 0.2% of a checkpoint GET's ~70 µs
  if (!parameters.some(p => typeof p === 'string' && UNSTORABLE.test(p))) return query
  return { ...query, parameters: parameters.map(p => (typeof p === 'string' ? storableText(p) : p)) }
}

/** The dialect, with every query parameter made storable (see above). */
export function withStorableText (dialect: Dialect): Dialect {
  return {
    createDriver: () => new StorableTextDriver(dialect.createDriver()),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createAdapter: () => dialect.createAdapter(),
    createIntrospector: db => dialect.createIntrospector(db),
  }
}

/** A connection that cleans parameters; the inner driver is always handed its own connection
 *  (PostgreSQL's releases it through a private member a wrapper does not have). */
class StorableConnection implements DatabaseConnection {
  constructor (readonly inner: DatabaseConnection) {}

  async executeQuery<R> (query: CompiledQuery): Promise<QueryResult<R>> {
    return await this.inner.executeQuery<R>(storableParameters(query))
  }

  streamQuery<R> (query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(storableParameters(query), chunkSize)
  }
}

const innerOf = (connection: DatabaseConnection): DatabaseConnection =>
  connection instanceof StorableConnection ? connection.inner : connection

class StorableTextDriver implements Driver {
  // one wrapper per pooled connection, so a query costs no allocation here
  readonly #wrappers = new WeakMap<DatabaseConnection, StorableConnection>()

  constructor (private readonly inner: Driver) {
    // savepoints are optional in Kysely's Driver: offered only where the inner driver has them
    const { savepoint, rollbackToSavepoint, releaseSavepoint } = inner
    if (savepoint) this.savepoint = (c, name, compile) => savepoint.call(inner, innerOf(c), name, compile)
    if (rollbackToSavepoint) {
      this.rollbackToSavepoint = (c, name, compile) => rollbackToSavepoint.call(inner, innerOf(c), name, compile)
    }
    if (releaseSavepoint) {
      this.releaseSavepoint = (c, name, compile) => releaseSavepoint.call(inner, innerOf(c), name, compile)
    }
  }

  savepoint?: Driver['savepoint']
  rollbackToSavepoint?: Driver['rollbackToSavepoint']
  releaseSavepoint?: Driver['releaseSavepoint']

  async init (): Promise<void> { await this.inner.init() }

  async acquireConnection (): Promise<DatabaseConnection> {
    const connection = await this.inner.acquireConnection()
    let wrapper = this.#wrappers.get(connection)
    if (wrapper === undefined) this.#wrappers.set(connection, wrapper = new StorableConnection(connection))
    return wrapper
  }

  async beginTransaction (c: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await this.inner.beginTransaction(innerOf(c), settings)
  }

  async commitTransaction (c: DatabaseConnection): Promise<void> { await this.inner.commitTransaction(innerOf(c)) }
  async rollbackTransaction (c: DatabaseConnection): Promise<void> { await this.inner.rollbackTransaction(innerOf(c)) }
  async releaseConnection (c: DatabaseConnection): Promise<void> { await this.inner.releaseConnection(innerOf(c)) }
  async destroy (): Promise<void> { await this.inner.destroy() }
}

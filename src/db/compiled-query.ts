// Kysely builds and compiles a query on every call: 15 µs of the ~70 µs of CPU a checkpoint GET
// took (docs/benchmarks.md). A hot query is built once per database (the SQL differs by dialect)
// with named placeholders, and then only its compiled SQL runs, with the values in their places.
// (Not to be confused with SQLite's prepared statements, which connect.ts keeps, nor with dataset
// preparation in src/data.)
import { CompiledQuery, type Compilable, type Kysely } from 'kysely'

const MARK = '\u0000opentune-arg:'

export function compiledQuery<DB, Args extends Record<string, unknown>, Row> (
  build: (db: Kysely<DB>, arg: (name: keyof Args & string) => string) => Compilable<Row>
): (db: Kysely<DB>, args: Args) => Promise<Row[]> {
  const compiled = new WeakMap<Kysely<DB>, { sql: string, names: string[] }>()
  return async (db, args) => {
    let query = compiled.get(db)
    if (query === undefined) {
      const { sql, parameters } = build(db, name => MARK + name).compile()
      const names = parameters.map(p => {
        if (typeof p !== 'string' || !p.startsWith(MARK)) throw new Error(`a compiled query takes only named arguments: ${sql}`)
        return p.slice(MARK.length)
      })
      compiled.set(db, query = { sql, names })
    }
    const { rows } = await db.executeQuery<Row>(CompiledQuery.raw(query.sql, query.names.map(n => args[n])))
    return rows
  }
}

// What every route and service is handed: built once in server.ts (or a test), never global.
import type { Kysely } from 'kysely'
import type { Config } from './config.js'
import type { Store } from './db/connect.js'
import type { Database } from './db/database.js'
import type { BlobStore } from './files/blob-storage.js'
import type { ModelCatalog } from './models/catalog.js'

export interface AppContext {
  config: Readonly<Config>
  store: Store
  db: Kysely<Database>
  blobs: BlobStore
  models: ModelCatalog
}

export async function openContext (config: Readonly<Config>): Promise<AppContext> {
  const { openStore } = await import('./db/connect.js')
  const { makeBlobStore } = await import('./files/blob-storage.js')
  const { makeModelCatalog } = await import('./models/catalog.js')
  const { loadModelSupport } = await import('./models/support.js')
  const store = await openStore(config)
  return {
    config,
    store,
    db: store.db,
    blobs: await makeBlobStore(config.dataDir),
    models: makeModelCatalog(config.modelsDir, config.builtinModelsDir, loadModelSupport(config.trainerDir)),
  }
}

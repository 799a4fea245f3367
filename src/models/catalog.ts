// Base models that can be fine-tuned: the built-in tiny model shipped with the repo, plus every
// Hugging Face folder (one with config.json) under OPENTUNE_MODELS_DIR, named by its path there
// ("Qwen/Qwen2.5-0.5B-Instruct"), one or two levels deep, whose architecture the trainer
// implements (support.ts). Other folders are found, so a job on one is told why it cannot train,
// but not listed.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { ModelSupport } from './support.js'

export const BUILTIN_TINY_MODEL = 'opentune/tiny-llama'

export interface BaseModel {
  id: string
  dir: string // the folder as shipped or found; the built-in gets its weights made on first use
  builtin: boolean
  createdAt: number
  /** Why the trainer cannot train it (its config.json is outside supported_models.json), if so. */
  unsupported?: string
}

export interface ModelCatalog {
  /** The models that can be fine-tuned. */
  list: () => BaseModel[]
  /** Any model folder by id, also one that cannot be fine-tuned (then `unsupported` says why). */
  find: (id: string) => BaseModel | undefined
  support: ModelSupport
}

const SAFE_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/

export function makeModelCatalog (modelsDir: string, builtinModelsDir: string, support: ModelSupport): ModelCatalog {
  const builtin = (): BaseModel => ({
    id: BUILTIN_TINY_MODEL,
    dir: join(builtinModelsDir, BUILTIN_TINY_MODEL),
    builtin: true,
    createdAt: 0,
  })
  const fromDir = (id: string): BaseModel | undefined => {
    if (!SAFE_ID.test(id) || id.includes('..')) return undefined
    const dir = join(modelsDir, id)
    const config = join(dir, 'config.json')
    if (!existsSync(config)) return undefined
    const unsupported = unsupportedReason(support, config)
    return {
      id,
      dir,
      builtin: false,
      createdAt: Math.floor(statSync(config).mtimeMs / 1000),
      ...(unsupported ? { unsupported } : {}),
    }
  }
  const listed = (m: BaseModel | undefined): m is BaseModel =>
    m !== undefined && m.id !== BUILTIN_TINY_MODEL && !m.unsupported
  return {
    list () {
      const found: BaseModel[] = [builtin()]
      for (const first of safeReaddir(modelsDir)) {
        const direct = fromDir(first)
        if (direct) { if (listed(direct)) found.push(direct); continue }
        for (const second of safeReaddir(join(modelsDir, first))) {
          const nested = fromDir(`${first}/${second}`)
          if (listed(nested)) found.push(nested)
        }
      }
      return found.sort((a, b) => (a.builtin === b.builtin ? a.id.localeCompare(b.id) : a.builtin ? -1 : 1))
    },
    find: (id) => (id === BUILTIN_TINY_MODEL ? builtin() : fromDir(id)),
    support,
  }
}

function unsupportedReason (support: ModelSupport, configPath: string): string | null {
  let config: unknown
  try {
    config = JSON.parse(readFileSync(configPath, 'utf8'))
  } catch (err) {
    return `its config.json cannot be read (${(err as Error).message})`
  }
  return support.unsupportedReason(config)
}

function safeReaddir (dir: string): string[] {
  try {
    // Symlinked model folders count too: find() follows them, so list() must show them.
    return readdirSync(dir, { withFileTypes: true }).filter(d => (d.isDirectory() || d.isSymbolicLink()) && !d.name.startsWith('.')).map(d => d.name)
  } catch {
    return []
  }
}

// Base models that can be fine-tuned: the built-in tiny model shipped with the repo, plus every
// Hugging Face folder (one with config.json) under OPENTUNE_MODELS_DIR, named by its path there
// ("Qwen/Qwen2.5-0.5B-Instruct"), one or two levels deep.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

export const BUILTIN_TINY_MODEL = 'opentune/tiny-llama'

export interface BaseModel {
  id: string
  dir: string // the folder as shipped or found; the built-in gets its weights made on first use
  builtin: boolean
  createdAt: number
}

export interface ModelCatalog {
  list: () => BaseModel[]
  find: (id: string) => BaseModel | undefined
}

const SAFE_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/

export function makeModelCatalog (modelsDir: string, builtinModelsDir: string): ModelCatalog {
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
    return { id, dir, builtin: false, createdAt: Math.floor(statSync(config).mtimeMs / 1000) }
  }
  return {
    list () {
      const found: BaseModel[] = [builtin()]
      for (const first of safeReaddir(modelsDir)) {
        const direct = fromDir(first)
        if (direct) { if (direct.id !== BUILTIN_TINY_MODEL) found.push(direct); continue }
        for (const second of safeReaddir(join(modelsDir, first))) {
          const nested = fromDir(`${first}/${second}`)
          if (nested && nested.id !== BUILTIN_TINY_MODEL) found.push(nested)
        }
      }
      return found.sort((a, b) => (a.builtin === b.builtin ? a.id.localeCompare(b.id) : a.builtin ? -1 : 1))
    },
    find: (id) => (id === BUILTIN_TINY_MODEL ? builtin() : fromDir(id)),
  }
}

function safeReaddir (dir: string): string[] {
  try {
    // Symlinked model folders count too: find() follows them, so list() must show them.
    return readdirSync(dir, { withFileTypes: true }).filter(d => (d.isDirectory() || d.isSymbolicLink()) && !d.name.startsWith('.')).map(d => d.name)
  } catch {
    return []
  }
}

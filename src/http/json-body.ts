// The application/json body parser: secure-json-parse (a `__proto__` key is refused, not merged),
// a nesting limit, no number that is not finite, and an empty body read as no body.
import type { FastifyInstance } from 'fastify'
import sjson from 'secure-json-parse'
import { errors, InvalidJsonError } from '../errors.js'
import { notFiniteIssue } from './validation.js'

const MAX_JSON_DEPTH = 32

// An empty JSON body (POST …/cancel from some clients) is no body at all, as FastAPI treats it.
// Parse errors keep JSON.parse's message, which names the position (the 422 `loc`).
export function installJsonParser (app: FastifyInstance): void {
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = body.toString()
    if (text.trim() === '') { done(null, undefined); return }
    let value: unknown
    try {
      value = sjson.parse(text, { protoAction: 'error', constructorAction: 'ignore' })
    } catch (err) {
      done(new InvalidJsonError((err as Error).message), undefined)
      return
    }
    // Unknown keys are stored and echoed: a 100,000-deep one overflowed the stack when the job was
    // serialised (500), and a few thousand levels broke clients that parse the job list.
    const found = inspect(value)
    if (found.tooDeep) {
      done(new InvalidJsonError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), undefined)
      return
    }
    // JSON.parse reads 1e309 as Infinity, which no schema keyword refuses and JSON.stringify writes as
    // null: `learning_rate: 1e309` was echoed as null and trained at the default. Refused here, for
    // every field of every body (unknown keys are stored and echoed too), as pydantic does.
    const issues = found.notFinite.map(f => notFiniteIssue({ loc: ['body', ...f.path], value: f.value }))
    if (issues.length > 0) done(errors.validation(issues), undefined)
    else done(null, value)
  })
}

type Path = Array<string | number>
interface Node { value: unknown, depth: number, key: string | number, parent: Node | null }

// A body of 100,000 `1e999`s would otherwise answer with a multi-megabyte error; the first few name the fault.
const MAX_REPORTED = 20

/**
 * Walks the parsed body in the order it was written, iteratively (any depth is safe): whether it nests
 * deeper than the limit, and where its first non-finite numbers are. A path is built only for those.
 */
function inspect (value: unknown): { tooDeep: boolean, notFinite: Array<{ path: Path, value: number }> } {
  const notFinite: Array<{ path: Path, value: number }> = []
  const stack: Node[] = [{ value, depth: 1, key: '', parent: null }]
  while (stack.length > 0) {
    const node = stack.pop() as Node
    const v = node.value
    if (typeof v === 'number') {
      if (!Number.isFinite(v) && notFinite.length < MAX_REPORTED) notFinite.push({ path: pathOf(node), value: v })
      continue
    }
    if (v === null || typeof v !== 'object') continue
    if (node.depth > MAX_JSON_DEPTH) return { tooDeep: true, notFinite }
    const entries: Array<[string | number, unknown]> = Array.isArray(v) ? v.map((c, i) => [i, c]) : Object.entries(v)
    // pushed last-first so that they are popped first-first
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, child] = entries[i] as [string | number, unknown]
      stack.push({ value: child, depth: node.depth + 1, key, parent: node })
    }
  }
  return { tooDeep: false, notFinite }
}

function pathOf (node: Node): Path {
  const path: Path = []
  for (let n: Node | null = node; n?.parent; n = n.parent) path.unshift(n.key)
  return path
}

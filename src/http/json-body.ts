// The application/json body parser: secure-json-parse (a `__proto__` key is refused, not merged),
// a nesting limit, and an empty body read as no body.
import type { FastifyInstance } from 'fastify'
import sjson from 'secure-json-parse'
import { InvalidJsonError } from '../errors.js'

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
    if (deeperThan(value, MAX_JSON_DEPTH)) done(new InvalidJsonError(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`), undefined)
    else done(null, value)
  })
}

/** Whether `value` nests objects/arrays more than `max` deep; iterative, so any depth is safe. */
function deeperThan (value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number]
    if (v === null || typeof v !== 'object') continue
    if (depth > max) return true
    for (const child of Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1])
  }
  return false
}

// Request validation with Ajv, reported the way FastAPI/pydantic does (422, detail = [{loc,msg,type}]),
// because Nebius clients parse that shape and our spec declares it.
import { Ajv, type ErrorObject } from 'ajv'
import type { FastifySchemaCompiler } from 'fastify'
import { errors, type ValidationIssue } from '../errors.js'

type Part = 'body' | 'query' | 'path' | 'header'

// Bodies are JSON and keep their types (no "3" → 3); query and path strings are coerced.
// removeAdditional stays off: unknown keys are kept and echoed (the spec allows extra properties).
const AJV_OPTIONS = { allErrors: true, removeAdditional: false, strict: false } as const
const strictAjv = new Ajv({ ...AJV_OPTIONS, coerceTypes: false, useDefaults: false })
const coercingAjv = new Ajv({ ...AJV_OPTIONS, coerceTypes: true, useDefaults: true })

export const schemaCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const ajv = httpPart === 'body' ? strictAjv : coercingAjv
  return ajv.compile(schema as object) as ReturnType<FastifySchemaCompiler<unknown>>
}

const PART_BY_CONTEXT: Record<string, Part> = { body: 'body', querystring: 'query', params: 'path', headers: 'header' }

/** Converts Ajv errors for one request part into pydantic-style issues, one per field. */
export function toIssues (ajvErrors: ErrorObject[], context: string, data: unknown): ValidationIssue[] {
  const part = PART_BY_CONTEXT[context] ?? 'body'
  const byPath = new Map<string, ErrorObject[]>()
  for (const e of ajvErrors) {
    const path = e.keyword === 'required' ? `${e.instancePath}/${(e.params as { missingProperty: string }).missingProperty}` : e.instancePath
    byPath.set(path, [...(byPath.get(path) ?? []), e])
  }
  const issues: ValidationIssue[] = []
  const paths = [...byPath.keys()]
  for (const [path, errs] of byPath) {
    // anyOf [T, null] reports one error per branch plus the anyOf itself: keep the informative one,
    // and none at all for a parent whose real problem is a field inside it.
    const useful = errs.filter(e => e.keyword !== 'anyOf' && !(e.keyword === 'type' && (e.params as { type: string }).type === 'null'))
    if (useful.length === 0 && paths.some(p => p.startsWith(`${path}/`))) continue
    const e = useful[0] ?? errs[0]
    if (!e) continue
    const segments = path.split('/').slice(1).map(decodePointer)
    const loc = [part, ...segments]
    // a union of literals fails once per literal: name them all, as pydantic does
    const consts = useful.filter(x => x.keyword === 'const').map(x => (x.params as { allowedValue: unknown }).allowedValue)
    const input = valueAt(data, segments)
    // `?limit=1e309` is coerced to Infinity, which fails a range check and was echoed as `input: null`
    if (typeof input === 'number' && !Number.isFinite(input)) {
      issues.push(notFiniteIssue({ loc, value: input }))
      continue
    }
    const described = consts.length > 1 ? literal(consts, input) : describe(e, input, part)
    issues.push({ loc, ...described })
  }
  return issues
}

function decodePointer (s: string): string | number {
  const text = s.replace(/~1/g, '/').replace(/~0/g, '~')
  return /^\d+$/.test(text) ? Number(text) : text
}

function valueAt (data: unknown, segments: Array<string | number>): unknown {
  let v: unknown = data
  for (const s of segments) v = v !== null && typeof v === 'object' ? (v as Record<string | number, unknown>)[s] : undefined
  return v
}

type Described = Omit<ValidationIssue, 'loc'>

function describe (e: ErrorObject, input: unknown, part: Part): Described {
  const p = e.params as Record<string, unknown>
  switch (e.keyword) {
    case 'required': return { msg: 'Field required', type: 'missing' }
    case 'type': return describeType(String(p.type).split(',')[0] ?? '', input, part)
    case 'minimum': return { msg: `Input should be greater than or equal to ${p.limit}`, type: 'greater_than_equal', input, ctx: { ge: p.limit } }
    case 'maximum': return { msg: `Input should be less than or equal to ${p.limit}`, type: 'less_than_equal', input, ctx: { le: p.limit } }
    case 'exclusiveMinimum': return { msg: `Input should be greater than ${p.limit}`, type: 'greater_than', input, ctx: { gt: p.limit } }
    case 'exclusiveMaximum': return { msg: `Input should be less than ${p.limit}`, type: 'less_than', input, ctx: { lt: p.limit } }
    case 'maxLength': return { msg: `String should have at most ${p.limit} characters`, type: 'string_too_long', input, ctx: { max_length: p.limit } }
    case 'minLength': return { msg: `String should have at least ${p.limit} character${p.limit === 1 ? '' : 's'}`, type: 'string_too_short', input, ctx: { min_length: p.limit } }
    case 'maxItems': return { msg: `List should have at most ${p.limit} items`, type: 'too_long', input, ctx: { max_length: p.limit } }
    case 'enum': return literal((p.allowedValues as unknown[]) ?? [], input)
    case 'const': return literal([p.allowedValue], input)
    case 'additionalProperties': return { msg: 'Extra inputs are not permitted', type: 'extra_forbidden', input }
    case 'pattern': return { msg: `String should match pattern '${p.pattern}'`, type: 'string_pattern_mismatch', input }
    default: return { msg: e.message ?? 'Invalid value', type: 'value_error', input }
  }
}

function describeType (type: string, input: unknown, part: Part): Described {
  const fromString = part !== 'body' && typeof input === 'string'
  switch (type) {
    case 'integer':
      if (fromString) return { msg: 'Input should be a valid integer, unable to parse string as an integer', type: 'int_parsing', input }
      if (typeof input === 'number') return { msg: 'Input should be a valid integer, got a number with a fractional part', type: 'int_from_float', input }
      return { msg: 'Input should be a valid integer', type: 'int_type', input }
    case 'number':
      return fromString
        ? { msg: 'Input should be a valid number, unable to parse string as a number', type: 'float_parsing', input }
        : { msg: 'Input should be a valid number', type: 'float_type', input }
    case 'string': return { msg: 'Input should be a valid string', type: 'string_type', input }
    case 'boolean': return { msg: 'Input should be a valid boolean', type: 'bool_type', input }
    case 'array': return { msg: 'Input should be a valid list', type: 'list_type', input }
    case 'object': return { msg: 'Input should be a valid dictionary or object to extract fields from', type: 'model_attributes_type', input }
    default: return { msg: `Input should be of type ${type}`, type: 'type_error', input }
  }
}

function literal (allowed: unknown[], input: unknown): Described {
  const names = allowed.map(v => `'${String(v)}'`)
  const expected = names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names.at(-1)}` : (names[0] ?? '')
  return { msg: `Input should be ${expected}`, type: 'literal_error', input, ctx: { expected } }
}

/**
 * A number that JSON.parse (a body) or coercion (a query) read as ±Infinity (`1e309`), worded as pydantic
 * words a float field without inf/nan. `input` is the value's name: JSON has no literal to carry it back.
 */
export function notFiniteIssue ({ loc, value }: { loc: Array<string | number>, value: number }): ValidationIssue {
  return { loc, msg: 'Input should be a finite number', type: 'finite_number', input: String(value) }
}

/** Fastify's validation error → our 422 ApiError. */
export function validationError (err: { validation?: ErrorObject[], validationContext?: string }, data: unknown) {
  return errors.validation(toIssues(err.validation ?? [], err.validationContext ?? 'body', data))
}

// Validates response bodies against the published OpenAPI documents with a real JSON-schema
// validator (Ajv, draft 2020-12 as OpenAPI 3.1 uses): spec/nebius-fine-tuning-openapi.yaml
// and seed-openapi.yaml for the fine-tuning paths; OpenAI's shapes (test/fixtures/openai-schemas.json)
// for the Files and Models APIs and for error bodies, which the Nebius document does not declare.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { Ajv2020 } from 'ajv/dist/2020.js'
import YAML from 'yaml'

const SPEC_DIR = join(import.meta.dirname, '..', 'spec')

type OpenApi = {
  paths: Record<string, Record<string, {
    responses: Record<string, { content?: Record<string, { schema: unknown }> }>
  }>>
  components: { schemas: Record<string, unknown> }
}

function load (file: string): OpenApi {
  return YAML.parse(readFileSync(join(SPEC_DIR, file), 'utf8')) as OpenApi
}

const nebius = load('nebius-fine-tuning-openapi.yaml')
const seed = load('seed-openapi.yaml')
const openai = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'openai-schemas.json'), 'utf8')) as { components: { schemas: Record<string, unknown> } }

const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
ajv.addSchema({ $id: 'nebius', components: nebius.components })
ajv.addSchema({ $id: 'seed', components: seed.components })
ajv.addSchema({ $id: 'openai', components: openai.components })

function refFor (doc: 'nebius' | 'seed', spec: OpenApi, method: string, path: string, status: number): string {
  const op = spec.paths[path]?.[method.toLowerCase()]
  assert.ok(op, `${method} ${path} is not in the ${doc} spec`)
  const response = op.responses[String(status)]
  assert.ok(response, `${method} ${path} declares no ${status} response in the ${doc} spec`)
  const schema = response.content?.['application/json']?.schema as { $ref: string }
  return `${doc}${schema.$ref}`
}

function check (ref: string, body: unknown, what: string): void {
  const validate = ajv.getSchema(ref)
  assert.ok(validate, `no schema ${ref}`)
  const ok = validate(body)
  assert.ok(ok, `${what} does not match ${ref}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body).slice(0, 2000)}`)
}

/**
 * Asserts that a response of a Nebius fine-tuning operation matches the spec. `path` is the spec's
 * path template. Statuses the spec does not declare (400/401/404/409/413/415) are checked against
 * our error body: OpenAI's ErrorResponse plus a string `detail`.
 */
export function expectSpec (
  method: string,
  path: string,
  res: { statusCode: number, json: () => unknown },
  options: { seed?: boolean } = {}
): void {
  const body = res.json()
  const what = `${method} ${path} → ${res.statusCode}`
  if (res.statusCode === 200 || res.statusCode === 422) {
    const [doc, spec] = options.seed ? ['seed', seed] as const : ['nebius', nebius] as const
    check(refFor(doc, spec, method, path, res.statusCode), body, what)
    if (res.statusCode === 422) check('openai#/components/schemas/ErrorResponse', body, what)
    return
  }
  expectErrorBody(res)
}

export function expectErrorBody (res: { statusCode: number, json: () => unknown }): void {
  const body = res.json() as { detail: unknown }
  check('openai#/components/schemas/ErrorResponse', body, `error ${res.statusCode}`)
  if (res.statusCode !== 422) assert.equal(typeof body.detail, 'string', 'detail is a readable string')
}

/** Files and Models are OpenAI's APIs (Nebius serves the same shapes). */
export function expectOpenAI (schema: 'OpenAIFile' | 'ListFilesResponse' | 'DeleteFileResponse' | 'Model' | 'ListModelsResponse', body: unknown): void {
  check(`openai#/components/schemas/${schema}`, body, schema)
}

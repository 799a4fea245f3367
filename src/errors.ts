// One catalogue of every error the API can answer with (docs/errors.md lists them).
// Bodies carry both shapes (DESIGN §1): FastAPI's `detail` for Nebius clients and OpenAI's
// `error` object, which the openai SDKs read for `message`, `type`, `param` and `code`.

export interface ValidationIssue {
  loc: Array<string | number>
  msg: string
  type: string
  input?: unknown
  ctx?: Record<string, unknown>
}

export interface ErrorBody {
  detail: string | ValidationIssue[]
  error: { message: string, type: string, param: string | null, code: string | null }
}

export class ApiError extends Error {
  constructor (
    readonly status: number,
    readonly type: string,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    readonly issues: ValidationIssue[] | null = null,
    /** Seconds for a Retry-After header: the condition is passing (a full queue). */
    readonly retryAfter: number | null = null
  ) {
    super(message)
    this.name = 'ApiError'
  }

  toBody (): ErrorBody {
    return {
      detail: this.issues ?? this.message,
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    }
  }
}

const INVALID = 'invalid_request_error'
/** What a model is resolved for: the same folders are trained from and served. */
export type ModelUse = 'train' | 'serve'
// Long ids (a 10,000-character path segment) are cut in messages; the status says enough.
const shown = (id: string) => (id.length > 80 ? `${id.slice(0, 80)}…` : id)

export const errors = {
  missingApiKey: () => new ApiError(401, INVALID, 'missing_api_key',
    'You did not provide an API key. Send it as "Authorization: Bearer <key>".'),
  invalidApiKey: () => new ApiError(401, INVALID, 'invalid_api_key',
    'Incorrect or revoked API key provided.'),
  projectNotFound: (id: string) => new ApiError(404, INVALID, 'project_not_found',
    `No project found with id '${shown(id)}'.`, 'ai_project_id'),
  // `?ai_project_id=a&ai_project_id=b`: which one is meant cannot be known, so no route picks one;
  // worded as pydantic answers a list where a str goes (what the jobs routes' schemas said already).
  repeatedQuery: (name: string, values: unknown[]) => fieldError(['query', name], 'Input should be a valid string',
    'string_type', values),
  fileNotFound: (id: string) => new ApiError(404, INVALID, 'file_not_found',
    `No file found with id '${shown(id)}'.`, 'file_id'),
  jobNotFound: (id: string) => new ApiError(404, INVALID, 'job_not_found',
    `No fine-tuning job found with id '${shown(id)}'.`, 'job_id'),
  checkpointNotFound: (id: string) => new ApiError(404, INVALID, 'checkpoint_not_found',
    `No checkpoint found with id '${shown(id)}'.`, 'checkpoint_id'),
  modelNotFound: (id: string) => new ApiError(404, INVALID, 'model_not_found',
    `No model found with id '${shown(id)}'.`, 'model'),
  deploymentNotFound: (name: string) => new ApiError(404, INVALID, 'model_not_found',
    `No custom model found with name '${shown(name)}'.`, 'name'),
  webhookNotFound: (id: string) => new ApiError(404, INVALID, 'webhook_not_found',
    `No webhook endpoint found with id '${shown(id)}'.`, 'webhook_id'),
  webhookDeliveryNotFound: (id: string) => new ApiError(404, INVALID, 'webhook_delivery_not_found',
    `No delivery found with id '${shown(id)}' for this webhook endpoint.`, 'delivery_id'),
  routeNotFound: (method: string, url: string) => new ApiError(404, INVALID, 'route_not_found',
    `No route ${method} ${shown(url)}.`),
  trainingFileNotFound: (param: 'training_file' | 'validation_file', id: string) => new ApiError(400, INVALID,
    'file_not_found', `${param} '${shown(id)}' does not exist.`, param),
  fileWrongPurpose: (param: 'training_file' | 'validation_file', id: string, purpose: string) => new ApiError(400,
    INVALID, 'invalid_file_purpose',
    `${param} '${shown(id)}' has purpose '${purpose}'; upload it with purpose 'fine-tune'.`, param),
  unknownBaseModel: (model: string) => new ApiError(400, INVALID, 'model_not_available',
    `Model '${shown(model)}' is not available for fine-tuning. GET /v1/models lists the base models.`, 'model'),
  // a model not on disk whose name is a Hub repository (src/hub/accept.ts), when the Hub cannot be used
  hubOffline: (model: string) => new ApiError(400, INVALID, 'model_not_available',
    `Model '${shown(model)}' is not available for fine-tuning: it is not in the models directory, and HF_HUB_OFFLINE ` +
    'forbids downloading it from the Hugging Face Hub. GET /v1/models lists the base models.', 'model'),
  hubUnreachable: (model: string, endpoint: string, why: string) => new ApiError(400, INVALID, 'model_not_available',
    `Model '${shown(model)}' is not available for fine-tuning: it is not in the models directory, and the Hugging ` +
    `Face Hub at ${endpoint} (HF_ENDPOINT) cannot be reached (${why}) to download it.`, 'model'),
  unsupportedModel: (model: string, why: string, supported: string, use: ModelUse = 'train') => new ApiError(400,
    INVALID, 'unsupported_model',
    `Model '${shown(model)}' cannot be ${use === 'train' ? 'fine-tuned' : 'served'} here: ${why}. Supported: ${supported}.`,
    'model'),
  checkpointUnusable: (model: string, why: string, use: ModelUse = 'train') => new ApiError(400, INVALID,
    'model_not_available', `Checkpoint '${shown(model)}' cannot be ${use === 'train' ? 'trained from' : 'served'}: ${why}.`,
    'model'),
  // a spec-draft job's checkpoint proposes tokens for its target model to verify (docs/spec-draft.md)
  drafterAsModel: (model: string, use: ModelUse) => new ApiError(400, INVALID, 'unsupported_parameter',
    `Checkpoint '${shown(model)}' is an EAGLE-3 drafter (a spec-draft job's), not a model to ${use === 'train'
      ? 'fine-tune or draft for: give its target model as model.'
      : 'call: it drafts for its target model, which serves it (docs/spec-draft.md); send requests to the target model.'}`,
    'model'),
  // draft_model of an inference request: unknown (or another project's) answers as an unknown model
  draftModelNotFound: (id: string) => new ApiError(404, INVALID, 'model_not_found',
    `No drafter checkpoint found with id '${shown(id)}'.`, 'draft_model'),
  draftModelUnusable: (id: string, why: string) => new ApiError(400, INVALID, 'invalid_draft_model',
    `draft_model '${shown(id)}' cannot draft for this request: ${why}.`, 'draft_model'),
  unsupportedParameter: (param: string, why: string) => new ApiError(400, INVALID, 'unsupported_parameter',
    `${param} is not supported: ${why}`, param),
  // one message for an unknown checkpoint and another project's: nothing is said about the latter
  deploymentOfDrafter: (source: string) => new ApiError(400, INVALID, 'unsupported_parameter',
    `Checkpoint '${shown(source)}' is an EAGLE-3 drafter (a spec-draft job's), not a model to deploy: it drafts for ` +
    'its target model, which requests name with draft_model (docs/spec-draft.md).', 'source'),
  deploymentSourceNotFound: (source: string) => new ApiError(400, INVALID, 'checkpoint_not_found',
    `source '${shown(source)}' is not a checkpoint of your project: give '<job_id>:<checkpoint_id>' ` +
    '(GET /v1/fine_tuning/jobs/{job_id}/checkpoints lists them).', 'source'),
  deploymentBaseMismatch: (baseModel: string, source: string, trainedOn: string) => new ApiError(400, INVALID,
    'base_model_mismatch',
    `base_model '${shown(baseModel)}' is not the model checkpoint '${shown(source)}' was trained on, which is ` +
    `'${trainedOn}'.`, 'base_model'),
  jobNotCancellable: (id: string, status: string) => new ApiError(409, INVALID, 'job_not_cancellable',
    `Fine-tuning job '${shown(id)}' has already ${status}; only unfinished jobs can be cancelled.`, 'job_id'),
  fileInUse: (id: string, jobId: string) => new ApiError(409, INVALID, 'file_in_use',
    `File '${shown(id)}' is used by fine-tuning job '${jobId}', which has not finished.`, 'file_id'),
  fileTooLarge: (limit: number) => new ApiError(413, INVALID, 'file_too_large',
    `File is larger than the ${limit} bytes this server accepts.`, 'file'),
  bodyTooLarge: (limit: number) => new ApiError(413, INVALID, 'request_too_large',
    `Request body is larger than ${limit} bytes.`),
  badUrl: (why: string) => new ApiError(400, INVALID, 'invalid_url', `The request URL could not be read: ${why}`),
  // The next four are answered by src/http/client-errors.ts, for what Node's HTTP server refuses itself.
  badHttp: (why: string) => new ApiError(400, INVALID, 'invalid_http_request',
    `The request is not valid HTTP/1.1: ${why}.`),
  requestTimeout: () => new ApiError(408, INVALID, 'request_timeout',
    'The request was not received in time; the connection is closed.'),
  expectationFailed: (expect: string) => new ApiError(417, INVALID, 'expectation_failed',
    `Expect: '${shown(expect)}' is not supported; only '100-continue' is.`),
  // Node counts the request line in the header limit, so an over-long URL gets this one too (never a 414).
  headersTooLarge: (limit: number) => new ApiError(431, INVALID, 'request_headers_too_large',
    `The request line and headers together are larger than the ${limit} bytes this server reads.`),
  malformedMultipart: (why: string) => new ApiError(400, INVALID, 'malformed_multipart',
    `The multipart/form-data body could not be read${why ? `: ${why}` : ''}.`),
  unsupportedMediaType: (type: string | undefined, expected: string) => new ApiError(415, INVALID,
    'unsupported_media_type', `Content-Type '${type ?? ''}' is not supported here; send ${expected}.`),
  rangeNotSatisfiable: (size: number) => new ApiError(416, INVALID, 'range_not_satisfiable',
    `Requested range is outside the file (${size} bytes).`),
  validation: (issues: ValidationIssue[]) => new ApiError(422, INVALID, 'validation_error',
    issues.map(formatIssue).join('; '), issues[0] ? issueParam(issues[0]) : null, issues),
  // Not a retry hint (no Retry-After; x-should-retry: false, src/http/error-handler.ts): the same
  // upload fails the same way until someone frees space.
  storageFull: () => new ApiError(507, 'server_error', 'storage_full',
    'Storage full: the server has no space left on the disk of its data directory. Delete files you ' +
    'no longer need (DELETE /v1/files/{file_id}) or ask the operator to free space, then try again.'),
  contextTooLong: (promptTokens: number, maxTokens: number, context: number) => new ApiError(400, INVALID,
    'context_length_exceeded', `This model's maximum context length is ${context} tokens; the prompt has ` +
    `${promptTokens} tokens and max_tokens asks for ${maxTokens} more (${promptTokens + maxTokens} in all).`, 'max_tokens'),
  modelStillValidating: (name: string) => new ApiError(400, INVALID, 'model_not_ready',
    `Model '${shown(name)}' is still validating; GET /v0/models/{name} says when it is active.`, 'model'),
  // The openai SDKs retry 429 (after Retry-After) and 503 on their own: both are passing conditions.
  inferenceBusy: (waiting: number) => new ApiError(429, 'server_error', 'engine_overloaded',
    `The inference engine is at capacity (${waiting} requests running or waiting); retry shortly.`, null, null, 1),
  inferenceRestarted: () => new ApiError(503, 'server_error', 'engine_restarted',
    'The inference engine stopped while serving this request and is restarting; retry it.', null, null, 1),
  inferenceUnavailable: (why: string) => new ApiError(503, 'server_error', 'engine_unavailable',
    `The inference engine cannot start: ${why}.`),
  // the worker's error codes (docs/inference-protocol.md): the request's or the checkpoint's fault is a
  // 400, a full memory passes (503, retried), anything else is ours
  generationFailed: (code: string, why: string) => {
    const status = code === 'bad_request' || code === 'model_error' ? 400 : code === 'out_of_memory' ? 503 : 500
    return new ApiError(status, status === 400 ? INVALID : 'server_error', code, `Generation failed: ${why}`)
  },
  // The vLLM backend (src/inference/vllm.ts). 502s are retried by the openai SDKs.
  modelNotServable: (model: string, why: string) => new ApiError(400, INVALID, 'model_not_servable',
    `Model '${shown(model)}' cannot be served by this server's vLLM: ${why}.`, 'model'),
  adapterLoadFailed: (model: string, path: string, why: string) => new ApiError(400, INVALID, 'adapter_load_failed',
    `vLLM could not load the LoRA adapter of '${shown(model)}' from ${path}: ${why}`, 'model'),
  upstreamUnavailable: (url: string, why: string) => new ApiError(502, 'server_error', 'upstream_unavailable',
    `The vLLM server at OPENTUNE_VLLM_URL (${url}) cannot be reached: ${why}.`),
  upstreamError: (why: string) => new ApiError(502, 'server_error', 'upstream_error',
    `The vLLM server gave an answer opentune cannot use: ${why}.`),
  internal: (requestId: string) => new ApiError(500, 'server_error', 'internal_error',
    `The server had an error while processing your request (request id ${requestId}).`),
}

function issueParam (issue: ValidationIssue): string | null {
  if (issue.type === 'json_invalid') return null
  const path = issue.loc.slice(1)
  return path.length > 0 ? path.join('.') : null
}

function formatIssue (issue: ValidationIssue): string {
  return `${issue.loc.join('.')}: ${issue.msg}`
}

/** A validation failure for one field, worded like FastAPI/pydantic. */
export function fieldError (loc: Array<string | number>, msg: string, type: string, input?: unknown): ApiError {
  return errors.validation([{ loc, msg, type, ...(input === undefined ? {} : { input }) }])
}

/** A request body that is not JSON; reported as FastAPI does (422 json_invalid). */
export class InvalidJsonError extends Error {
  toApiError (): ApiError {
    const position = /position (\d+)/.exec(this.message)
    return errors.validation([{ loc: ['body', position ? Number(position[1]) : 0], msg: 'JSON decode error', type: 'json_invalid', input: {}, ctx: { error: this.message } }])
  }
}

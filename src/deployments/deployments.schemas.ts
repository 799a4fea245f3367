// Wire shapes of deployments (/v0/models), after the Nebius Token Factory API: CustomModelRequest,
// CustomModelResponse (the create reply) and CustomModelInfoResponse (get, list, delete).
import { Type, type Static, type TSchema } from '@sinclair/typebox'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

export const DEPLOYMENT_STATUSES = ['validating', 'active', 'error', 'deleted'] as const
export type DeploymentStatus = typeof DEPLOYMENT_STATUSES[number]
/** What the checkpoint holds: a LoRA adapter or full weights (the `-LoRa:` / `-Full:` in the name). */
export type DeploymentKind = 'lora' | 'full'

/** The short name a client picks; the server makes the full name from it. */
export const DEPLOYMENT_NAME_PATTERN = '^[A-Za-z0-9._-]+$'

// Unknown keys are ignored, as pydantic does by default.
export const DeploymentCreateBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 64, pattern: DEPLOYMENT_NAME_PATTERN }),
  base_model: Type.String({ minLength: 1, maxLength: 512 }),
  source: Type.String({ minLength: 1, maxLength: 2048 }),
  description: Type.Optional(Nullable(Type.String({ maxLength: 4096 }))),
}, { additionalProperties: true, title: 'CustomModelRequest' })
export type DeploymentCreateBody = Static<typeof DeploymentCreateBody>

export const DeploymentQuery = Type.Object({ ai_project_id: Type.Optional(Nullable(Type.String())) })

const Status = Type.Union(DEPLOYMENT_STATUSES.map(s => Type.Literal(s)))

const replyFields = {
  name: Type.String(),
  base_model: Type.String(),
  source: Type.String(),
  description: Nullable(Type.String()),
  created_at: Type.Integer(),
  status: Status,
}

/** The create reply: the serializer drops what CustomModelInfo has beyond it. */
export const CustomModel = Type.Object(replyFields, { title: 'CustomModelResponse' })

export const CustomModelInfo = Type.Object({
  ...replyFields,
  status_reason: Nullable(Type.String()),
  checkpoint_id: Nullable(Type.String()),
  job_id: Nullable(Type.String()),
  file_id: Type.Null(), // a /v0/models/upload file: not supported here
  url: Type.Null(), // a Hugging Face URL: not supported here
  type: Type.Literal('text2text'),
  tags: Type.Array(Type.String()),
  use_cases: Type.Array(Type.String()),
  context_window_k: Nullable(Type.Integer()),
}, { title: 'CustomModelInfoResponse' })
export type CustomModelInfo = Static<typeof CustomModelInfo>

export const CustomModelList = Type.Array(CustomModelInfo)

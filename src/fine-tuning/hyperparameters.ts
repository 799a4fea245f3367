// Nebius SupervisedHParameters: ranges and defaults exactly as the spec
// (../shared/spec/nebius-fine-tuning-openapi.yaml, components.schemas.SupervisedHParameters).
import { Type, type Static } from '@sinclair/typebox'

export const SupervisedHParameters = Type.Object({
  batch_size: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, default: 8 })),
  learning_rate: Type.Optional(Type.Number({ minimum: 0, default: 1e-5 })),
  n_epochs: Type.Optional(Type.Integer({ minimum: 1, maximum: 20, default: 3 })),
  warmup_ratio: Type.Optional(Type.Number({ minimum: 0, maximum: 1, default: 0 })),
  weight_decay: Type.Optional(Type.Number({ minimum: 0, default: 0 })),
  packing: Type.Optional(Type.Boolean({ default: true })),
  max_grad_norm: Type.Optional(Type.Number({ exclusiveMinimum: 0, default: 1 })),
  context_length: Type.Optional(Type.Integer({ minimum: 8192, maximum: 131072, default: 8192 })),
  lora: Type.Optional(Type.Boolean({ default: false })),
  lora_r: Type.Optional(Type.Integer({ minimum: 8, maximum: 128, default: 8 })),
  lora_alpha: Type.Optional(Type.Integer({ minimum: 8, default: 8 })),
  lora_dropout: Type.Optional(Type.Number({ minimum: 0, maximum: 1, default: 0 })),
}, { additionalProperties: true, title: 'SupervisedHParameters' })

export interface Hyperparameters {
  batch_size: number
  learning_rate: number
  n_epochs: number
  warmup_ratio: number
  weight_decay: number
  packing: boolean
  max_grad_norm: number
  context_length: number
  lora: boolean
  lora_r: number
  lora_alpha: number
  lora_dropout: number
  [unknown: string]: unknown // kept and echoed, not used (an event says so)
}

export const HYPERPARAMETER_DEFAULTS: Readonly<Hyperparameters> = Object.freeze(Object.fromEntries(
  Object.entries(SupervisedHParameters.properties).map(([k, v]) => [k, (v as { default: unknown }).default])
) as Hyperparameters)

const KNOWN = new Set(Object.keys(HYPERPARAMETER_DEFAULTS))

/** Fills every default (`inherited` values, from a checkpoint continued, before the spec's);
 *  returns the names of keys we do not know (they are kept, not used). */
export function resolveHyperparameters (given: Static<typeof SupervisedHParameters> | null | undefined,
  inherited: Partial<Hyperparameters> = {}): { hyperparameters: Hyperparameters, unknown: string[] } {
  const supplied = given ?? {}
  const unknown = Object.keys(supplied).filter(k => !KNOWN.has(k))
  return { hyperparameters: { ...HYPERPARAMETER_DEFAULTS, ...inherited, ...supplied } as Hyperparameters, unknown }
}

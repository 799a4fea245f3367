// What a `model` in an inference request names, resolved to the folders that serve it. The same
// resolution serves the embedded engine, the vLLM backend and the deployments API.
import type { BaseModel } from '../models/catalog.js'

export interface ServedModel {
  /** The name the client sent (echoed as `model` in responses). */
  name: string
  /** The catalogue model at the root: its tokenizer and chat template unless `tokenizerDir` says otherwise. */
  base: BaseModel
  /** Folder with tokenizer.json / tokenizer_config.json (chat template) / generation_config.json. */
  tokenizerDir: string
  /** HF folder with config.json + safetensors: the base's (materialised for the built-in model) or a checkpoint's. */
  weightsDir: string
  /** A LoRA checkpoint's PEFT folder, applied on top of weightsDir. */
  adapter?: { dir: string, r: number, alpha: number, checkpointId: string }
  /** The full checkpoint whose weights are weightsDir, if any (vLLM cannot hot-load those). */
  fullCheckpointId?: string
  /** Prompt plus completion tokens may not exceed this. */
  contextLength: number
}

/** An inference backend's own check that it can serve a model (e.g. a LoRA rank above what the
 *  engine was started with): the reason it cannot, or null. A deployment (POST /v0/models) runs it
 *  while validating, after the checkpoint resolved to folders; a reason makes it `status: "error"`. */
export type DeployCheck = (served: ServedModel) => Promise<string | null>

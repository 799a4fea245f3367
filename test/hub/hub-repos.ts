// What the Hub stand-in serves: the built-in tiny model's folder as `someorg/tiny-llama` would hold it on
// the Hub, with the files a job must never fetch (PyTorch .bin, ONNX in a subfolder) beside it.
import { randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'

export const TINY_DIR = join(import.meta.dirname, '..', '..', 'models', 'opentune', 'tiny-llama')

/** A valid safetensors file of one random float32 tensor of `floats` values. */
export function safetensorsOf (floats: number): Buffer {
  let header = JSON.stringify({ w: { dtype: 'F32', shape: [floats], data_offsets: [0, floats * 4] } })
  header += ' '.repeat((8 - (header.length % 8)) % 8)
  const size = Buffer.alloc(8)
  size.writeBigUInt64LE(BigInt(header.length))
  return Buffer.concat([size, Buffer.from(header), randomBytes(floats * 4)])
}

/** The files of a model folder (`dir`, default the tiny model's config and tokenizer) plus decoys. */
export async function modelRepoFiles (dir = TINY_DIR, weights?: Buffer): Promise<Record<string, Buffer>> {
  const files: Record<string, Buffer> = {}
  for (const name of await readdir(dir)) files[name] = await readFile(join(dir, name))
  if (weights) files['model.safetensors'] = weights
  files['pytorch_model.bin'] = randomBytes(4096)
  files['onnx/model.onnx'] = randomBytes(4096)
  files['README.md'] = Buffer.from('# a model\n')
  return files
}

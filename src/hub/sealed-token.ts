// A request's Hub token is needed by whichever runner validates the job, later and maybe on another
// machine, so it is stored with the job: sealed with AES-256-GCM under a key that lives in the data
// directory (which every runner shares), never in the database. A copy of the database alone reveals
// nothing; the sealed token is removed from the job once its files are downloaded (job-sources.ts).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'

const keyPath = (dataDir: string) => join(dataDir, 'secrets', 'hub-token.key')

async function sealingKey (dataDir: string): Promise<Buffer> {
  const path = keyPath(dataDir)
  try {
    return await readFile(path)
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  try {
    await writeFile(path, randomBytes(32), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err // another process made it first
  }
  return await readFile(path)
}

export async function sealToken (dataDir: string, token: string): Promise<string> {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', await sealingKey(dataDir), iv)
  const sealed = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()])
  return `v1:${Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64')}`
}

/** The token, or null when it cannot be unsealed (the key file was replaced): the job goes without. */
export async function unsealToken (dataDir: string, sealed: string): Promise<string | null> {
  try {
    const bytes = Buffer.from(sealed.replace(/^v1:/, ''), 'base64')
    const decipher = createDecipheriv('aes-256-gcm', await sealingKey(dataDir), bytes.subarray(0, 12))
    decipher.setAuthTag(bytes.subarray(12, 28))
    return Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString('utf8')
  } catch {
    return null
  }
}

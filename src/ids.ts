// Wire ids (DESIGN §1): opaque to clients, stable forever.
import { randomBytes, randomUUID } from 'node:crypto'

const hex32 = () => randomBytes(16).toString('hex')

export const newFileId = () => `file-${randomUUID()}`
export const newJobId = () => `ftjob-${hex32()}`
export const newCheckpointId = () => `ftckpt_${randomUUID()}`
export const newEventId = () => `ftevent-${hex32()}`
export const newProjectId = () => `proj_${hex32()}`
export const newKeyId = () => `key_${hex32()}`

export const nowSeconds = () => Math.floor(Date.now() / 1000)

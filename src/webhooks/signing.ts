// Standard Webhooks signatures (standardwebhooks.com, what OpenAI sends and its SDKs verify with
// `webhooks.unwrap`): HMAC-SHA256 over `${webhook-id}.${webhook-timestamp}.${body}`, keyed with the
// bytes of the secret's base64 part after `whsec_`, sent as `v1,<base64>`.
import { createHmac, randomBytes } from 'node:crypto'

const SECRET_PREFIX = 'whsec_'

/** 32 random bytes (the spec asks for 24 to 64). */
export const newWebhookSecret = () => `${SECRET_PREFIX}${randomBytes(32).toString('base64')}`

export interface SignedHeaders {
  'webhook-id': string
  'webhook-timestamp': string
  'webhook-signature': string
}

/** The three headers of one attempt; the timestamp is the attempt's, so a retry hours later is fresh. */
export function signWebhook (secret: string, id: string, body: string, nowSeconds: number): SignedHeaders {
  const key = Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64')
  const timestamp = String(nowSeconds)
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')
  return { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` }
}

// `opentune webhooks add|list|remove --project <name>`: the project's endpoints from the command
// line, against the database directly (as `keys` does). `add` prints the secret as its last line,
// the only time it is shown.
import { parseArgs } from 'node:util'
import type { Config } from '../config.js'
import { openStore } from '../db/connect.js'
import { ApiError } from '../errors.js'
import { WEBHOOK_EVENT_TYPES, type WebhookEventType } from './webhooks.schemas.js'
import { createEndpoint, endpointRowToApi } from './webhooks.service.js'
import { deleteEndpoint, listEndpoints, projectIdByName } from './webhooks.store.js'

export const WEBHOOKS_USAGE = `  opentune webhooks add --project <name> --url <url> [--events <type,…>] [--description <text>]
                                           add an endpoint (default: all ${WEBHOOK_EVENT_TYPES.length} events); prints its secret last
  opentune webhooks list --project <name>  list endpoints with their last delivery (never the secret)
  opentune webhooks remove <id> --project <name>   remove an endpoint and its pending deliveries`

const OPTIONS = {
  project: { type: 'string' },
  url: { type: 'string' },
  events: { type: 'string' },
  description: { type: 'string' },
} as const

export async function webhooksCommand (
  config: Readonly<Config>,
  sub: string | undefined,
  rest: string[]
): Promise<number> {
  const { values, positionals } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true })
  if (!values.project) {
    console.error(`--project <name> is needed\nusage:\n${WEBHOOKS_USAGE}`)
    return 2
  }
  const store = await openStore(config)
  try {
    const projectId = await projectIdByName(store.db, values.project)
    if (!projectId) {
      console.error(`no project named '${values.project}' (opentune keys create --project ${values.project} makes one)`)
      return 1
    }
    if (sub === 'add' && values.url) {
      const events = values.events?.split(',').map(s => s.trim()).filter(Boolean)
      const unknown = events?.filter(e => !(WEBHOOK_EVENT_TYPES as readonly string[]).includes(e)) ?? []
      if (unknown.length > 0) {
        console.error(`unknown events: ${unknown.join(', ')} (known: ${WEBHOOK_EVENT_TYPES.join(', ')})`)
        return 2
      }
      const row = await createEndpoint(store.db, projectId, {
        url: values.url,
        ...(events ? { events: events as WebhookEventType[] } : {}),
        ...(values.description ? { description: values.description } : {}),
      })
      console.log(`webhook ${row.id} of project ${values.project}: ${row.url} (${row.events.join(', ')}); its secret:`)
      console.log(row.secret)
      return 0
    }
    if (sub === 'list') {
      for (const e of (await listEndpoints(store.db, projectId)).map(endpointRowToApi)) {
        const last = e.last_delivery ? describeLast(e.last_delivery) : 'none'
        console.log(`${e.id}  ${e.url}  events=${e.events.join(',')}  last=${last}`)
      }
      return 0
    }
    if (sub === 'remove' && positionals[0]) {
      const removed = await deleteEndpoint(store.db, projectId, positionals[0])
      console.log(removed ? `removed ${positionals[0]}` : `project ${values.project} has no webhook ${positionals[0]}`)
      return removed ? 0 : 1
    }
    console.error(`usage:\n${WEBHOOKS_USAGE}`)
    return 2
  } catch (err) {
    if (err instanceof ApiError) { console.error(err.message); return 2 } // a bad URL, as the API would say
    throw err
  } finally {
    await store.close()
  }
}

function describeLast (d: { at: number, status: string, status_code: number | null, error: string | null }): string {
  const when = new Date(d.at * 1000).toISOString()
  return `${d.status}${d.status_code !== null ? ` ${d.status_code}` : ''} at ${when}${d.error ? ` (${d.error})` : ''}`
}

// The web dashboard (web/, built by scripts/build-web.mjs into dist/web): static files at `/`, outside
// the authenticated /v1 plugin (the page asks for a key and sends it as a bearer header itself).
// Only the files that exist when the app is built are routed (no wildcard), so every other URL keeps
// the API's own 404/401 answers. A strict Content-Security-Policy: no inline script, nothing external.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

export const DASHBOARD_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

/** dist/web, from src/http (tsx) and dist/http (compiled) alike. */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../dist/web/', import.meta.url))

export async function registerDashboard (app: FastifyInstance, root = DASHBOARD_DIR): Promise<void> {
  if (!existsSync(root)) {
    app.log.info({ root }, 'web dashboard not built (npm run build): not served')
    return
  }
  await app.register(fastifyStatic, {
    root,
    prefix: '/',
    wildcard: false,
    index: ['index.html'],
    schemaHide: true,
    setHeaders: (reply) => {
      void reply.header('content-security-policy', DASHBOARD_CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
    },
  })
}

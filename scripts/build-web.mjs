// Builds the web dashboard (web/) into dist/web: one bundled, minified script and one stylesheet
// (uPlot's CSS included), plus index.html. Nothing is fetched at run time. `npm run build` runs it;
// `node scripts/build-web.mjs <outdir>` builds elsewhere.
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { build } from 'esbuild'

const root = join(import.meta.dirname, '..')
const out = process.argv[2] ?? join(root, 'dist', 'web')
await rm(out, { recursive: true, force: true })
await mkdir(out, { recursive: true })
await build({
  entryPoints: { app: join(root, 'web', 'src', 'main.ts'), style: join(root, 'web', 'style.css') },
  outdir: out,
  bundle: true,
  minify: true,
  sourcemap: false,
  target: ['es2022'],
  format: 'esm',
  logLevel: 'warning',
})
await copyFile(join(root, 'web', 'index.html'), join(out, 'index.html'))
console.log(`web dashboard built into ${out}`)

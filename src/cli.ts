#!/usr/bin/env node
// opentune — the command line: `serve` runs the service; `keys` manages projects and API keys.
//   opentune serve
//   opentune runner                           (training only, for other machines)
//   opentune keys create --project <name>     (prints the new key as the last line)
//   opentune keys list
//   opentune keys revoke <prefix>
//   opentune migrate
//   opentune doctor                           (what the trainer will run on: torch, GPUs, kernels)
//   opentune webhooks add|list|remove --project <name>   (webhook endpoints; add prints the secret last)
//   opentune models pull <repo>[@revision]    (a Hugging Face Hub model into OPENTUNE_MODELS_DIR)
import { parseArgs } from 'node:util'
import { loadConfig } from './config.js'
import { dataCheckCommand } from './data/check-command.js'
import { modelsPullCommand } from './hub/pull-command.js'
import { makeModelCatalog } from './models/catalog.js'
import { loadModelSupport } from './models/support.js'
import { openStore } from './db/connect.js'
import { createKey, ensureProject, listKeys, revokeKeys } from './projects/keys.store.js'
import { formatReport, trainerReport } from './runner/doctor.js'
import { closeOnSignals, startRunnerOnly, startService } from './server.js'
import { WEBHOOKS_USAGE, webhooksCommand } from './webhooks/webhooks-command.js'

const USAGE = `usage:
  opentune serve                           run the API (and training) service
  opentune runner                          run only the training runner (same database and data dir)
  opentune data check <file.jsonl> --model <id>   validate a dataset and count its tokens
  opentune keys create --project <name>    create a project if needed and print a new API key
  opentune keys list                       list keys (prefixes only)
  opentune keys revoke <prefix>            revoke keys starting with <prefix>
  opentune migrate                         create or update the database schema
  opentune doctor                          show what the trainer runs on (Python, torch, CUDA devices, kernels)
${WEBHOOKS_USAGE}
  opentune models pull <repo>[@revision]   download a Hugging Face Hub model into OPENTUNE_MODELS_DIR`

const PROJECT_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/

async function main (argv: string[]): Promise<number> {
  const [command, sub, ...rest] = argv
  const config = loadConfig()
  switch (command) {
    case 'serve': {
      const service = await startService(config)
      closeOnSignals(service)
      return -1 // keep running
    }
    case 'runner': {
      const service = await startRunnerOnly(config)
      closeOnSignals(service)
      return -1
    }
    case 'data':
      if (sub !== 'check') break
      return await dataCheck(config, rest)
    case 'migrate': {
      const store = await openStore(config)
      await store.close()
      console.log('database is up to date')
      return 0
    }
    case 'keys':
      return await keysCommand(config, sub, rest)
    case 'webhooks':
      return await webhooksCommand(config, sub, rest)
    case 'models':
      if (sub !== 'pull') break
      return await modelsPullCommand(config, loadModelSupport(config.trainerDir), rest)
    case 'doctor': {
      const report = await trainerReport(config)
      for (const line of formatReport(config, report)) console.log(line)
      return report.problem ? 1 : 0
    }
  }
  console.error(USAGE)
  return command === undefined || command === 'help' || command === '--help' ? 0 : 2
}

// `--model <id>` is resolved like a job's model; everything else goes to the data pipeline's command.
async function dataCheck (config: ReturnType<typeof loadConfig>, args: string[]): Promise<number> {
  const i = args.indexOf('--model')
  if (i >= 0) {
    const id = args[i + 1] ?? ''
    const model = makeModelCatalog(config.modelsDir, config.builtinModelsDir, loadModelSupport(config.trainerDir))
      .find(id)
    if (!model) {
      console.error(`unknown model '${id}': use opentune/tiny-llama or a folder under ${config.modelsDir}`)
      return 2
    }
    args = [...args.slice(0, i), '--model-dir', model.dir, ...args.slice(i + 2)]
  }
  return await dataCheckCommand(args)
}

async function keysCommand (
  config: ReturnType<typeof loadConfig>,
  sub: string | undefined,
  rest: string[]
): Promise<number> {
  const store = await openStore(config)
  try {
    if (sub === 'create') {
      const { values } = parseArgs({ args: rest, options: { project: { type: 'string', default: 'default' } } })
      const name = values.project ?? 'default'
      if (!PROJECT_NAME.test(name)) {
        console.error('project names are 1-64 characters: letters, digits, "_", "-", "." (starting with a letter or digit)')
        return 2
      }
      const project = await ensureProject(store.db, name)
      const { key, info } = await createKey(store.db, project.id)
      console.log(`project ${project.name} (${project.id}), key ${info.prefix}…`)
      console.log(key)
      return 0
    }
    if (sub === 'list') {
      for (const k of await listKeys(store.db)) {
        console.log(`${k.prefix}…  project=${k.projectName} (${k.projectId})  created=${new Date(k.createdAt * 1000).toISOString()}${k.revokedAt ? '  REVOKED' : ''}`)
      }
      return 0
    }
    if (sub === 'revoke' && rest[0]) {
      const n = await revokeKeys(store.db, rest[0])
      console.log(`revoked ${n} key${n === 1 ? '' : 's'}`)
      return n > 0 ? 0 : 1
    }
    console.error(USAGE)
    return 2
  } finally {
    await store.close()
  }
}

main(process.argv.slice(2)).then(
  (code) => { if (code >= 0) process.exitCode = code },
  (err: unknown) => { console.error(err instanceof Error ? err.message : err); process.exitCode = 1 }
)

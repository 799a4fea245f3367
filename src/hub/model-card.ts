// The README.md pushed with a job's final checkpoint (push.ts): a Hub model card — front matter the
// Hub reads (base_model, library_name, tags), then what the job trained on, with what, and how it did.
import type { Hyperparameters } from '../fine-tuning/hyperparameters.js'
import type { Metrics } from '../fine-tuning/jobs.schemas.js'

export interface CardFacts {
  repo: string
  baseModel: string
  jobId: string
  checkpoint: string // its fine_tuned_model_checkpoint name
  step: number
  lora: boolean
  trainingFile: string // file names as uploaded
  validationFile: string | null
  hyperparameters: Hyperparameters
  metrics: Metrics
}

const METRICS = ['train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy'] as const

const cell = (v: unknown) => (v === null || v === undefined ? '—' : typeof v === 'number' ? String(Number(v.toPrecision(6))) : String(v))

export function modelCard (f: CardFacts): string {
  const kind = f.lora ? 'a LoRA adapter (PEFT format)' : 'full weights (Hugging Face safetensors)'
  return [
    '---',
    `base_model: ${JSON.stringify(f.baseModel)}`,
    ...(f.lora ? ['library_name: peft'] : []),
    'tags:',
    '  - opentune',
    `  - ${f.lora ? 'lora' : 'full-fine-tune'}`,
    '---',
    '',
    `# ${f.repo}`,
    '',
    `${kind} fine-tuned from \`${f.baseModel}\` by opentune job \`${f.jobId}\`: checkpoint`,
    `\`${f.checkpoint}\`, after ${f.step} optimizer steps.`,
    '',
    '## Training data',
    '',
    `- training file: \`${f.trainingFile}\``,
    `- validation file: ${f.validationFile ? `\`${f.validationFile}\`` : 'none'}`,
    '',
    '## Hyperparameters',
    '',
    '| name | value |',
    '|---|---|',
    ...Object.entries(f.hyperparameters).map(([k, v]) => `| ${k} | ${cell(v)} |`),
    '',
    `## Metrics at step ${f.step}`,
    '',
    'Token-weighted over the loss tokens; `valid_*` on a sample of the validation file, `full_valid_*` on',
    'all of it (— where there is no validation file).',
    '',
    '| metric | value |',
    '|---|---|',
    `| step | ${f.step} |`,
    ...METRICS.map(k => `| ${k} | ${cell(f.metrics[k])} |`),
    '',
  ].join('\n')
}

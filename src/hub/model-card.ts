// The README.md pushed with a job's final checkpoint (push.ts): a Hub model card — front matter the
// Hub reads (base_model, library_name, tags), then what the job trained on, with what, and how it did.
import type { JobHyperparameters } from '../fine-tuning/job-method.js'
import type { Metrics } from '../fine-tuning/jobs.schemas.js'

export interface CardFacts {
  repo: string
  baseModel: string
  jobId: string
  checkpoint: string // its fine_tuned_model_checkpoint name
  step: number
  /** drafter: an EAGLE-3 drafter a spec-draft job trained for `target` (the job's model) */
  kind: 'lora' | 'full' | 'drafter'
  target: string
  trainingFile: string // file names as uploaded
  validationFile: string | null
  hyperparameters: JobHyperparameters
  metrics: Metrics
}

const METRICS = ['train_loss', 'train_mean_token_accuracy', 'valid_loss', 'valid_mean_token_accuracy',
  'full_valid_loss', 'full_valid_mean_token_accuracy'] as const

const cell = (v: unknown) => (v === null || v === undefined
  ? '—'
  : typeof v === 'number' ? String(Number(v.toPrecision(6))) : typeof v === 'object' ? JSON.stringify(v) : String(v))

const TAGS = { lora: ['lora'], full: ['full-fine-tune'], drafter: ['eagle3', 'speculative-decoding'] }

function summary (f: CardFacts): string[] {
  const trained = `by opentune job \`${f.jobId}\`: checkpoint \`${f.checkpoint}\`, after ${f.step} optimizer steps.`
  if (f.kind !== 'drafter') {
    const kind = f.kind === 'lora' ? 'a LoRA adapter (PEFT format)' : 'full weights (Hugging Face safetensors)'
    return [`${kind} fine-tuned from \`${f.baseModel}\` ${trained}`]
  }
  const heads = f.hyperparameters.num_decoding_heads
  return [
    'An EAGLE-3 speculative-decoding drafter (`LlamaForCausalLMEagle3`: config.json and model.safetensors) for',
    `\`${f.target}\`${f.target === f.baseModel ? '' : ` (fine-tuned from \`${f.baseModel}\`)`}, trained ${trained}`,
    'It proposes tokens for that model to verify; it is not a model to run on its own. With vLLM:',
    '',
    '```',
    `vllm serve <target> --speculative-config '${JSON.stringify({ method: 'eagle3', model: f.repo, num_speculative_tokens: heads })}'`,
    '```',
  ]
}

export function modelCard (f: CardFacts): string {
  const extra = Object.keys(f.metrics).filter(k => k !== 'step' && !(METRICS as readonly string[]).includes(k)).sort()
  return [
    '---',
    `base_model: ${JSON.stringify(f.baseModel)}`,
    ...(f.kind === 'lora' ? ['library_name: peft'] : []),
    'tags:',
    '  - opentune',
    ...TAGS[f.kind].map(t => `  - ${t}`),
    '---',
    '',
    `# ${f.repo}`,
    '',
    ...summary(f),
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
    ...[...METRICS, ...extra].map(k => `| ${k} | ${cell(f.metrics[k])} |`),
    '',
  ].join('\n')
}

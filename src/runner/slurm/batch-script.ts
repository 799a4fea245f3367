// The batch script of one attempt. One process: the trainer itself (exec, so Slurm's SIGTERM at a
// cancel, a requeue or the time limit reaches it and it saves its state). More than one GPU in
// all: srun starts torchrun once per node and torchrun one trainer per GPU (rank 0 writes the
// protocol file), the multi-GPU launch of the trainer (trainer/opentune_trainer/distributed.py).
import { SPEC_UNREADABLE_EXIT } from './states.js'

export interface BatchScriptInput {
  attempt: string
  jobId: string
  python: string // on the compute nodes
  specPath: string
  env: Record<string, string> // exported before the trainer starts
  nodes: number
  gpusPerNode: number
}

/** Single quotes for the shell. */
export const shq = (s: string) => `'${s.replaceAll("'", "'\\''")}'`

export function batchScript (o: BatchScriptInput): string {
  const spec = shq(o.specPath)
  const trainer = `-m opentune_trainer train --spec ${spec}`
  const procs = o.nodes * Math.max(1, o.gpusPerNode)
  const launch = procs > 1
    ? [
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        `exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 ${shq(o.python)} -m torch.distributed.run ` +
          `--nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node=${Math.max(1, o.gpusPerNode)} --rdzv-id="$SLURM_JOB_ID" ` +
          `--rdzv-backend=c10d --rdzv-endpoint="$head:29500" ${trainer}`,
      ]
    : [`exec ${shq(o.python)} ${trainer}`]
  return [
    '#!/bin/bash',
    `# opentune: attempt ${o.attempt} of ${o.jobId} (src/runner/slurm/batch-script.ts)`,
    ...Object.entries(o.env).map(([k, v]) => `export ${k}=${shq(v)}`),
    `if [ ! -r ${spec} ]; then`,
    `  echo "opentune: $(hostname) cannot read ${o.specPath.replaceAll('"', '')}: the data directory is not on storage shared with this node" >&2`,
    `  exit ${SPEC_UNREADABLE_EXIT}`,
    'fi',
    ...launch,
    '',
  ].join('\n')
}

// How each Slurm end state becomes the job's outcome, and the batch script for one process or for
// srun + torchrun across GPUs: what a user reads in a failed job's error, without a Slurm to run.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { SlurmJobState } from '../../src/runner/slurm/commands.js'
import { batchScript } from '../../src/runner/slurm/batch-script.js'
import { attemptEnd, phaseOf } from '../../src/runner/slurm/states.js'

const facts = { slurmId: '42', cancelledByUs: false, timeLimit: '30', dataDir: '/data', stderrTail: '' }
const ended = (state: string, exitCode = 0, nodes = 'gpu-7'): SlurmJobState =>
  ({ state, reason: 'None', nodes, exitCode, signal: null, restarts: 0 })

describe('Slurm states as opentune outcomes', () => {
  it('waits, follows, or ends', () => {
    assert.deepEqual(['PENDING', 'REQUEUED', 'RUNNING', 'COMPLETING', 'COMPLETED', 'TIMEOUT'].map(phaseOf),
      ['waiting', 'waiting', 'alive', 'alive', 'ended', 'ended'])
  })

  it('fails with an error naming the cause and what to do', () => {
    const cases: Array<[string, number, string, RegExp]> = [
      ['TIMEOUT', 3, 'slurm_time_limit', /Slurm job 42 reached its time limit \(OPENTUNE_SLURM_TIME_LIMIT=30\)/],
      ['OUT_OF_MEMORY', 137, 'out_of_memory', /--mem=/],
      ['NODE_FAIL', 0, 'slurm_node_failed', /node of Slurm job 42 \(gpu-7\) failed/],
      ['CANCELLED', 3, 'slurm_cancelled', /cancelled outside opentune/],
      ['FAILED', 97, 'slurm_storage_not_shared', /\/data\) is not on storage shared with the Slurm compute nodes \(gpu-7\)/],
    ]
    for (const [state, code, errorCode, message] of cases) {
      const verdict = attemptEnd(ended(state, code), facts).verdict
      assert.ok(verdict && 'failed' in verdict, state)
      assert.equal(verdict.failed.code, errorCode, state)
      assert.match(verdict.failed.message, message, state)
    }
  })

  it('leaves the exit code to the usual classification, our own cancel to the cancel, and requeues a preemption', () => {
    assert.deepEqual(attemptEnd(ended('COMPLETED'), facts).verdict, undefined)
    const failed = attemptEnd(ended('FAILED', 2), facts)
    assert.equal(failed.verdict, undefined)
    assert.equal(failed.code, 2) // the trainer's own error line says why (exit.ts)
    assert.equal(attemptEnd(ended('CANCELLED', 3), { ...facts, cancelledByUs: true }).verdict, undefined)
    assert.match(JSON.stringify(attemptEnd(ended('PREEMPTED'), facts).verdict), /"requeue":"Slurm preempted job 42"/)
    assert.match(JSON.stringify(attemptEnd(null, facts).verdict), /no longer knows job 42/)
  })
})

describe('the batch script', () => {
  const base = { attempt: 'opentune-ftjob-1-abc', jobId: 'ftjob-1', python: '/opt/py/bin/python', specPath: "/data/jobs/it's/spec.json", env: { OPENTUNE_PROTOCOL_FILE: '/data/p.jsonl' } }

  it('execs the trainer itself for one process, after checking the spec is readable there', () => {
    const script = batchScript({ ...base, nodes: 1, gpusPerNode: 1 })
    assert.match(script, /^export OPENTUNE_PROTOCOL_FILE='\/data\/p\.jsonl'$/m)
    assert.match(script, /exit 97/)
    assert.match(script, /^exec '\/opt\/py\/bin\/python' -m opentune_trainer train --spec '\/data\/jobs\/it'\\''s\/spec\.json'$/m)
    assert.doesNotMatch(script, /srun|torch\.distributed/)
  })

  it('runs srun + torchrun, one trainer per GPU on every node, for more than one GPU', () => {
    const script = batchScript({ ...base, nodes: 2, gpusPerNode: 8 })
    assert.match(script, /exec srun --ntasks-per-node=1 .* -m torch\.distributed\.run --nnodes="\$SLURM_JOB_NUM_NODES" --nproc-per-node=8 .*--rdzv-endpoint="\$head:29500" -m opentune_trainer train/)
  })
})

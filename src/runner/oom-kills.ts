// How many processes the kernel's OOM killer has killed in this process's memory cgroup, so a
// trainer that died of SIGKILL can be told apart: the OOM killer (the count went up while it ran)
// or a kill from outside the service (an operator, a supervisor, `kill -9`).
//
// What cannot be known: the count is per cgroup, not per process, so an OOM kill of another
// process in the same cgroup while the trainer ran (a second job's trainer) reads as this
// trainer's; and where no counter is readable (no cgroup mounted, or a kernel before 4.13 on
// cgroup v1) neither cause can be ruled out, and the message says so.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

const CGROUP_ROOT = '/sys/fs/cgroup'

/** The OOM-kill count of our memory cgroup, or null where this machine does not say. */
export async function oomKillCount (root = CGROUP_ROOT): Promise<number | null> {
  const cgroups = await readFile('/proc/self/cgroup', 'utf8').catch(() => '')
  // cgroup v2: "0::/path" and memory.events; v1: "N:memory:/path" and memory.oom_control
  const v2 = /^0::(.*)$/m.exec(cgroups)?.[1]
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(cgroups)?.[1]
  const candidates = [
    ...(v2 !== undefined ? [join(root, v2, 'memory.events'), join(root, 'memory.events')] : []),
    // inside a container the path names the host's cgroup while the mount is already ours
    ...(v1 !== undefined
      ? [join(root, 'memory', v1, 'memory.oom_control'), join(root, 'memory', 'memory.oom_control')]
      : []),
  ]
  for (const path of candidates) {
    const text = await readFile(path, 'utf8').catch(() => null)
    const n = text === null ? undefined : /^oom_kill (\d+)$/m.exec(text)?.[1]
    if (n !== undefined) return Number(n)
  }
  return null
}

/** Whether the OOM killer struck between two counts: null where either count is unknown. */
export function oomKilledBetween (before: number | null, after: number | null): boolean | null {
  return before === null || after === null ? null : after > before
}

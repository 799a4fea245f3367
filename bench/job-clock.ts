// When a job went running and when it ended, seen as a client sees it (polled every 10 ms): the
// benchmarks' one way to time a job through the API.
import type OpenAI from 'openai'

export interface JobTimes { status: string, runningAt: number, doneAt: number }

export async function followJob (client: OpenAI, jobId: string): Promise<JobTimes> {
  let runningAt = 0
  for (;;) {
    const { status } = await client.fineTuning.jobs.retrieve(jobId)
    if (status === 'running' && !runningAt) runningAt = performance.now()
    if (['succeeded', 'failed', 'cancelled'].includes(status)) return { status, runningAt, doneAt: performance.now() }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

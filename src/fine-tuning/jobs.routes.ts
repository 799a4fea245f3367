// Fine-tuning API — https://docs.tokenfactory.nebius.com/api-reference/fine-tuning (OpenAI-compatible:
// https://platform.openai.com/docs/api-reference/fine-tuning). Handlers validate, call, map.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import type { AppContext } from '../context.js'
import { cachedCheckpointJson, checkpointJson, checkpointRowToApi, listCheckpoints } from './checkpoints.store.js'
import { unknownAfter } from '../db/paging.js'
import { errors, fieldError } from '../errors.js'
import { EventHub } from './event-stream.js'
import { eventRowToApi, eventSeq, listEvents } from './events.store.js'
import { cancelJob, createJob, jobRowToApi } from './jobs.service.js'
import { getJob, listJobs } from './jobs.store.js'
import {
  CheckpointList, CheckpointListQuery, CheckpointParams, EventList, EventListQuery, FineTuningJob,
  FineTuningJobCheckpoint, FineTuningJobList, JobCreateBody, JobListQuery, JobParams, ProjectQuery,
} from './jobs.schemas.js'

export const jobsRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { db } = ctx
  const hub = new EventHub(db, ctx.store.dialect, ctx.config, app.log)
  app.addHook('preClose', async () => { await hub.close() })

  const ownJob = async (projectId: string, jobId: string) => {
    const job = await getJob(db, projectId, jobId)
    if (!job) throw errors.jobNotFound(jobId)
    return job
  }

  app.post('/v1/fine_tuning/jobs', {
    schema: { summary: 'Create a fine-tuning job', querystring: ProjectQuery, body: JobCreateBody, response: { 200: FineTuningJob } },
  }, async (request) => {
    const job = await createJob(ctx, request.projectId, request.body)
    request.log.info({ jobId: job.id, model: job.model }, 'fine-tuning job created')
    return jobRowToApi(job)
  })

  app.get('/v1/fine_tuning/jobs', {
    schema: { summary: 'List fine-tuning jobs', querystring: JobListQuery, response: { 200: FineTuningJobList } },
  }, async (request) => {
    const { limit, after } = request.query
    const page = await listJobs(db, request.projectId, { limit: limit ?? 20, after: after ?? undefined, order: 'desc' })
    return { object: 'list' as const, data: page.data.map(jobRowToApi), has_more: page.hasMore }
  })

  app.get('/v1/fine_tuning/jobs/:job_id', {
    schema: { summary: 'Get fine-tuning job info', params: JobParams, querystring: ProjectQuery, response: { 200: FineTuningJob } },
  }, async (request) => jobRowToApi(await ownJob(request.projectId, request.params.job_id)))

  app.post('/v1/fine_tuning/jobs/:job_id/cancel', {
    schema: { summary: 'Cancel fine-tuning job', params: JobParams, querystring: ProjectQuery, response: { 200: FineTuningJob } },
  }, async (request) => {
    const job = await ownJob(request.projectId, request.params.job_id)
    return jobRowToApi(await cancelJob(db, job))
  })

  app.get('/v1/fine_tuning/jobs/:job_id/events', {
    schema: { summary: 'List fine-tuning events', params: JobParams, querystring: EventListQuery, response: { 200: EventList } },
  }, async (request, reply) => {
    const job = await ownJob(request.projectId, request.params.job_id)
    const { limit, after, stream } = request.query
    const accept = request.headers.accept ?? ''
    if (stream === true || (stream == null && accept.includes('text/event-stream'))) {
      // streamed (event-stream.ts): a reconnecting client's Last-Event-ID wins over `after`
      const lastId = request.headers['last-event-id']
      const from = typeof lastId === 'string' && lastId !== '' ? lastId : after ?? undefined
      let fromSeq = 0
      if (from !== undefined) {
        const seq = await eventSeq(db, job.id, from)
        if (seq === undefined) {
          throw from === after
            ? unknownAfter(from)
            : fieldError(['header', 'last-event-id'], `No event with id '${from.slice(0, 80)}' in this job`, 'value_error', from)
        }
        fromSeq = seq
      }
      hub.stream(reply, job.id, fromSeq)
      return reply
    }
    const page = await listEvents(db, job.id, { limit: limit ?? 20, after: after ?? undefined })
    return { object: 'list' as const, data: page.data.map(eventRowToApi), has_more: page.hasMore }
  })

  app.get('/v1/fine_tuning/jobs/:job_id/checkpoints', {
    schema: { summary: 'List fine-tuning checkpoints', params: JobParams, querystring: CheckpointListQuery, response: { 200: CheckpointList } },
  }, async (request) => {
    const job = await ownJob(request.projectId, request.params.job_id)
    const { limit, after } = request.query
    const page = await listCheckpoints(db, job.id, { limit: limit ?? 10, after: after ?? undefined })
    const data = page.data.map(checkpointRowToApi)
    return { object: 'list' as const, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore }
  })

  // A hit in the checkpoint store's JSON cache answers without a promise: the handler is not
  // async, and the body is already JSON, so it is sent as is (no serializer).
  const sendJson = (reply: FastifyReply, json: string): void => { void reply.type('application/json; charset=utf-8').send(json) }
  const loadCheckpoint = async (projectId: string, jobId: string, checkpointId: string) => {
    const json = await checkpointJson(db, projectId, jobId, checkpointId)
    if (json === undefined) {
      await ownJob(projectId, jobId) // says which of the two is missing
      throw errors.checkpointNotFound(checkpointId)
    }
    return json
  }
  app.get('/v1/fine_tuning/jobs/:job_id/checkpoints/:checkpoint_id', {
    schema: { summary: 'Get fine-tuning checkpoint', params: CheckpointParams, querystring: ProjectQuery, response: { 200: FineTuningJobCheckpoint } },
  }, (request, reply) => {
    const { job_id: jobId, checkpoint_id: checkpointId } = request.params
    const json = cachedCheckpointJson(db, request.projectId, jobId, checkpointId)
    if (json !== undefined) {
      sendJson(reply, json)
      return
    }
    return loadCheckpoint(request.projectId, jobId, checkpointId).then(loaded => { sendJson(reply, loaded) })
  })
}

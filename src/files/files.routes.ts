// Files API — https://platform.openai.com/docs/api-reference/files (Nebius serves the same shapes).
import { basename } from 'node:path'
import type { MultipartFile } from '@fastify/multipart'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import rangeParser from 'range-parser'
import type { AppContext } from '../context.js'
import { ApiError, errors, fieldError } from '../errors.js'
import { expectedBodyType } from '../http/body-type.js'
import { newFileId, nowSeconds } from '../ids.js'
import { unfinishedJobUsing } from '../fine-tuning/jobs.store.js'
import { deleteFile, getFile, insertFile, listFiles } from './files.store.js'
import { checkDataset } from './file-check.js'
import { isStorageFull } from './storage-full.js'
import { FileCheckBody, FileDeleted, FileList, FileListQuery, FileObject, FileParams, UPLOAD_PURPOSES, fileRowToApi } from './files.schemas.js'

const MULTIPART_SLACK = 1024 * 1024 // boundaries and other fields around the file part

export const filesRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { db, blobs, config } = ctx

  app.post('/v1/files', {
    schema: { summary: 'Upload a file', consumes: ['multipart/form-data'], response: { 200: FileObject } },
  }, async (request) => {
    const declared = Number(request.headers['content-length'] ?? 0)
    if (declared > config.maxUploadBytes + MULTIPART_SLACK) throw errors.fileTooLarge(config.maxUploadBytes)
    if (!request.isMultipart()) throw errors.unsupportedMediaType(request.headers['content-type'], expectedBodyType(request))
    const form = await readUploadForm(request.parts(), ctx)
    try {
      const purpose = checkPurpose(form.purpose)
      if (!form.upload) throw fieldError(['body', 'file'], 'Field required', 'missing')
      const id = newFileId()
      await blobs.commit(form.upload.tmpPath, id)
      form.upload = undefined
      const row = await insertFile(db, {
        id,
        project_id: request.projectId,
        filename: form.filename,
        purpose,
        bytes: form.bytes,
        created_at: nowSeconds(),
        status: 'processed',
        status_details: null,
      }).catch(async (err: unknown) => { await blobs.remove(id); throw err })
      request.log.info({ fileId: id, bytes: row.bytes }, 'file uploaded')
      return fileRowToApi(row)
    } finally {
      if (form.upload) await blobs.discard(form.upload.tmpPath)
    }
  })

  app.get('/v1/files', { schema: { summary: 'List files', querystring: FileListQuery, response: { 200: FileList } } }, async (request) => {
    const q = request.query
    const page = await listFiles(db, request.projectId, { purpose: q.purpose, limit: q.limit ?? 10000, after: q.after, order: q.order ?? 'desc' })
    const data = page.data.map(fileRowToApi)
    return { object: 'list' as const, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore }
  })

  app.get('/v1/files/:file_id', { schema: { summary: 'Retrieve a file', params: FileParams, response: { 200: FileObject } } }, async (request) => {
    const row = await getFile(db, request.projectId, request.params.file_id)
    if (!row) throw errors.fileNotFound(request.params.file_id)
    return fileRowToApi(row)
  })

  app.post('/v1/files/:file_id/check', {
    schema: { summary: 'Check a dataset against a model, as a job would', params: FileParams, body: FileCheckBody },
  }, async (request) => {
    const row = await getFile(db, request.projectId, request.params.file_id)
    if (!row) throw errors.fileNotFound(request.params.file_id)
    return await checkDataset(ctx, row, request.body)
  })

  app.get('/v1/files/:file_id/content', { schema: { summary: 'Download file content', params: FileParams } }, async (request, reply) => {
    const row = await getFile(db, request.projectId, request.params.file_id)
    if (!row) throw errors.fileNotFound(request.params.file_id)
    const size = row.bytes
    void reply.header('accept-ranges', 'bytes')
      .header('content-type', 'application/octet-stream')
      .header('content-disposition', contentDisposition(row.filename))
    const rangeHeader = request.headers.range
    // Only byte ranges exist for us; another unit ("pages=1-2") is ignored, as RFC 9110 §14.2 says.
    const ranges = rangeHeader && /^\s*bytes=/i.test(rangeHeader) ? rangeParser(size, rangeHeader, { combine: true }) : -2
    if (ranges === -1) {
      void reply.header('content-range', `bytes */${size}`)
      throw errors.rangeNotSatisfiable(size)
    }
    // One range is served as 206; several (rare, multipart/byteranges) get the whole file.
    if (Array.isArray(ranges) && ranges.length === 1 && ranges[0]) {
      const { start, end } = ranges[0]
      return reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`)
        .header('content-length', end - start + 1).send(blobs.read(row.id, { start, end }))
    }
    return reply.header('content-length', size).send(size === 0 ? '' : blobs.read(row.id))
  })

  app.delete('/v1/files/:file_id', { schema: { summary: 'Delete a file', params: FileParams, response: { 200: FileDeleted } } }, async (request) => {
    const { file_id: id } = request.params
    const row = await getFile(db, request.projectId, id)
    if (!row) throw errors.fileNotFound(id)
    const jobId = await unfinishedJobUsing(db, request.projectId, id)
    if (jobId) throw errors.fileInUse(id, jobId)
    await deleteRowThenBlob(ctx, request.projectId, id)
    return { id, object: 'file' as const, deleted: true }
  })
}

// The row goes first: a crash in between leaves an orphan blob, which sweep() removes. But on a full
// disk SQLite cannot delete a row (the WAL grows with every write), and the delete is how a user
// frees space: then the blob goes first and the row after. A crash between those two leaves a row
// whose content is gone; its DELETE still succeeds (remove() ignores a missing blob).
async function deleteRowThenBlob (ctx: AppContext, projectId: string, id: string): Promise<void> {
  try {
    await deleteFile(ctx.db, projectId, id)
  } catch (err) {
    if (!isStorageFull(err)) throw err
    await ctx.blobs.remove(id)
    await deleteFile(ctx.db, projectId, id)
  }
  await ctx.blobs.remove(id)
}

interface UploadForm {
  purpose: string | undefined
  filename: string
  bytes: number
  upload: { tmpPath: string, bytes: number } | undefined
}

/** Form fields we read; busboy's own limits (src/app.ts) sit well above these, see below. */
export const MAX_FORM_FIELDS = 16

// The openai SDK sends `file` before `purpose`, so the file is streamed to a temporary file first
// and the form is judged once it has been read whole.
//
// We count fields and files ourselves, below busboy's limits: when busboy hits a limit,
// @fastify/multipart stops feeding it, and a file part already handed to us then never ends (the
// request hung and kept its temp file open). Counted here, we refuse before that can happen.
async function readUploadForm (parts: AsyncIterableIterator<MultipartFile | { type: 'field', fieldname: string, value: unknown }>, ctx: AppContext): Promise<UploadForm> {
  const form: UploadForm = { purpose: undefined, filename: 'file', bytes: 0, upload: undefined }
  let fields = 0
  try {
    for await (const part of parts) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file') throw fieldError(['body', part.fieldname], 'Input should be a form field, not a file', 'string_type')
        if (form.upload) throw fieldError(['body', 'file'], 'Only one file can be uploaded per request', 'too_long')
        form.filename = cleanFilename(part.filename)
        form.upload = await ctx.blobs.receive(part.file)
        if (part.file.truncated) throw errors.fileTooLarge(ctx.config.maxUploadBytes)
        form.bytes = form.upload.bytes
      } else {
        if (++fields > MAX_FORM_FIELDS) throw fieldError(['body'], `A form may have at most ${MAX_FORM_FIELDS} fields besides the file`, 'too_long')
        if (part.fieldname === 'purpose') form.purpose = String(part.value)
      }
    }
  } catch (err) {
    if (form.upload) await ctx.blobs.discard(form.upload.tmpPath)
    throw multipartError(err, ctx.config.maxUploadBytes)
  }
  return form
}

/** busboy's and @fastify/multipart's errors as ours: a broken form is the client's doing. */
function multipartError (err: unknown, maxUploadBytes: number): unknown {
  if (err instanceof ApiError) return err
  const code = (err as { code?: string }).code
  if (code === 'FST_REQ_FILE_TOO_LARGE') return errors.fileTooLarge(maxUploadBytes)
  if (code === 'FST_FIELDS_LIMIT' || code === 'FST_PARTS_LIMIT') {
    return fieldError(['body'], `A form may have at most ${MAX_FORM_FIELDS} fields besides the file`, 'too_long')
  }
  if (code === 'FST_FILES_LIMIT') return fieldError(['body', 'file'], 'Only one file can be uploaded per request', 'too_long')
  if (code === 'FST_PROTO_VIOLATION') return fieldError(['body'], 'Form field names may not be prototype properties', 'value_error')
  const message = (err as Error | undefined)?.message ?? ''
  // busboy's parse errors are plain Errors ("Unexpected end of form", "Malformed part header", …)
  if (code === undefined && err instanceof Error && !(err as { errno?: number }).errno) {
    return errors.malformedMultipart(message)
  }
  return err
}

const isUploadPurpose = (p: string): p is typeof UPLOAD_PURPOSES[number] =>
  (UPLOAD_PURPOSES as readonly string[]).includes(p)

function checkPurpose (purpose: string | undefined): typeof UPLOAD_PURPOSES[number] {
  if (purpose === undefined) throw fieldError(['body', 'purpose'], 'Field required', 'missing')
  if (!isUploadPurpose(purpose)) {
    throw fieldError(['body', 'purpose'], "Input should be 'fine-tune' or 'batch'", 'literal_error', purpose)
  }
  return purpose
}

// The filename is metadata only (blobs are stored by id), but a path in it is never what a user
// meant: keep the last component, drop control characters.
function cleanFilename (raw: string | undefined): string {
  // eslint-disable-next-line no-control-regex
  const name = basename((raw ?? '').replace(/\\/g, '/')).replace(/[\u0000-\u001f\u007f]/g, '').trim()
  if (name.length > 1000) throw fieldError(['body', 'file', 'filename'], 'String should have at most 1000 characters', 'string_too_long')
  return name === '' || name === '.' || name === '..' ? 'file' : name
}

function contentDisposition (filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_')
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`
}

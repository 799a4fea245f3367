// Wire shapes of the Files API (OpenAI's FileObject; Nebius serves the same).
import { Type, type Static } from '@sinclair/typebox'
import type { FileRow } from './files.store.js'

export const UPLOAD_PURPOSES = ['fine-tune', 'batch'] as const
export const ALL_PURPOSES = [...UPLOAD_PURPOSES, 'fine-tune-results'] as const
export type FilePurpose = typeof ALL_PURPOSES[number]
// OpenAI's FileObject statuses; this server stores a file only once it is whole, so always 'processed'.
export const FILE_STATUSES = ['uploaded', 'processed', 'error'] as const
export type FileStatus = typeof FILE_STATUSES[number]

export const FileObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('file'),
  bytes: Type.Integer(),
  created_at: Type.Integer(),
  filename: Type.String(),
  purpose: Type.String(),
  status: Type.String(),
  status_details: Type.Union([Type.String(), Type.Null()]),
  expires_at: Type.Union([Type.Integer(), Type.Null()]),
}, { title: 'FileObject' })
export type FileObject = Static<typeof FileObject>

export const FileList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(FileObject),
  first_id: Type.Union([Type.String(), Type.Null()]),
  last_id: Type.Union([Type.String(), Type.Null()]),
  has_more: Type.Boolean(),
})

export const FileDeleted = Type.Object({
  id: Type.String(),
  object: Type.Literal('file'),
  deleted: Type.Boolean(),
})

export const FileParams = Type.Object({ file_id: Type.String() })

export const FileListQuery = Type.Object({
  purpose: Type.Optional(Type.Union(ALL_PURPOSES.map(p => Type.Literal(p)))),
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000, default: 10000 })),
  after: Type.Optional(Type.String()),
  order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')], { default: 'desc' })),
  ai_project_id: Type.Optional(Type.String()),
})

export function fileRowToApi (row: FileRow): FileObject {
  return {
    id: row.id,
    object: 'file',
    bytes: row.bytes,
    created_at: row.created_at,
    filename: row.filename,
    purpose: row.purpose,
    status: row.status,
    status_details: row.status_details,
    expires_at: null,
  }
}

/** POST /v1/files/{file_id}/check: the model and the hyperparameters that shape the rows. */
export const FileCheckBody = Type.Object({
  model: Type.String({ minLength: 1 }),
  context_length: Type.Optional(Type.Integer({ minimum: 1 })),
  packing: Type.Optional(Type.Boolean()),
  batch_size: Type.Optional(Type.Integer({ minimum: 1 })),
})

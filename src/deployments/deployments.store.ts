// SQL for deployments. Reads are scoped by project and skip deleted rows: another project's
// deployment, and a deleted one, are simply not found.
import type { Insertable, Kysely, Selectable } from 'kysely'
import type { Database, DeploymentTable } from '../db/database.js'
import { nowSeconds } from '../ids.js'
import type { DeploymentStatus } from './deployments.schemas.js'

/** No JSON columns: a deployment row is what is stored. */
export type DeploymentRow = Selectable<DeploymentTable>
export type NewDeployment = Omit<Insertable<DeploymentTable>, 'seq'>

export async function insertDeployment (db: Kysely<Database>, row: NewDeployment): Promise<DeploymentRow> {
  return await db.insertInto('deployments').values(row).returningAll().executeTakeFirstOrThrow()
}

/** Whether any deployment, of any project and deleted ones too, has that full name. */
export async function deploymentNameTaken (db: Kysely<Database>, name: string): Promise<boolean> {
  const row = await db.selectFrom('deployments').select('seq').where('name', '=', name).executeTakeFirst()
  return row !== undefined
}

export async function getDeployment (
  db: Kysely<Database>,
  projectId: string,
  name: string
): Promise<DeploymentRow | undefined> {
  return await db.selectFrom('deployments').selectAll()
    .where('name', '=', name).where('project_id', '=', projectId).where('status', '!=', 'deleted')
    .executeTakeFirst()
}

/** The project's deployments that are not deleted, newest first. */
export async function listDeployments (db: Kysely<Database>, projectId: string): Promise<DeploymentRow[]> {
  return await db.selectFrom('deployments').selectAll()
    .where('project_id', '=', projectId).where('status', '!=', 'deleted')
    .orderBy('seq', 'desc')
    .execute()
}

/** Those still validating, of every project: what a restarted server validates again. */
export async function validatingDeployments (db: Kysely<Database>): Promise<DeploymentRow[]> {
  return await db.selectFrom('deployments').selectAll().where('status', '=', 'validating').orderBy('seq').execute()
}

/** The outcome of validation, stored only while it is still validating (a delete meanwhile wins). */
export async function finishValidation (
  db: Kysely<Database>,
  name: string,
  outcome: { status: Extract<DeploymentStatus, 'active' | 'error'>, reason: string | null, contextLength: number | null }
): Promise<DeploymentRow | undefined> {
  return await db.updateTable('deployments')
    .set({ status: outcome.status, status_reason: outcome.reason, context_length: outcome.contextLength })
    .where('name', '=', name).where('status', '=', 'validating')
    .returningAll().executeTakeFirst()
}

/** Marks it deleted; undefined when the project has no such deployment (or it was deleted already). */
export async function markDeleted (
  db: Kysely<Database>,
  projectId: string,
  name: string
): Promise<DeploymentRow | undefined> {
  return await db.updateTable('deployments')
    .set({ status: 'deleted', deleted_at: nowSeconds() })
    .where('name', '=', name).where('project_id', '=', projectId).where('status', '!=', 'deleted')
    .returningAll().executeTakeFirst()
}

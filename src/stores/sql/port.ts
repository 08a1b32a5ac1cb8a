/**
 * The port between the SQL query set (`queries.ts`) and a driver. A SQL store implements these
 * three methods over its driver (better-sqlite3, pg, mysql2) and nothing else touches the driver's
 * query API; errors are left as the driver threw them, for the store to wrap as `StoreError`.
 *
 * A synchronous driver (better-sqlite3) answers at once, an asynchronous one with promises; the query
 * set answers the same way its port does, which is how one set of statements serves both faces.
 */
import type { MaybePromise } from '../../core/store.js'

/**
 * A value bound to a query parameter. Every value reaches the database this way, never as SQL text.
 * Bytes are for payloads where a text column cannot hold every string (PostgreSQL text refuses NUL).
 */
export type SqlValue = string | number | null | Uint8Array

/** One result row, by column name. Drivers may return numbers as strings (PostgreSQL `BIGINT`). */
export type SqlRow = Readonly<Record<string, unknown>>

/** What the query set asks of a SQL driver. `params` match the query's placeholders in order. */
export interface SqlPort {
  /** Runs a statement that writes; resolves the number of rows it changed. */
  run(sql: string, params: readonly SqlValue[]): MaybePromise<number>
  /** The first row a query returns, or `undefined`. */
  one(sql: string, params: readonly SqlValue[]): MaybePromise<SqlRow | undefined>
  /** Every row a query returns. */
  all(sql: string, params: readonly SqlValue[]): MaybePromise<SqlRow[]>
}

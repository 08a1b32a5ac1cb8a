import { createHash } from 'node:crypto'
import type pg from 'pg'
import { ConfigError, StoreError } from '../../core/errors.js'
import { storeRefusal } from '../../core/guarded-store.js'
import { requireDriver } from '../../core/optional-peer.js'
import { validateDelay } from '../shared.js'
import { postgresDialect } from '../sql/dialects.js'
import type { SqlPort, SqlRow } from '../sql/port.js'
import { SCHEMA_TABLE } from '../sql/queries.js'
import { SqlStore, type SqlStoreOptions } from '../sql/sql-store.js'
import { refuseUnknownStoreOptions } from '../store-options.js'

/** Options of {@link PostgresStore}: a `pool` or a `connectionString`, not both. */
export interface PostgresStoreOptions extends SqlStoreOptions {
  /**
   * A pg pool you own: the store runs its queries on it and never ends it. Give it an `'error'`
   * listener, as pg asks of every pool, or a server dropping an idle connection crashes the process.
   */
  pool?: pg.Pool
  /**
   * A `postgres://user:password@host:port/database` URL: the store opens its own pool (pg's defaults,
   * a 10 s connect timeout), reports dropped idle connections to `onWarning`, and ends it at `close()`.
   */
  connectionString?: string
  /** The schema holding the tables; it must exist. Default: the first schema of the `search_path` (usually `public`). */
  schema?: string
  /**
   * How long the store waits for each statement's answer, in ms (pg's `query_timeout`). Past it the
   * operation rejects with `StoreError` and the connection is closed, not returned to the pool, so a
   * server that stops answering costs no pool slot. The store's own pool also sets the server's
   * `statement_timeout` to it, so a statement blocked on a lock is cancelled there and never lands
   * late. Migrations are exempt. Default 2000.
   */
  commandTimeoutMs?: number
}

/** Default of `commandTimeoutMs`, in ms. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2000

/** How long the store's own pool waits for a new connection before the operation fails, in ms. */
const CONNECT_TIMEOUT_MS = 10_000

/** The advisory lock that migrations hold, one per database: the first 64 bits of SHA-256(`latchkey_schema`). */
const MIGRATION_LOCK = createHash('sha256').update(SCHEMA_TABLE).digest().readBigInt64BE(0).toString()

/** Anything that runs a query: the pool, or one client checked out of it. */
type Queryable = Pick<pg.Pool, 'query'>

/**
 * SQLSTATE class 54, "program limit exceeded": a statement too large or too complex for the server.
 * The request's own fault (a value past what the server takes), never the server being down.
 */
const PROGRAM_LIMIT_EXCEEDED = /^54/

/**
 * The port over `db`. With `timeoutMs`, each query rejects past it (pg's `query_timeout`); `pool.query`
 * then releases its client with the error, which closes it. A statement past the server's limits
 * rejects with a `storeRefusal`. (A pool's `query` closes the client on every error, so nothing a
 * request does leaves a broken connection in the pool.)
 */
function portOf(db: Queryable, timeoutMs?: number): SqlPort {
  const query = async (text: string, values: readonly unknown[]) => {
    try {
      // pg reads `query_timeout` from a query's config too; its types only know it on the client's.
      const config: pg.QueryConfig & { query_timeout?: number } = {
        text,
        values: [...values],
        query_timeout: timeoutMs,
      }
      return await db.query<SqlRow>(config)
    } catch (error) {
      const code = (error as { code?: unknown })?.code
      if (typeof code === 'string' && PROGRAM_LIMIT_EXCEEDED.test(code)) {
        throw storeRefusal(
          `PostgreSQL refused the statement as past its limits (${(error as Error).message}): the session is too large for the store; lower maxPayloadBytes`,
          error,
        )
      }
      throw error
    }
  }
  return {
    run: async (sql, params) => (await query(sql, params)).rowCount ?? 0,
    one: async (sql, params) => (await query(sql, params)).rows[0],
    all: async (sql, params) => (await query(sql, params)).rows,
  }
}

/**
 * Sessions in PostgreSQL (9.5 or later) through `pg` 8, for several app servers sharing one database.
 * Every operation is one statement (create is an `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the
 * existing row has expired; update a compare-and-set `UPDATE ... WHERE version = $n`), so each is
 * atomic across processes without transactions. The table is created on first use under an advisory
 * lock (`migrate()` does it on demand; `schemaSql()` prints it). Expired rows read as missing at once
 * and are deleted every `pruneIntervalMs`, in batches. A failing server gives `StoreError`, and the
 * pool reconnects by itself when it is back.
 */
export class PostgresStore extends SqlStore {
  private readonly pool: pg.Pool
  private readonly ownsPool: boolean
  private readonly poolPort: SqlPort

  constructor(options: PostgresStoreOptions) {
    refuseUnknownStoreOptions('PostgresStore', options ?? {})
    const { pool, connectionString, schema, commandTimeoutMs = DEFAULT_COMMAND_TIMEOUT_MS } = options ?? {}
    if ((pool === undefined) === (connectionString === undefined)) {
      throw new ConfigError('pool', 'give either a pg pool (pool) or a URL (connectionString), not both')
    }
    if (pool !== undefined && (typeof pool?.query !== 'function' || typeof pool.connect !== 'function')) {
      throw new ConfigError('pool', 'must be a pg.Pool')
    }
    if (connectionString !== undefined && (typeof connectionString !== 'string' || connectionString === '')) {
      throw new ConfigError('connectionString', 'must be a postgres:// URL')
    }
    validateDelay(commandTimeoutMs, 'commandTimeoutMs', 1)
    super('PostgresStore', postgresDialect, options, schema)
    this.ownsPool = pool === undefined
    this.pool =
      pool ??
      new (requireDriver<typeof pg>('pg', 'PostgresStore').Pool)({
        connectionString,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        statement_timeout: commandTimeoutMs,
      })
    if (this.ownsPool) {
      this.pool.on('error', (error) => this.warn(new StoreError('PostgresStore', 'idle connection', error)))
    }
    this.poolPort = portOf(this.pool, commandTimeoutMs)
  }

  protected async open(): Promise<SqlPort> {
    await this.ensureSchema(this.poolPort)
    return this.poolPort
  }

  /** One transaction holding the advisory lock: DDL is transactional here, so a failed run leaves nothing. */
  protected async migrateSchema(): Promise<number> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      // A migration may wait for another process's: the statement timeout is for requests.
      await client.query('SET LOCAL statement_timeout = 0')
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
      const from = await this.queries.migrate(portOf(client))
      await client.query('COMMIT')
      client.release()
      return from
    } catch (error) {
      // Closing the connection rolls the transaction back and frees the lock.
      client.release(true)
      throw error
    }
  }

  protected async release(): Promise<void> {
    if (this.ownsPool) await this.pool.end()
  }
}

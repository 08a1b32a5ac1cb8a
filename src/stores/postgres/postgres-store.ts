import { createHash } from 'node:crypto'
import type pg from 'pg'
import { ConfigError, StoreError } from '../../core/errors.js'
import { requireDriver } from '../../core/optional-peer.js'
import { postgresDialect } from '../sql/dialects.js'
import type { SqlPort, SqlRow } from '../sql/port.js'
import { SCHEMA_TABLE } from '../sql/queries.js'
import { SqlStore, type SqlStoreOptions } from '../sql/sql-store.js'

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
}

/** How long the store's own pool waits for a new connection before the operation fails, in ms. */
const CONNECT_TIMEOUT_MS = 10_000

/** The advisory lock that migrations hold, one per database: the first 64 bits of SHA-256(`latchkey_schema`). */
const MIGRATION_LOCK = createHash('sha256').update(SCHEMA_TABLE).digest().readBigInt64BE(0).toString()

/** Anything that runs a query: the pool, or one client checked out of it. */
type Queryable = Pick<pg.Pool, 'query'>

function portOf(db: Queryable): SqlPort {
  const query = (text: string, values: readonly unknown[]) => db.query<SqlRow>({ text, values: [...values] })
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
    const { pool, connectionString, schema } = options ?? {}
    if ((pool === undefined) === (connectionString === undefined)) {
      throw new ConfigError('pool', 'give either a pg pool (pool) or a URL (connectionString), not both')
    }
    if (pool !== undefined && (typeof pool?.query !== 'function' || typeof pool.connect !== 'function')) {
      throw new ConfigError('pool', 'must be a pg.Pool')
    }
    if (connectionString !== undefined && (typeof connectionString !== 'string' || connectionString === '')) {
      throw new ConfigError('connectionString', 'must be a postgres:// URL')
    }
    super('PostgresStore', postgresDialect, options, schema)
    this.ownsPool = pool === undefined
    this.pool =
      pool ??
      new (requireDriver<typeof pg>('pg', 'PostgresStore').Pool)({
        connectionString,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      })
    if (this.ownsPool) {
      this.pool.on('error', (error) => this.warn(new StoreError('PostgresStore', 'idle connection', error)))
    }
    this.poolPort = portOf(this.pool)
  }

  protected async open(): Promise<SqlPort> {
    await this.ensureSchema(this.poolPort)
    return this.poolPort
  }

  /** One transaction holding the advisory lock: DDL is transactional here, so a failed run leaves nothing. */
  protected async migrateSchema(): Promise<void> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
      await this.queries.migrate(portOf(client))
      await client.query('COMMIT')
      client.release()
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

import type mysql from 'mysql2/promise'
import type { Pool, PoolConnection, PoolOptions, ResultSetHeader, RowDataPacket } from 'mysql2/promise'
import { ConfigError } from '../../core/errors.js'
import { storeRefusal } from '../../core/guarded-store.js'
import { requireDriver } from '../../core/optional-peer.js'
import { validateDelay } from '../shared.js'
import { mysqlDialect } from '../sql/dialects.js'
import type { SqlPort, SqlRow, SqlValue } from '../sql/port.js'
import { SqlStore, type SqlStoreOptions } from '../sql/sql-store.js'
import { refuseUnknownStoreOptions } from '../store-options.js'

/** Options of {@link MySqlStore}: a `pool`, or a `uri` and/or `poolOptions` for a pool of its own. */
export interface MySqlStoreOptions extends SqlStoreOptions {
  /**
   * A mysql2 promise pool you own (`mysql2/promise`'s `createPool`, or `pool.promise()`): the store
   * runs its queries on it and never ends it. Its connections must use a utf8mb4 charset (mysql2's default).
   */
  pool?: Pool
  /** A `mysql://user:password@host:port/database` URI (also `mariadb://`): the store opens its own pool and ends it at `close()`. */
  uri?: string
  /** mysql2 pool options (host, user, database, connectionLimit, ssl, ...) for the store's own pool, with or without `uri`. */
  poolOptions?: PoolOptions
  /**
   * How long the store waits for a connection from the pool and for each statement's answer, in ms.
   * Past it the operation rejects with `StoreError` and the connection is destroyed, not returned to
   * the pool, so a server that stops answering costs no pool slot. Migrations are exempt. Default 2000.
   */
  commandTimeoutMs?: number
}

/** Default of `commandTimeoutMs`, in ms. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2000

/**
 * The server's error for a packet past its `max_allowed_packet`; MariaDB closes the connection after
 * it. The request's own fault (a record too large for this server), never the server being down.
 */
const PACKET_TOO_LARGE = 1153

/** How long a migration waits for another process's migration to finish, in seconds. */
const MIGRATION_LOCK_TIMEOUT_S = 60

/** The named lock migrations hold, one per database (lock names are server-wide, at most 64 characters). */
const MIGRATION_LOCK = "CONCAT('latchkey_schema.', LEFT(DATABASE(), 48))"

/** One statement's options: its SQL, rows as objects. */
function statement(sql: string) {
  return { sql, rowsAsArray: false }
}

/** The port over `run`, which executes one prepared statement; server-side, values never pass through mysql2's escaping, whatever the sql_mode. */
function portOver(
  run: <T extends ResultSetHeader | RowDataPacket[]>(sql: string, values: SqlValue[]) => Promise<T>,
): SqlPort {
  return {
    run: async (sql, params) => (await run<ResultSetHeader>(sql, [...params])).affectedRows,
    one: async (sql, params) => (await run<RowDataPacket[]>(sql, [...params]))[0] as SqlRow | undefined,
    all: async (sql, params) => (await run<RowDataPacket[]>(sql, [...params])) as SqlRow[],
  }
}

/** The port over one connection (a migration's): no timeout, the connection is the caller's. */
function connectionPort(connection: Pick<PoolConnection, 'execute'>): SqlPort {
  return portOver(async (sql, values) => (await connection.execute(statement(sql), values))[0] as never)
}

/**
 * The port over the pool for requests: each statement on a connection of its own, the wait for the
 * connection and the statement's answer both within `timeoutMs` (mysql2's own per-query timeout does
 * not cover preparing the statement). A connection that failed in any way (past the deadline, a packet
 * the server refused and closed the connection over, a dropped link) is destroyed, never handed to the
 * next request: after a timeout its state is unknown, and after a too-large packet MariaDB has closed
 * it. Errors are rare here and a new connection is cheap. A packet past `max_allowed_packet` rejects
 * with a `storeRefusal`.
 */
function poolPort(pool: Pool, timeoutMs: number): SqlPort {
  return portOver(async (sql, values) => {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer from the server within commandTimeoutMs (${timeoutMs} ms)`)),
        timeoutMs,
      )
    })
    const connecting = pool.getConnection()
    let connection: PoolConnection
    try {
      connection = await Promise.race([connecting, deadline])
    } catch (error) {
      clearTimeout(timer)
      connecting.then(
        (late) => late.destroy(),
        () => {},
      )
      throw error
    }
    const executing = connection.execute(statement(sql), values)
    executing.catch(() => {})
    try {
      const [result] = await Promise.race([executing, deadline])
      connection.release()
      return result as never
    } catch (error) {
      connection.destroy()
      if ((error as { errno?: unknown })?.errno === PACKET_TOO_LARGE) {
        throw storeRefusal(
          `the server refused the statement as larger than its max_allowed_packet (${(error as Error).message}): the session is too large for this server; lower maxPayloadBytes, or raise max_allowed_packet`,
          error,
        )
      }
      throw error
    } finally {
      clearTimeout(timer)
    }
  })
}

/**
 * Sessions in MySQL 8 or MariaDB 10.11+ (InnoDB) through `mysql2` 3, for several app servers sharing
 * one database. Update is one compare-and-set `UPDATE ... WHERE version = ?`; create deletes the key's
 * row if it has expired, then `INSERT IGNORE`s, so of two racing creates exactly one inserts (mysql2
 * counts found rows, so `ON DUPLICATE KEY UPDATE` could not tell an insert from a row left alone). Keys
 * are `ascii_bin`, user IDs and payloads utf8mb4 and compared exactly. The table is created on first use
 * under a named lock (`GET_LOCK`); `migrate()` does it on demand and `schemaSql()` prints it. Expired
 * rows read as missing at once and are deleted every `pruneIntervalMs`, in batches. A failing server
 * gives `StoreError`, and the pool reconnects by itself when it is back.
 */
/**
 * The pool of a store given `uri` and/or `poolOptions`. What mysql2 refuses while building it (an
 * unknown `?ssl=` profile, say) is a `ConfigError` naming the option, not a raw `TypeError`.
 */
function ownPool(uri: string | undefined, poolOptions: MySqlStoreOptions['poolOptions']): Pool {
  const driver = requireDriver<typeof mysql>('mysql2/promise', 'MySqlStore')
  try {
    return driver.createPool({ ...poolOptions, uri: uri?.replace(/^mariadb:/, 'mysql:') })
  } catch (error) {
    throw new ConfigError(
      uri === undefined ? 'poolOptions' : 'uri',
      `mysql2 refused the settings: ${error instanceof Error ? error.message : String(error)}`,
    )
  }
}

export class MySqlStore extends SqlStore {
  private readonly pool: Pool
  private readonly ownsPool: boolean
  private readonly poolPort: SqlPort

  constructor(options: MySqlStoreOptions) {
    refuseUnknownStoreOptions('MySqlStore', options ?? {})
    const { pool, uri, poolOptions, commandTimeoutMs = DEFAULT_COMMAND_TIMEOUT_MS } = options ?? {}
    if ((pool === undefined) === (uri === undefined && poolOptions === undefined)) {
      throw new ConfigError('pool', 'give either a mysql2 pool (pool) or a uri and/or poolOptions, not both')
    }
    if (
      pool !== undefined &&
      (typeof pool?.execute !== 'function' || typeof pool.getConnection !== 'function')
    ) {
      throw new ConfigError('pool', 'must be a mysql2/promise Pool')
    }
    if (uri !== undefined && (typeof uri !== 'string' || !/^(mysql|mariadb):\/\//.test(uri))) {
      throw new ConfigError('uri', 'must be a mysql:// or mariadb:// URI')
    }
    if (poolOptions !== undefined && (typeof poolOptions !== 'object' || poolOptions === null)) {
      throw new ConfigError('poolOptions', 'must be mysql2 pool options')
    }
    validateDelay(commandTimeoutMs, 'commandTimeoutMs', 1)
    super('MySqlStore', mysqlDialect, options)
    this.ownsPool = pool === undefined
    // mysql2 reads only mysql:// URIs; mariadb:// names the same server.
    this.pool = pool ?? ownPool(uri, poolOptions)
    this.poolPort = poolPort(this.pool, commandTimeoutMs)
  }

  protected async open(): Promise<SqlPort> {
    await this.ensureSchema(this.poolPort)
    return this.poolPort
  }

  /** On one connection holding the named lock. DDL commits at once here, so every statement is idempotent. */
  protected async migrateSchema(): Promise<number> {
    const connection = await this.pool.getConnection()
    try {
      const [rows] = await connection.query<RowDataPacket[]>(
        `SELECT GET_LOCK(${MIGRATION_LOCK}, ?) AS locked`,
        [MIGRATION_LOCK_TIMEOUT_S],
      )
      if (rows[0]?.locked !== 1) {
        throw new Error(`another migration held the lock for ${MIGRATION_LOCK_TIMEOUT_S} s`)
      }
      const from = await this.queries.migrate(connectionPort(connection))
      await connection.query(`DO RELEASE_LOCK(${MIGRATION_LOCK})`)
      connection.release()
      return from
    } catch (error) {
      // Ending the session frees its named lock.
      connection.destroy()
      throw error
    }
  }

  protected async release(): Promise<void> {
    if (this.ownsPool) await this.pool.end()
  }
}

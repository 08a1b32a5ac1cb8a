import { closeSync, openSync } from 'node:fs'
import Database from 'better-sqlite3'
import { type Clock, systemClock } from '../../core/clock.js'
import { ConfigError, toStoreError } from '../../core/errors.js'
import type {
  ClosableStore,
  CountableStore,
  ListableStore,
  MigratableStore,
  PrunableStore,
  SessionRecord,
  SessionStore,
  StoreOptions,
  UserIndexedStore,
} from '../../core/store.js'
import type { SqlPort, SqlRow, SqlValue } from '../sql/port.js'
import { bind, SCHEMA_VERSION, SessionQueries, sqliteDialect } from '../sql/queries.js'

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions extends StoreOptions {
  /**
   * The database file, or `':memory:'`. Its directory must already exist: the store never creates
   * directories. A new file is created with mode 0600.
   */
  path: string
  /** The sessions table. Letters, digits and `_`, at most 63. Default `'latchkey_sessions'`. */
  tableName?: string
  /** How long a statement waits for another connection's lock before failing, in ms. Default 5000. */
  busyTimeoutMs?: number
}

/** Rows fetched per round by `list()`. */
const LIST_PAGE_SIZE = 500

const MAX_TIMEOUT_MS = 2_147_483_647

/**
 * Sessions in a SQLite file, through better-sqlite3: the embedded default for one machine. WAL
 * journal, so readers never wait for the writer; `secure_delete`, so a destroyed payload is
 * overwritten in the file rather than left in free space (the WAL keeps old pages until the next
 * checkpoint).
 *
 * The database opens on the first operation, and the schema is created then (`migrate()` does the
 * same on demand). If opening fails, that operation rejects with `StoreError` and the next one tries
 * again, so the store recovers once the file becomes reachable. better-sqlite3 is synchronous: a
 * statement waiting for a lock held by another process blocks this process for up to `busyTimeoutMs`.
 */
export class SqliteStore
  implements
    SessionStore,
    UserIndexedStore,
    PrunableStore,
    CountableStore,
    ListableStore,
    MigratableStore,
    ClosableStore
{
  private readonly path: string
  private readonly clock: Clock
  private readonly busyTimeoutMs: number
  private readonly queries: SessionQueries
  private readonly statements = new Map<string, Database.Statement<SqlValue[], SqlRow>>()
  private readonly port: SqlPort
  private db: Database.Database | undefined
  private closed = false

  constructor(options: SqliteStoreOptions) {
    const { path, clock = systemClock, tableName = 'latchkey_sessions', busyTimeoutMs = 5000 } = options ?? {}
    if (typeof path !== 'string' || path === '') {
      throw new ConfigError('path', `must be a file path or ':memory:', got ${JSON.stringify(path)}`)
    }
    if (typeof clock?.now !== 'function') throw new ConfigError('clock', 'must have a now() method')
    if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0 || busyTimeoutMs > MAX_TIMEOUT_MS) {
      throw new ConfigError(
        'busyTimeoutMs',
        `must be an integer from 0 to ${MAX_TIMEOUT_MS}, got ${busyTimeoutMs}`,
      )
    }
    this.path = path
    this.clock = clock
    this.busyTimeoutMs = busyTimeoutMs
    this.queries = new SessionQueries(sqliteDialect, tableName)
    this.port = {
      run: async (sql, params) => this.statement(sql).run(...params).changes,
      one: async (sql, params) => this.statement(sql).get(...params),
      all: async (sql, params) => this.statement(sql).all(...params),
    }
  }

  get(key: string): Promise<SessionRecord | null> {
    return this.use('get', (port, now) => this.queries.get(port, key, now))
  }

  create(record: SessionRecord): Promise<boolean> {
    return this.use('create', (port, now) => this.queries.create(port, record, now))
  }

  update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    return this.use('update', (port, now) => this.queries.update(port, record, expectedVersion, now))
  }

  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    return this.use('touch', (port, now) => this.queries.touch(port, key, lastSeenAt, idleExpiresAt, now))
  }

  destroy(key: string): Promise<void> {
    return this.use('destroy', (port, now) => this.queries.destroy(port, key, now))
  }

  listByUser(userId: string): Promise<SessionRecord[]> {
    return this.use('listByUser', (port, now) => this.queries.listByUser(port, userId, now))
  }

  destroyByUser(userId: string, exceptKey?: string): Promise<number> {
    return this.use('destroyByUser', (port, now) => this.queries.destroyByUser(port, userId, exceptKey, now))
  }

  prune(): Promise<number> {
    return this.use('prune', (port, now) => this.queries.prune(port, now))
  }

  count(): Promise<number> {
    return this.use('count', (port, now) => this.queries.count(port, now))
  }

  /** Every live record in key order, fetched a page at a time: writes between pages are fine. */
  async *list(): AsyncIterable<SessionRecord> {
    let after = ''
    for (;;) {
      const page = await this.use('list', (port, now) =>
        this.queries.listPage(port, after, LIST_PAGE_SIZE, now),
      )
      yield* page
      const last = page[page.length - 1]
      if (!last || page.length < LIST_PAGE_SIZE) return
      after = last.key
    }
  }

  /** Creates the schema if missing (it also runs on first use). Idempotent and safe across processes. */
  migrate(): Promise<void> {
    return this.use('migrate', async () => this.migrateOn(this.connection()))
  }

  schemaSql(): string {
    return this.queries.schemaSql()
  }

  /** Closes the database. Later calls reject with `StoreError`. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    this.statements.clear()
    const db = this.db
    this.db = undefined
    try {
      db?.close()
    } catch (error) {
      throw toStoreError('SqliteStore', 'close', error)
    }
  }

  /** Runs one operation on the open database, turning every failure into a `StoreError`. */
  private async use<T>(operation: string, run: (port: SqlPort, now: number) => Promise<T>): Promise<T> {
    try {
      this.connection()
      return await run(this.port, this.clock.now())
    } catch (error) {
      throw toStoreError('SqliteStore', operation, error)
    }
  }

  /** The open database, opening it (and creating the schema) on first use or after a failed open. */
  private connection(): Database.Database {
    if (this.closed) throw new Error('the store is closed')
    if (this.db) return this.db
    const inMemory = this.path === ':memory:'
    if (!inMemory) createPrivateFile(this.path)
    const db = new Database(this.path, { timeout: this.busyTimeoutMs })
    try {
      db.pragma('journal_mode = WAL')
      db.pragma('secure_delete = ON')
      this.migrateOn(db)
    } catch (error) {
      db.close()
      throw error
    }
    this.db = db
    return db
  }

  private statement(sql: string): Database.Statement<SqlValue[], SqlRow> {
    let statement = this.statements.get(sql)
    if (!statement) {
      statement = this.connection().prepare<SqlValue[], SqlRow>(sql)
      this.statements.set(sql, statement)
    }
    return statement
  }

  /** Brings the schema to {@link SCHEMA_VERSION} in one immediate transaction, so concurrent migrations queue. */
  private migrateOn(db: Database.Database): void {
    const { queries } = this
    const table = queries.tableName
    db.transaction(() => {
      db.exec(queries.createSchemaTable)
      const row = db
        .prepare<SqlValue[], SqlRow>(queries.selectVersion.sql)
        .get(...bind(queries.selectVersion, { table }))
      const current = row ? Number(row.version) : 0
      if (current > SCHEMA_VERSION) {
        throw new Error(
          `table ${table} has schema version ${current}; this latchkey knows up to ${SCHEMA_VERSION}`,
        )
      }
      for (let version = current; version < SCHEMA_VERSION; version++) {
        for (const sql of queries.migrations[version] ?? []) db.exec(sql)
      }
      if (current === SCHEMA_VERSION) return
      const write = current === 0 ? queries.insertVersion : queries.updateVersion
      db.prepare(write.sql).run(...bind(write, { table, version: SCHEMA_VERSION }))
    }).immediate()
  }
}

/** Creates `path` with mode 0600 if it does not exist yet (atomically, so it is never briefly readable). */
function createPrivateFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
}

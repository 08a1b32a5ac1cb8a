import { closeSync, existsSync, openSync } from 'node:fs'
import type Database from 'better-sqlite3'
import { ConfigError } from '../../core/errors.js'
import { requireDriver } from '../../core/optional-peer.js'
import { isPromise, type MaybePromise, type SessionRecord, type SyncSessionStore } from '../../core/store.js'
import { missingSchema } from '../refusal.js'
import { validateDelay } from '../shared.js'
import { sqliteDialect } from '../sql/dialects.js'
import type { SqlPort, SqlRow, SqlValue } from '../sql/port.js'
import { SqlStore, type SqlStoreOptions } from '../sql/sql-store.js'
import { refuseUnknownStoreOptions } from '../store-options.js'

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions extends SqlStoreOptions {
  /**
   * The database file, or `':memory:'`. Its directory must already exist: the store never creates
   * directories. A new file is created with mode 0600.
   */
  path: string
  /** How long a statement waits for another connection's lock before failing, in ms. Default 5000. */
  busyTimeoutMs?: number
  /**
   * SQLite's `synchronous` setting. `'normal'` (the default) syncs the write-ahead log at checkpoints
   * rather than at every commit: an acknowledged write survives the process crashing or being killed
   * (the log is in the operating system's hands), but a power loss or kernel crash may undo the last
   * writes before a checkpoint, which for sessions means signing a few people in again. `'full'` syncs
   * every commit to disk and survives that too, at several times the cost of a write.
   */
  synchronous?: 'normal' | 'full'
}

/**
 * Sessions in a SQLite file, through better-sqlite3: the embedded default for one machine. WAL
 * journal, so readers never wait for the writer; `secure_delete`, so a destroyed payload is
 * overwritten in the file rather than left in free space (the WAL keeps old pages until the next
 * checkpoint).
 *
 * The database opens on the first operation, and the schema is created then (`migrate()` does the
 * same on demand). If opening fails, that operation rejects with `StoreError` and the next one tries
 * again, so the store recovers once the file becomes reachable. Expired rows are deleted every
 * `pruneIntervalMs`. better-sqlite3 is synchronous: a statement waiting for a lock held by another
 * process blocks this process for up to `busyTimeoutMs`. The store also answers synchronously
 * (`getSync`, `updateSync`...), which the manager uses to commit a plain request without a promise.
 */
export class SqliteStore extends SqlStore implements SyncSessionStore {
  private readonly path: string
  private readonly busyTimeoutMs: number
  private readonly synchronous: 'normal' | 'full'
  private readonly statements = new Map<string, Database.Statement<SqlValue[], SqlRow>>()
  private readonly sqlPort: SqlPort
  private db: Database.Database | undefined
  /** better-sqlite3, loaded at construction: a missing package is a ConfigError there, not at first use. */
  private readonly driver: typeof Database

  constructor(options: SqliteStoreOptions) {
    refuseUnknownStoreOptions('SqliteStore', options ?? {})
    const { path, busyTimeoutMs = 5000, synchronous = 'normal' } = options ?? {}
    if (synchronous !== 'normal' && synchronous !== 'full') {
      throw new ConfigError('synchronous', `must be 'normal' or 'full', got ${JSON.stringify(synchronous)}`)
    }
    if (typeof path !== 'string' || path === '') {
      throw new ConfigError('path', `must be a file path or ':memory:', got ${JSON.stringify(path)}`)
    }
    validateDelay(busyTimeoutMs, 'busyTimeoutMs', 0)
    super('SqliteStore', sqliteDialect, options)
    this.driver = requireDriver<typeof Database>('better-sqlite3', 'SqliteStore')
    this.path = path
    this.busyTimeoutMs = busyTimeoutMs
    this.synchronous = synchronous
    this.sqlPort = portOver((sql) => this.statement(sql))
  }

  // better-sqlite3 answers at once, so the shared query set does too: these are the promise methods'
  // own code, returned without a promise.
  getSync(key: string): SessionRecord | null {
    return now(this.use('get', (port, time) => this.queries.get(port, key, time)))
  }

  createSync(record: SessionRecord): boolean {
    return now(this.use('create', (port, time) => this.queries.create(port, record, time)))
  }

  updateSync(record: SessionRecord, expectedVersion: number): boolean {
    return now(this.use('update', (port, time) => this.queries.update(port, record, expectedVersion, time)))
  }

  touchSync(key: string, lastSeenAt: number, idleExpiresAt: number): void {
    now(this.use('touch', (port, time) => this.queries.touch(port, key, lastSeenAt, idleExpiresAt, time)))
  }

  /**
   * better-sqlite3 runs each statement on the event loop: 100 rows per prune statement. Measured on a
   * prune of 100 000 (`npm run bench:stores`): 200 rows held the loop up to 52-56 ms (20 ms of it CPU),
   * 100 rows 45 ms (11 ms CPU), 50 rows no less (44 ms); the rest is the disk, when a statement's
   * commit runs a WAL checkpoint.
   */
  protected override get file(): string {
    return this.path
  }

  protected override get pruneBatchSize(): number {
    return 100
  }

  /** Opens the database, then creates or upgrades the schema when it is not current (see `createSchema`). */
  protected open(): SqlPort {
    const db = this.connection()
    let found: number | { error: unknown }
    try {
      found = now(this.queries.version(this.sqlPort))
    } catch (error) {
      found = { error }
    }
    if (this.needsMigration(found)) this.migrateOn(db)
    return this.sqlPort
  }

  /** Creates or upgrades the schema, creating the database file if need be, whatever `createSchema` says. */
  protected migrateSchema(): number {
    return this.migrateOn(this.connection(true))
  }

  protected release(): void {
    this.statements.clear()
    const db = this.db
    this.db = undefined
    db?.close()
  }

  /**
   * The open database, opening it on first use or after a failed open. A missing file is created
   * when `create` (by default unless `createSchema: false`), else it is the `ERR_LATCHKEY_NO_SCHEMA` error.
   */
  private connection(create = this.createSchema): Database.Database {
    if (this.closed) throw new Error('the store is closed')
    if (this.db) return this.db
    const inMemory = this.path === ':memory:'
    if (!inMemory) {
      if (create) createPrivateFile(this.path)
      else if (!existsSync(this.path)) {
        throw missingSchema(
          `no such database file ${this.path}: run \`latchkey migrate\` to create it, or check the path`,
        )
      }
    }
    const db = new this.driver(this.path, {
      timeout: this.busyTimeoutMs,
      fileMustExist: !inMemory && !create,
    })
    try {
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${this.synchronous === 'full' ? 'FULL' : 'NORMAL'}`)
      db.pragma('secure_delete = ON')
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

  /**
   * Brings the schema to the current version in one immediate transaction, so concurrent migrations
   * queue: the shared migration, run to the end synchronously inside it.
   */
  private migrateOn(db: Database.Database): number {
    const port = portOver((sql) => db.prepare<SqlValue[], SqlRow>(sql))
    return db.transaction(() => now(this.queries.migrate(port))).immediate()
  }
}

/** The {@link SqlPort} of better-sqlite3: every answer at once, never a promise. */
function portOver(prepare: (sql: string) => Database.Statement<SqlValue[], SqlRow>): SqlPort {
  return {
    run: (sql, params) => prepare(sql).run(...params).changes,
    one: (sql, params) => prepare(sql).get(...params),
    all: (sql, params) => prepare(sql).all(...params),
  }
}

/** The answer of a call over the synchronous port, which is never a promise (a bug if it were). */
function now<T>(answer: MaybePromise<T>): T {
  if (isPromise(answer)) {
    answer.catch(() => {})
    throw new Error('a SQLite statement answered with a promise')
  }
  return answer
}

/** Creates `path` with mode 0600 if it does not exist yet (atomically, so it is never briefly readable). */
function createPrivateFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
}

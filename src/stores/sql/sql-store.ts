/**
 * What the SQL stores share beyond their queries: the contract over {@link SessionQueries}, every
 * failure turned into a `StoreError`, opening on first use (and again after a failed open), paged
 * `list()`, scheduled pruning and `close()`. A store adds only how it opens, migrates and releases
 * its database.
 *
 * Every operation goes through one method, {@link SqlStore.use}, which answers the way the store's
 * port does: synchronously over a synchronous driver (SQLite, whose `*Sync` methods are then `use`
 * itself), with a promise otherwise. The promise methods settle what it answers.
 */
import { type Clock, systemClock } from '../../core/clock.js'
import { ConfigError, toStoreError } from '../../core/errors.js'
import {
  isPromise,
  type MaybePromise,
  type MigratableStore,
  type SessionRecord,
  type StoreOptions,
} from '../../core/store.js'
import { schedulePrune, validatePruneInterval } from '../prune-timer.js'
import { isMissingTable, missingSchema } from '../refusal.js'
import {
  andThen,
  type BundledStore,
  storeOperation,
  validateClock,
  type WarningHook,
  warningHook,
} from '../shared.js'
import type { SqlDialect } from './dialects.js'
import type { SqlPort } from './port.js'
import { PRUNE_BATCH_SIZE, SCHEMA_VERSION, SessionQueries } from './queries.js'

/** Options every SQL store accepts. */
export interface SqlStoreOptions extends StoreOptions {
  /** The sessions table: letters, digits and `_`, not starting with a digit. Default `'latchkey_sessions'`. */
  tableName?: string
  /**
   * How often expired records and tombstones are deleted, in ms, give or take a quarter so that app
   * servers started together do not prune together; `0` turns it off. Default 300 000 (5 minutes).
   * The first run comes one interval after the store opened; the timer never keeps the process alive.
   */
  pruneIntervalMs?: number
  /**
   * Told what fails where no caller can hear it: a scheduled prune (a `StoreError`), an idle connection
   * of a pool the store owns dropped by the server. Default: one line on `console.warn`. What it throws
   * is ignored.
   */
  onWarning?: WarningHook
  /**
   * Whether a missing table is created on first use (and SQLite's missing database file with it).
   * Default `true`. With `false` the store never creates anything: a missing table (or file), or one at
   * an older schema version, fails every operation with a `StoreError` whose cause has the code
   * `ERR_LATCHKEY_NO_SCHEMA` and says to run `latchkey migrate` (`openStore` rejects with that cause).
   * For tools that only read, so that a mistyped name never creates an empty store. `migrate()` still
   * creates the schema.
   */
  createSchema?: boolean
}

/** What {@link SqlStore.migrate} did: created the table, upgraded it, or found it up to date. */
export interface MigrationReport {
  /** The sessions table (with its schema, when one was given). */
  readonly table: string
  readonly outcome: 'created' | 'upgraded' | 'current'
  /** The database file (SQLite), when the database is one. */
  readonly file?: string
  /** The schema version the table had before: 0 when there was none. */
  readonly from: number
  /** The schema version it has now. */
  readonly to: number
}

/** Default of {@link SqlStoreOptions.pruneIntervalMs}: 5 minutes. */
export const DEFAULT_PRUNE_INTERVAL_MS = 300_000

/** Rows fetched per round by `list()`. */
const LIST_PAGE_SIZE = 500

/**
 * The base of the SQL stores: every contract method and capability, each one operation that rejects
 * with a `StoreError` (naming the store and the method, the driver's error as `cause`) whatever fails.
 */
export abstract class SqlStore implements BundledStore, MigratableStore {
  /** The statements for this store's table. */
  protected readonly queries: SessionQueries
  private readonly storeName: string
  private readonly clock: Clock
  private readonly pruneIntervalMs: number
  /** Whether a missing table is created on first use ({@link SqlStoreOptions.createSchema}). */
  protected readonly createSchema: boolean
  /** Hands a warning to `onWarning`, which may not throw or reject back into the store. */
  protected readonly warn: (warning: Error | string) => void
  private port: SqlPort | undefined
  private opening: Promise<SqlPort> | undefined
  private closing: Promise<void> | undefined
  private stopPruning = (): void => {}

  /** Validates the shared options (throwing `ConfigError`); `storeName` goes into every `StoreError`. */
  protected constructor(storeName: string, dialect: SqlDialect, options: SqlStoreOptions, schema?: string) {
    const {
      clock = systemClock,
      tableName = 'latchkey_sessions',
      pruneIntervalMs = DEFAULT_PRUNE_INTERVAL_MS,
      onWarning,
      createSchema = true,
    } = options
    if (typeof createSchema !== 'boolean') {
      throw new ConfigError('createSchema', `must be true or false, got ${String(createSchema)}`)
    }
    this.createSchema = createSchema
    this.clock = validateClock(clock)
    this.warn = warningHook(onWarning)
    this.pruneIntervalMs = validatePruneInterval(pruneIntervalMs)
    this.queries = new SessionQueries(dialect, tableName, schema)
    this.storeName = storeName
  }

  get(key: string): Promise<SessionRecord | null> {
    return this.settle('get', (port, now) => this.queries.get(port, key, now))
  }

  create(record: SessionRecord): Promise<boolean> {
    return this.settle('create', (port, now) => this.queries.create(port, record, now))
  }

  update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    return this.settle('update', (port, now) => this.queries.update(port, record, expectedVersion, now))
  }

  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    return this.settle('touch', (port, now) => this.queries.touch(port, key, lastSeenAt, idleExpiresAt, now))
  }

  destroy(key: string): Promise<void> {
    return this.settle('destroy', (port, now) => this.queries.destroy(port, key, now))
  }

  listByUser(userId: string): Promise<SessionRecord[]> {
    return this.settle('listByUser', (port, now) => this.queries.listByUser(port, userId, now))
  }

  /** Deletes what expired, a batch of rows per statement, so a large backlog never holds a long lock. */
  prune(): Promise<number> {
    return this.settle('prune', (port, now) => this.queries.prune(port, now, this.pruneBatchSize))
  }

  count(): Promise<number> {
    return this.settle('count', (port, now) => this.queries.count(port, now))
  }

  /** Every live record in key order, fetched a page at a time: writes between pages are fine. */
  async *list(): AsyncIterable<SessionRecord> {
    let after = ''
    for (;;) {
      const page = await this.settle('list', (port, now) =>
        this.queries.listPage(port, after, LIST_PAGE_SIZE, now),
      )
      yield* page
      const last = page[page.length - 1]
      if (!last || page.length < LIST_PAGE_SIZE) return
      after = last.key
    }
  }

  /**
   * Creates or upgrades the schema (it also happens on first use, unless `createSchema: false`).
   * Idempotent, also across processes.
   */
  async migrate(): Promise<void> {
    await this.runMigration()
  }

  /** {@link migrate}, saying what it did: created the table, upgraded it, or found it up to date. */
  runMigration(): Promise<MigrationReport> {
    return storeOperation(this.storeName, 'migrate', this.closed, async () => {
      const from = await this.migrateSchema()
      const outcome = from === 0 ? 'created' : from < SCHEMA_VERSION ? 'upgraded' : 'current'
      const file = this.file
      return {
        table: this.queries.qualifiedName,
        ...(file === undefined ? {} : { file }),
        outcome,
        from,
        to: SCHEMA_VERSION,
      } as const
    })
  }

  schemaSql(): string {
    return this.queries.schemaSql()
  }

  /** Stops scheduled pruning and releases what the store owns. Later calls reject with `StoreError`. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopPruning()
      try {
        await this.release()
      } catch (error) {
        throw toStoreError(this.storeName, 'close', error)
      }
    })()
    return this.closing
  }

  /**
   * Opens the database and brings the schema up to date; resolves the port every operation then uses.
   * Called on first use, and again after it failed.
   */
  protected abstract open(): SqlPort | Promise<SqlPort>

  /**
   * Runs {@link SessionQueries.migrate} holding the database's lock, so that concurrent runs queue;
   * answers the version the table had before (0: none).
   */
  protected abstract migrateSchema(): number | Promise<number>

  /** Releases the connections the store owns (called once, by `close()`). */
  protected abstract release(): void | Promise<void>

  /** For {@link open}: migrates only when the table is not at {@link SCHEMA_VERSION} (or cannot be read). */
  protected async ensureSchema(port: SqlPort): Promise<void> {
    let found: number | { error: unknown }
    try {
      found = await this.queries.version(port)
    } catch (error) {
      found = { error }
    }
    if (this.needsMigration(found)) await this.migrateSchema()
  }

  /**
   * Whether opening must migrate, given the version found (or the error reading it: no version table
   * yet, or no table at all). With `createSchema: false`, a missing or older table throws the
   * `ERR_LATCHKEY_NO_SCHEMA` error instead, and any other error reading it is thrown as it is.
   */
  protected needsMigration(found: number | { error: unknown }): boolean {
    const table = this.queries.qualifiedName
    if (typeof found !== 'number') {
      if (this.createSchema) return true
      if (!isMissingTable(found.error)) throw found.error
      throw missingSchema(`no such table ${table}: run \`latchkey migrate\` to create it, or check tableName`)
    }
    if (found === SCHEMA_VERSION || this.createSchema || found > SCHEMA_VERSION)
      return found !== SCHEMA_VERSION
    throw missingSchema(
      found === 0
        ? `no such table ${table}: run \`latchkey migrate\` to create it, or check tableName`
        : `the table ${table} is at schema version ${found}, this latchkey needs ${SCHEMA_VERSION}: run \`latchkey migrate\``,
    )
  }

  /**
   * Rows one prune statement deletes. A store whose driver blocks the event loop while a statement
   * runs (SQLite) keeps it small, so no single statement stalls the process for long.
   */
  protected get pruneBatchSize(): number {
    return PRUNE_BATCH_SIZE
  }

  /** The database file, for {@link MigrationReport.file}: only SQLite's database is one. */
  protected get file(): string | undefined {
    return undefined
  }

  /** True once `close()` was called. */
  protected get closed(): boolean {
    return this.closing !== undefined
  }

  /**
   * Runs one operation on the open database (opening it first when needed), every failure a
   * `StoreError`. Answers as the port does: at once over a synchronous driver, which is what a store's
   * `*Sync` methods return; otherwise with a promise.
   */
  protected use<T>(operation: string, run: (port: SqlPort, now: number) => MaybePromise<T>): MaybePromise<T> {
    return storeOperation(this.storeName, operation, this.closed, () =>
      andThen(this.port ?? this.connect(), (port) => run(port, this.clock.now())),
    )
  }

  /** Makes `port` the one every operation uses, and starts the prune schedule (once). */
  private attach(port: SqlPort): SqlPort {
    if (this.closed) throw new Error('the store is closed')
    if (this.port !== undefined) return this.port
    this.port = port
    this.stopPruning = schedulePrune(
      () => this.prune(),
      this.pruneIntervalMs,
      (error) => this.warn(error instanceof Error ? error : String(error)),
    )
    return port
  }

  /** {@link use} as a promise, for the contract's promise methods: a throw becomes a rejection. */
  private async settle<T>(
    operation: string,
    run: (port: SqlPort, now: number) => MaybePromise<T>,
  ): Promise<T> {
    return this.use(operation, run)
  }

  /**
   * Opens the database: at once when `open` answers synchronously, else one open at a time. A failed
   * open is forgotten, so the next operation tries again.
   */
  private connect(): MaybePromise<SqlPort> {
    if (this.opening) return this.opening
    const opened = this.open()
    if (!isPromise(opened)) return this.attach(opened)
    this.opening = opened.then(
      (port) => this.attach(port),
      (error: unknown) => {
        this.opening = undefined
        throw error
      },
    )
    return this.opening
  }
}

/**
 * What the SQL stores share beyond their queries: the contract over {@link SessionQueries}, every
 * failure turned into a `StoreError`, opening on first use (and again after a failed open), paged
 * `list()`, scheduled pruning and `close()`. A store adds only how it opens, migrates and releases
 * its database.
 */
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
import { schedulePrune, validatePruneInterval } from '../prune-timer.js'
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
  onWarning?: (warning: Error) => void
}

/** Default of {@link SqlStoreOptions.pruneIntervalMs}: 5 minutes. */
export const DEFAULT_PRUNE_INTERVAL_MS = 300_000

/** Rows fetched per round by `list()`. */
const LIST_PAGE_SIZE = 500

function warnOnConsole(warning: Error): void {
  console.warn(`latchkey: ${warning.message}`)
}

/**
 * The base of the SQL stores: every contract method and capability, each one operation that rejects
 * with a `StoreError` (naming the store and the method, the driver's error as `cause`) whatever fails.
 */
export abstract class SqlStore
  implements
    SessionStore,
    UserIndexedStore,
    PrunableStore,
    CountableStore,
    ListableStore,
    MigratableStore,
    ClosableStore
{
  /** The statements for this store's table. */
  protected readonly queries: SessionQueries
  private readonly storeName: string
  private readonly clock: Clock
  private readonly pruneIntervalMs: number
  private readonly onWarning: (warning: Error) => void
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
      onWarning = warnOnConsole,
    } = options
    if (typeof clock?.now !== 'function') throw new ConfigError('clock', 'must have a now() method')
    if (typeof onWarning !== 'function') throw new ConfigError('onWarning', 'must be a function')
    this.pruneIntervalMs = validatePruneInterval(pruneIntervalMs)
    this.queries = new SessionQueries(dialect, tableName, schema)
    this.storeName = storeName
    this.clock = clock
    this.onWarning = onWarning
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

  /** Deletes what expired, a batch of rows per statement, so a large backlog never holds a long lock. */
  prune(): Promise<number> {
    return this.use('prune', (port, now) => this.queries.prune(port, now, this.pruneBatchSize))
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

  /** Creates or upgrades the schema (it also happens on first use). Idempotent, also across processes. */
  migrate(): Promise<void> {
    return this.use('migrate', async () => this.migrateSchema())
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

  /** Runs {@link SessionQueries.migrate} holding the database's lock, so that concurrent runs queue. */
  protected abstract migrateSchema(): void | Promise<void>

  /** Releases the connections the store owns (called once, by `close()`). */
  protected abstract release(): void | Promise<void>

  /** For {@link open}: migrates only when the table is not at {@link SCHEMA_VERSION} (or cannot be read). */
  protected async ensureSchema(port: SqlPort): Promise<void> {
    const current = await this.queries.version(port).catch(() => 0)
    if (current !== SCHEMA_VERSION) await this.migrateSchema()
  }

  /**
   * Rows one prune statement deletes. A store whose driver blocks the event loop while a statement
   * runs (SQLite) keeps it small, so no single statement stalls the process for long.
   */
  protected get pruneBatchSize(): number {
    return PRUNE_BATCH_SIZE
  }

  /** True once `close()` was called. */
  protected get closed(): boolean {
    return this.closing !== undefined
  }

  /** Hands `warning` to `onWarning`, which may not throw or reject back into the store. */
  protected warn(warning: unknown): void {
    try {
      this.onWarning(warning instanceof Error ? warning : new Error(String(warning)))
    } catch {
      // A failing hook must neither crash the process nor stop the prune schedule.
    }
  }

  /**
   * {@link use} for a store whose driver answers synchronously (SQLite): opens the database on first
   * use with `open`, which must not return a promise, and throws where `use` rejects.
   */
  protected useSync<T>(operation: string, run: (now: number) => T): T {
    try {
      if (this.closed) throw new Error('the store is closed')
      if (this.port === undefined) this.attach(this.open() as SqlPort)
      return run(this.clock.now())
    } catch (error) {
      throw toStoreError(this.storeName, operation, error)
    }
  }

  /** Makes `port` the one every operation uses, and starts the prune schedule (once). */
  private attach(port: SqlPort): SqlPort {
    if (this.closed) throw new Error('the store is closed')
    if (this.port !== undefined) return this.port
    this.port = port
    this.stopPruning = schedulePrune(
      () => this.prune(),
      this.pruneIntervalMs,
      (error) => this.warn(error),
    )
    return port
  }

  /** Runs one operation on the open database, turning every failure into a `StoreError`. */
  private async use<T>(operation: string, run: (port: SqlPort, now: number) => Promise<T>): Promise<T> {
    try {
      if (this.closed) throw new Error('the store is closed')
      const port = this.port ?? (await this.connect())
      return await run(port, this.clock.now())
    } catch (error) {
      throw toStoreError(this.storeName, operation, error)
    }
  }

  /** One open at a time; a failed open is forgotten, so the next operation tries again. */
  private connect(): Promise<SqlPort> {
    this.opening ??= (async () => this.open())().then(
      (port) => this.attach(port),
      (error: unknown) => {
        this.opening = undefined
        throw error
      },
    )
    return this.opening
  }
}

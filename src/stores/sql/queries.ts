/**
 * The SQL of every SQL store, written once. A {@link SqlDialect} fills in what differs between
 * databases (placeholders, quoting, create-if-absent, `LEAST`, column types) and
 * {@link SessionQueries} runs the store contract over any driver that implements the {@link SqlPort}.
 *
 * One row per key, live until `min(idle_expires_at, absolute_expires_at)`: every expiry check reads
 * those two columns. `expires_at` is the indexed copy prune and count range over, allowed to run up to
 * {@link EXPIRY_SLACK_MS} ahead of that deadline: a write whose new deadline the stored `expires_at`
 * still covers leaves it (and its index entry) as it is, so a session written many times a minute moves
 * its index entry about once a minute instead of on every write. A destroyed session keeps its row as a
 * tombstone (`tombstone = 1`, payload and user cleared) until that deadline.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import { ConfigError } from '../../core/errors.js'
import { expiresAt, isPromise, type MaybePromise, type SessionRecord } from '../../core/store.js'
import { andThen } from '../shared.js'
import type { SqlDialect } from './dialects.js'
import type { SqlPort, SqlRow, SqlValue } from './port.js'

/** The schema version this code writes and expects. Stored per table in `latchkey_schema`. */
export const SCHEMA_VERSION = 1

/** The table recording each session table's schema version. */
export const SCHEMA_TABLE = 'latchkey_schema'

/**
 * How far `expires_at` may run ahead of a row's deadline, in ms: a write moves it to the new deadline
 * plus this, and leaves it while it is between the new deadline and the new deadline plus this. The
 * expiry checks read the exact deadline, so this changes no answer, only how often the index is written.
 */
export const EXPIRY_SLACK_MS = 60_000

/** Rows deleted per statement by `prune`: a backlog is removed in short transactions, not one long one. */
export const PRUNE_BATCH_SIZE = 1000

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/**
 * Returns `name` if it is a usable identifier (letters, digits, `_`, not starting with a digit, at most
 * 63), else throws `ConfigError` naming `option`. Quotes, `;`, `--`, `.`, `/` and spaces are all refused.
 */
export function validateIdentifier(name: unknown, option: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw new ConfigError(
      option,
      `must be 1 to 63 letters, digits or underscores, not starting with a digit; got ${JSON.stringify(name)}`,
    )
  }
  return name
}

/** Returns `name` if it is a usable table name ({@link validateIdentifier}, not latchkey's own), else throws `ConfigError`. */
export function validateTableName(name: unknown, option = 'tableName'): string {
  validateIdentifier(name, option)
  if ((name as string).toLowerCase() === SCHEMA_TABLE)
    throw new ConfigError(option, `${SCHEMA_TABLE} is latchkey's own table`)
  return name as string
}

/** A statement with named parameters compiled to the dialect's placeholders. */
export interface SqlQuery {
  readonly sql: string
  /** The parameter name behind each placeholder, in order (a name may repeat). */
  readonly names: readonly string[]
}

/** Compiles `:name` parameters in `template` to the dialect's placeholders. */
function compile(dialect: SqlDialect, template: string): SqlQuery {
  const names: string[] = []
  const sql = template.replace(/:([A-Za-z]+)/g, (_, name: string) => {
    names.push(name)
    return dialect.placeholder(names.length)
  })
  return { sql, names }
}

/** The positional parameters of `query`, taken by name from `values`. */
export function bind(query: SqlQuery, values: Readonly<Record<string, SqlValue>>): SqlValue[] {
  return query.names.map((name) => {
    const value = values[name]
    if (value === undefined) throw new TypeError(`missing SQL parameter :${name}`)
    return value
  })
}

/** Columns in the order of {@link SessionRecord}'s fields, for SELECT and INSERT. */
const RECORD_COLUMNS = [
  'key',
  'version',
  'user_id',
  'created_at',
  'last_seen_at',
  'idle_expires_at',
  'absolute_expires_at',
  'payload',
] as const

/** A stored row as a {@link SessionRecord}. Numbers go through `Number()` for drivers that return strings. */
export function rowToRecord(row: SqlRow): SessionRecord {
  const { payload } = row
  return {
    key: String(row.key),
    version: Number(row.version),
    userId: row.user_id === null || row.user_id === undefined ? null : String(row.user_id),
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
    idleExpiresAt: Number(row.idle_expires_at),
    absoluteExpiresAt: Number(row.absolute_expires_at),
    payload:
      payload instanceof Uint8Array
        ? Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')
        : String(payload),
  }
}

/** One statement with its parameters bound. */
export interface BoundStatement {
  readonly sql: string
  readonly params: readonly SqlValue[]
}

/**
 * The store contract in SQL for one table, over any {@link SqlPort}. Each method is one statement
 * (a MySQL create is two, see {@link SqlDialect.insertUnlessTaken}), so each is atomic on its own;
 * `list` pages by key so that no cursor stays open between pages, and `prune` deletes in batches.
 */
export class SessionQueries {
  /** The validated table name. */
  readonly tableName: string
  /** The table's name as messages show it: `schema.table` when a schema was given. */
  readonly qualifiedName: string
  /** `migrations[v]` takes the schema from version `v` to `v + 1`; every statement is idempotent. */
  readonly migrations: readonly (readonly string[])[]
  /** Creates the schema-version table; run before reading the version. */
  private readonly createSchemaTable: string

  private readonly dialect: SqlDialect
  /** Reads this table's schema version: a row with `version`, or none (version 0). */
  private readonly selectVersion: BoundStatement

  private readonly versionRowSql: string
  private readonly insertVersion: SqlQuery
  private readonly updateVersion: SqlQuery
  private readonly createSteps: readonly SqlQuery[]
  private readonly q: Record<
    'get' | 'update' | 'touch' | 'destroy' | 'listByUser' | 'prune' | 'count' | 'listPage',
    SqlQuery
  >
  /**
   * Where assigning an indexed column rewrites its index entry even to the same value (SQLite): an
   * update and a touch that change no indexed column, tried first; when they change nothing (the
   * deadline left `expires_at`, the user changed, or the row is not there), the full statement runs.
   */
  private readonly quick: Record<'update' | 'touch', SqlQuery> | null

  /**
   * The queries for `tableName` (validated here: a bad name throws `ConfigError`), in `schema` when
   * given (PostgreSQL; validated as `schema`). The version table lives beside the sessions table.
   */
  constructor(dialect: SqlDialect, tableName: string, schema?: string) {
    this.dialect = dialect
    this.tableName = validateTableName(tableName)
    this.qualifiedName = schema === undefined ? this.tableName : `${schema}.${this.tableName}`
    const c = (column: string) => dialect.quote(column)
    const qualified = (name: string) =>
      schema === undefined ? c(name) : `${c(validateIdentifier(schema, 'schema'))}.${c(name)}`
    const t = qualified(this.tableName)
    const s = qualified(SCHEMA_TABLE)
    const { types } = dialect
    const indexes = ['expires_at', 'user_id'].map((column) => {
      const name = `${this.tableName}_${column}`
      if (name.length > dialect.maxIdentifierLength) {
        const longest = dialect.maxIdentifierLength - column.length - 1
        throw new ConfigError('tableName', `must be at most ${longest} characters on this database`)
      }
      return { name: c(name), column: c(column) }
    })
    const select = RECORD_COLUMNS.map(c).join(', ')
    // The exact deadline decides; `expires_at` (never earlier than it) lets the index narrow the rows.
    const deadline = (table = '') =>
      dialect.least(`${table}${c('idle_expires_at')}`, `${table}${c('absolute_expires_at')}`)
    const live = `${c('tombstone')} = 0 AND ${c('expires_at')} > :now AND ${deadline()} > :now`
    // The stored `expires_at` kept while it covers the new deadline by at most the slack, else moved.
    // (Sums of two parameters are bound precomputed: PostgreSQL cannot type `$1 + $2`.)
    const covered = (newDeadline: string, late: string) =>
      `${c('expires_at')} >= ${newDeadline} AND ${c('expires_at')} <= ${late}`
    const keptOr = (newDeadline: string, late: string) =>
      `CASE WHEN ${covered(newDeadline, late)} THEN ${c('expires_at')} ELSE ${late} END`
    const touchDeadline = dialect.least(':idleExpiresAt', c('absolute_expires_at'))
    const sameUser = dialect.equals(c('user_id'), ':userId')
    const writeColumns = [...RECORD_COLUMNS, 'expires_at', 'tombstone'].map(c)
    const sql = (template: string) => compile(dialect, template)

    this.createSchemaTable = `CREATE TABLE IF NOT EXISTS ${s} (${c('table_name')} ${types.key} NOT NULL PRIMARY KEY, ${c('version')} ${types.integer} NOT NULL)`
    const selectVersion = sql(`SELECT ${c('version')} FROM ${s} WHERE ${c('table_name')} = :table`)
    this.selectVersion = { sql: selectVersion.sql, params: bind(selectVersion, { table: this.tableName }) }
    const insertVersion = `INSERT INTO ${s} (${c('table_name')}, ${c('version')}) VALUES (:table, :version)`
    this.insertVersion = sql(insertVersion)
    this.updateVersion = sql(`UPDATE ${s} SET ${c('version')} = :version WHERE ${c('table_name')} = :table`)
    // For display only: the table name is validated, so it is safe as a quoted literal.
    this.versionRowSql = insertVersion
      .replace(':table', `'${this.tableName}'`)
      .replace(':version', `${SCHEMA_VERSION}`)
    this.migrations = [
      dialect.createTable(
        t,
        [
          `${c('key')} ${types.key} NOT NULL PRIMARY KEY`,
          `${c('version')} ${types.integer} NOT NULL`,
          `${c('user_id')} ${types.userId}`,
          `${c('created_at')} ${types.integer} NOT NULL`,
          `${c('last_seen_at')} ${types.integer} NOT NULL`,
          `${c('idle_expires_at')} ${types.integer} NOT NULL`,
          `${c('absolute_expires_at')} ${types.integer} NOT NULL`,
          `${c('expires_at')} ${types.integer} NOT NULL`,
          `${c('payload')} ${types.payload} NOT NULL`,
          `${c('tombstone')} ${types.integer} NOT NULL DEFAULT 0`,
        ],
        indexes,
      ),
    ]

    // Insert-only, except over a row (record or tombstone) whose expiry has passed.
    this.createSteps = dialect
      .insertUnlessTaken(
        t,
        writeColumns,
        [
          ':key',
          ':version',
          ':userId',
          ':createdAt',
          ':lastSeenAt',
          ':idleExpiresAt',
          ':absoluteExpiresAt',
          ':payload',
          ':expiresAtLate',
          '0',
        ],
        `${deadline(`${t}.`)} <= :now`,
      )
      .map(sql)
    this.quick = dialect.assignmentWritesIndexes
      ? {
          update: sql(
            `UPDATE ${t} SET ${c('version')} = :version, ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt, ${c('payload')} = :payload WHERE ${c('key')} = :key AND ${c('version')} = :expectedVersion AND ${live} AND ${c('user_id')} IS :userId AND ${c('created_at')} = :createdAt AND ${c('absolute_expires_at')} = :absoluteExpiresAt AND ${covered(':expiresAt', ':expiresAtLate')}`,
          ),
          touch: sql(
            `UPDATE ${t} SET ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt WHERE ${c('key')} = :key AND ${live} AND ${covered(touchDeadline, `${touchDeadline} + :slack`)}`,
          ),
        }
      : null
    this.q = {
      get: sql(`SELECT ${select} FROM ${t} WHERE ${c('key')} = :key AND ${live}`),
      update: sql(
        `UPDATE ${t} SET ${c('version')} = :version, ${c('user_id')} = :userId, ${c('created_at')} = :createdAt, ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt, ${c('absolute_expires_at')} = :absoluteExpiresAt, ${c('expires_at')} = ${keptOr(':expiresAt', ':expiresAtLate')}, ${c('payload')} = :payload WHERE ${c('key')} = :key AND ${c('version')} = :expectedVersion AND ${live}`,
      ),
      touch: sql(
        `UPDATE ${t} SET ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt, ${c('expires_at')} = ${keptOr(touchDeadline, `${touchDeadline} + :slack`)} WHERE ${c('key')} = :key AND ${live}`,
      ),
      // The tombstone keeps its expiry; the payload and the user go at once.
      destroy: sql(
        `UPDATE ${t} SET ${c('tombstone')} = 1, ${c('payload')} = '', ${c('user_id')} = NULL WHERE ${c('key')} = :key AND ${live}`,
      ),
      listByUser: sql(`SELECT ${select} FROM ${t} WHERE ${sameUser} AND ${live}`),
      prune: sql(
        dialect.deleteSome(
          t,
          c('key'),
          `${c('expires_at')} <= :nowLate AND ${deadline()} <= :now`,
          c('expires_at'),
          ':limit',
        ),
      ),
      count: sql(`SELECT COUNT(*) AS ${c('n')} FROM ${t} WHERE ${live}`),
      listPage: sql(
        `SELECT ${select} FROM ${t} WHERE ${c('key')} > :after AND ${live} ORDER BY ${c('key')} LIMIT :limit`,
      ),
    }
  }

  /** Every DDL statement of the current schema, ending with the version row, as `;`-terminated text. */
  schemaSql(): string {
    return `${[this.createSchemaTable, ...this.migrations.flat(), this.versionRowSql].join(';\n\n')};\n`
  }

  /** This table's schema version as recorded in the version table: 0 when it has none. */
  version(port: SqlPort): MaybePromise<number> {
    return andThen(port.one(this.selectVersion.sql, this.selectVersion.params), (row) =>
      row ? Number(row.version) : 0,
    )
  }

  /**
   * What brings this table from schema version `current` to {@link SCHEMA_VERSION}: the migrations,
   * then the version row. Throws when `current` is newer than this code knows.
   */
  upgrade(current: number): BoundStatement[] {
    if (current > SCHEMA_VERSION) {
      throw new Error(
        `table ${this.tableName} has schema version ${current}; this latchkey knows up to ${SCHEMA_VERSION}`,
      )
    }
    if (current === SCHEMA_VERSION) return []
    const steps: BoundStatement[] = this.migrations
      .slice(current)
      .flat()
      .map((sql) => ({ sql, params: [] }))
    const write = current === 0 ? this.insertVersion : this.updateVersion
    steps.push({ sql: write.sql, params: bind(write, { table: this.tableName, version: SCHEMA_VERSION }) })
    return steps
  }

  /**
   * Creates or upgrades the schema over `port`. Not atomic by itself: the store runs it on one
   * connection holding the database's lock (a transaction, an advisory lock), so concurrent runs queue.
   * Over a synchronous port (SQLite) it runs to the end before returning, inside the caller's transaction.
   * Answers the version the table had before: 0 when it had none.
   */
  migrate(port: SqlPort): MaybePromise<number> {
    const steps = andThen(port.run(this.createSchemaTable, []), () => this.version(port))
    return andThen(steps, (current) => andThen(runInOrder(port, this.upgrade(current)), () => current))
  }

  /** {@link SessionStore.get} on `port`. */
  get(port: SqlPort, key: string, now: number): MaybePromise<SessionRecord | null> {
    if (!this.storable(key)) return null
    return andThen(port.one(this.q.get.sql, bind(this.q.get, { key, now })), (row) =>
      row ? rowToRecord(row) : null,
    )
  }

  /** {@link SessionStore.create} on `port`: its statements in order, the last one inserting or not. */
  create(port: SqlPort, record: SessionRecord, now: number): MaybePromise<boolean> {
    if (!this.storable(record.key)) return false
    const values = { ...this.recordValues(record), now }
    const steps = this.createSteps.map((step) => ({ sql: step.sql, params: bind(step, values) }))
    return andThen(runInOrder(port, steps), (changed) => changed === 1)
  }

  /** {@link SessionStore.update} on `port`: one statement changing one row or none. */
  update(port: SqlPort, record: SessionRecord, expectedVersion: number, now: number): MaybePromise<boolean> {
    if (!this.storable(record.key)) return false
    const values = { ...this.recordValues(record), expectedVersion, now }
    const full = () =>
      andThen(port.run(this.q.update.sql, bind(this.q.update, values)), (changed) => changed === 1)
    if (this.quick === null) return full()
    return andThen(port.run(this.quick.update.sql, bind(this.quick.update, values)), (changed) =>
      changed === 1 ? true : full(),
    )
  }

  /** {@link SessionStore.touch} on `port`. */
  touch(
    port: SqlPort,
    key: string,
    lastSeenAt: number,
    idleExpiresAt: number,
    now: number,
  ): MaybePromise<void> {
    if (!this.storable(key)) return
    const values = { key, lastSeenAt, idleExpiresAt, now, slack: EXPIRY_SLACK_MS }
    const full = () => andThen(port.run(this.q.touch.sql, bind(this.q.touch, values)), () => undefined)
    if (this.quick === null) return full()
    return andThen(port.run(this.quick.touch.sql, bind(this.quick.touch, values)), (changed) =>
      changed === 1 ? undefined : full(),
    )
  }

  /** {@link SessionStore.destroy} on `port`. */
  destroy(port: SqlPort, key: string, now: number): MaybePromise<void> {
    if (!this.storable(key)) return
    return andThen(port.run(this.q.destroy.sql, bind(this.q.destroy, { key, now })), () => undefined)
  }

  /** {@link UserIndexedStore.listByUser} on `port`. */
  listByUser(port: SqlPort, userId: string, now: number): MaybePromise<SessionRecord[]> {
    return andThen(port.all(this.q.listByUser.sql, bind(this.q.listByUser, { userId, now })), (rows) =>
      rows.map(rowToRecord),
    )
  }

  /**
   * Deletes every row expired at `now`, `batchSize` ({@link PRUNE_BATCH_SIZE} by default) per
   * statement, letting the event loop run between statements; resolves how many.
   */
  async prune(port: SqlPort, now: number, batchSize = PRUNE_BATCH_SIZE): Promise<number> {
    let total = 0
    for (;;) {
      const values = { now, nowLate: now + EXPIRY_SLACK_MS, limit: batchSize }
      const deleted = await port.run(this.q.prune.sql, bind(this.q.prune, values))
      total += deleted
      if (deleted < batchSize) return total
      await nextTurn()
    }
  }

  /** {@link CountableStore.count} on `port`. */
  count(port: SqlPort, now: number): MaybePromise<number> {
    return andThen(port.one(this.q.count.sql, bind(this.q.count, { now })), (row) => Number(row?.n ?? 0))
  }

  /** Up to `limit` live records with keys after `after` ('' to start), in key order. */
  listPage(port: SqlPort, after: string, limit: number, now: number): MaybePromise<SessionRecord[]> {
    return andThen(port.all(this.q.listPage.sql, bind(this.q.listPage, { after, limit, now })), (rows) =>
      rows.map(rowToRecord),
    )
  }

  private storable(key: string): boolean {
    return this.dialect.keyPattern?.test(key) ?? true
  }

  private recordValues(record: SessionRecord): Record<string, SqlValue> {
    return {
      key: record.key,
      version: record.version,
      userId: record.userId ?? null,
      createdAt: record.createdAt,
      lastSeenAt: record.lastSeenAt,
      idleExpiresAt: record.idleExpiresAt,
      absoluteExpiresAt: record.absoluteExpiresAt,
      expiresAt: expiresAt(record),
      expiresAtLate: expiresAt(record) + EXPIRY_SLACK_MS,
      payload: this.dialect.payload(record.payload),
    }
  }
}

/**
 * Runs `statements` one after another on `port`; answers the row count of the last one. Stays
 * synchronous as long as the port answers synchronously, so SQLite runs a create or a migration to
 * the end inside the caller's call (and transaction).
 */
function runInOrder(port: SqlPort, statements: readonly BoundStatement[], from = 0): MaybePromise<number> {
  let changed = 0
  for (let i = from; i < statements.length; i++) {
    const { sql, params } = statements[i] as BoundStatement
    const result = port.run(sql, params)
    if (isPromise(result)) {
      return i + 1 === statements.length ? result : result.then(() => runInOrder(port, statements, i + 1))
    }
    changed = result
  }
  return changed
}

/**
 * The SQL of every SQL store, written once. A {@link SqlDialect} fills in what differs between
 * databases (placeholders, quoting, upsert, `LEAST`, column types) and {@link SessionQueries} runs
 * the store contract over any driver that implements the {@link SqlPort}.
 *
 * One row per key. `expires_at` is `min(idle_expires_at, absolute_expires_at)`, kept in step by
 * every write, so expiry checks and prune use one indexed column. A destroyed session keeps its row
 * as a tombstone (`tombstone = 1`, payload and user cleared) until `expires_at`.
 */
import { ConfigError } from '../../core/errors.js'
import { expiresAt, type SessionRecord } from '../../core/store.js'
import type { SqlPort, SqlRow, SqlValue } from './port.js'

/** What differs between the SQL databases latchkey supports. */
export interface SqlDialect {
  /** The placeholder of the `index`-th bound parameter, from 1: `?` (SQLite, MySQL) or `$1` (PostgreSQL). */
  placeholder(index: number): string
  /** Quotes an identifier: `"name"` (SQLite, PostgreSQL) or `` `name` `` (MySQL). */
  quote(identifier: string): string
  /** The smaller of two SQL expressions: `MIN(a, b)` in SQLite, `LEAST(a, b)` elsewhere. */
  least(a: string, b: string): string
  /**
   * The clause after `INSERT INTO table (columns) VALUES (...)` that, on a conflict on `columns[0]`
   * (the primary key), overwrites the existing row with the inserted values only when `condition`
   * (over the existing row, columns qualified with the table name) holds, so that the statement
   * changes exactly one row or none.
   * SQLite and PostgreSQL: `ON CONFLICT (key) DO UPDATE SET c = excluded.c, ... WHERE condition`.
   */
  upsertWhen(columns: readonly string[], condition: string): string
  /** Column types: the 43-char key, free text (user ID, payload) and 64-bit integers (epoch ms). */
  readonly types: { readonly key: string; readonly text: string; readonly integer: string }
}

/** SQLite, 3.24 or later (upsert). */
export const sqliteDialect: SqlDialect = Object.freeze({
  placeholder: () => '?',
  quote: (identifier: string) => `"${identifier.replaceAll('"', '""')}"`,
  least: (a: string, b: string) => `MIN(${a}, ${b})`,
  upsertWhen(columns: readonly string[], condition: string) {
    const set = columns.map((column) => `${column} = excluded.${column}`).join(', ')
    return `ON CONFLICT (${columns[0]}) DO UPDATE SET ${set} WHERE ${condition}`
  },
  types: Object.freeze({ key: 'TEXT', text: 'TEXT', integer: 'INTEGER' }),
})

/** The schema version this code writes and expects. Stored per table in `latchkey_schema`. */
export const SCHEMA_VERSION = 1

/** The table recording each session table's schema version. */
export const SCHEMA_TABLE = 'latchkey_schema'

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/** Returns `name` if it is a usable table name (letters, digits, `_`, at most 63), else throws `ConfigError`. */
export function validateTableName(name: unknown, option = 'tableName'): string {
  if (typeof name !== 'string' || !TABLE_NAME.test(name)) {
    throw new ConfigError(
      option,
      `must be 1 to 63 letters, digits or underscores, not starting with a digit; got ${JSON.stringify(name)}`,
    )
  }
  if (name.toLowerCase() === SCHEMA_TABLE)
    throw new ConfigError(option, `${SCHEMA_TABLE} is latchkey's own table`)
  return name
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
  return {
    key: String(row.key),
    version: Number(row.version),
    userId: row.user_id === null || row.user_id === undefined ? null : String(row.user_id),
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
    idleExpiresAt: Number(row.idle_expires_at),
    absoluteExpiresAt: Number(row.absolute_expires_at),
    payload: String(row.payload),
  }
}

function recordValues(record: SessionRecord): Record<string, SqlValue> {
  return {
    key: record.key,
    version: record.version,
    userId: record.userId ?? null,
    createdAt: record.createdAt,
    lastSeenAt: record.lastSeenAt,
    idleExpiresAt: record.idleExpiresAt,
    absoluteExpiresAt: record.absoluteExpiresAt,
    expiresAt: expiresAt(record),
    payload: record.payload,
  }
}

/**
 * The store contract in SQL for one table, over any {@link SqlPort}. Each method is one statement,
 * so each is atomic on its own; `list` pages by key so that no cursor stays open between pages.
 */
export class SessionQueries {
  /** The validated table name. */
  readonly tableName: string
  /** `migrations[v]` takes the schema from version `v` to `v + 1`; every statement is idempotent. */
  readonly migrations: readonly (readonly string[])[]
  /** Creates the schema-version table; run before reading the version. */
  readonly createSchemaTable: string
  /** Reads this table's schema version (`:table`): a row with `version`, or none. */
  readonly selectVersion: SqlQuery
  /** Records the first schema version of this table (`:table`, `:version`). */
  readonly insertVersion: SqlQuery
  /** Raises the schema version of this table (`:table`, `:version`). */
  readonly updateVersion: SqlQuery

  private readonly versionRowSql: string
  private readonly q: Record<
    | 'get'
    | 'create'
    | 'update'
    | 'touch'
    | 'destroy'
    | 'listByUser'
    | 'destroyByUser'
    | 'prune'
    | 'count'
    | 'listPage',
    SqlQuery
  >

  constructor(dialect: SqlDialect, tableName: string) {
    this.tableName = validateTableName(tableName)
    const c = (column: string) => dialect.quote(column)
    const t = dialect.quote(this.tableName)
    const s = dialect.quote(SCHEMA_TABLE)
    const { types } = dialect
    const select = RECORD_COLUMNS.map(c).join(', ')
    const live = `${c('tombstone')} = 0 AND ${c('expires_at')} > :now`
    const writeColumns = [...RECORD_COLUMNS, 'expires_at', 'tombstone'].map(c)
    const sql = (template: string) => compile(dialect, template)

    this.createSchemaTable = `CREATE TABLE IF NOT EXISTS ${s} (${c('table_name')} ${types.key} NOT NULL PRIMARY KEY, ${c('version')} ${types.integer} NOT NULL)`
    this.selectVersion = sql(`SELECT ${c('version')} FROM ${s} WHERE ${c('table_name')} = :table`)
    const insertVersion = `INSERT INTO ${s} (${c('table_name')}, ${c('version')}) VALUES (:table, :version)`
    this.insertVersion = sql(insertVersion)
    this.updateVersion = sql(`UPDATE ${s} SET ${c('version')} = :version WHERE ${c('table_name')} = :table`)
    // For display only: the table name is validated, so it is safe as a quoted literal.
    this.versionRowSql = insertVersion
      .replace(':table', `'${this.tableName}'`)
      .replace(':version', `${SCHEMA_VERSION}`)
    this.migrations = [
      [
        `CREATE TABLE IF NOT EXISTS ${t} (
  ${c('key')} ${types.key} NOT NULL PRIMARY KEY,
  ${c('version')} ${types.integer} NOT NULL,
  ${c('user_id')} ${types.text},
  ${c('created_at')} ${types.integer} NOT NULL,
  ${c('last_seen_at')} ${types.integer} NOT NULL,
  ${c('idle_expires_at')} ${types.integer} NOT NULL,
  ${c('absolute_expires_at')} ${types.integer} NOT NULL,
  ${c('expires_at')} ${types.integer} NOT NULL,
  ${c('payload')} ${types.text} NOT NULL,
  ${c('tombstone')} ${types.integer} NOT NULL DEFAULT 0
)`,
        `CREATE INDEX IF NOT EXISTS ${c(`${this.tableName}_expires_at`)} ON ${t} (${c('expires_at')})`,
        `CREATE INDEX IF NOT EXISTS ${c(`${this.tableName}_user_id`)} ON ${t} (${c('user_id')})`,
      ],
    ]

    this.q = {
      get: sql(`SELECT ${select} FROM ${t} WHERE ${c('key')} = :key AND ${live}`),
      // Insert-only, except over a row (record or tombstone) whose expiry has passed.
      create: sql(
        `INSERT INTO ${t} (${writeColumns.join(', ')}) VALUES (:key, :version, :userId, :createdAt, :lastSeenAt, :idleExpiresAt, :absoluteExpiresAt, :payload, :expiresAt, 0) ${dialect.upsertWhen(
          writeColumns,
          `${t}.${c('expires_at')} <= :now`,
        )}`,
      ),
      update: sql(
        `UPDATE ${t} SET ${c('version')} = :version, ${c('user_id')} = :userId, ${c('created_at')} = :createdAt, ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt, ${c('absolute_expires_at')} = :absoluteExpiresAt, ${c('expires_at')} = :expiresAt, ${c('payload')} = :payload WHERE ${c('key')} = :key AND ${c('version')} = :expectedVersion AND ${live}`,
      ),
      touch: sql(
        `UPDATE ${t} SET ${c('last_seen_at')} = :lastSeenAt, ${c('idle_expires_at')} = :idleExpiresAt, ${c('expires_at')} = ${dialect.least(':idleExpiresAt', c('absolute_expires_at'))} WHERE ${c('key')} = :key AND ${live}`,
      ),
      // The tombstone keeps its expiry; the payload and the user go at once.
      destroy: sql(
        `UPDATE ${t} SET ${c('tombstone')} = 1, ${c('payload')} = '', ${c('user_id')} = NULL WHERE ${c('key')} = :key AND ${live}`,
      ),
      listByUser: sql(`SELECT ${select} FROM ${t} WHERE ${c('user_id')} = :userId AND ${live}`),
      // Keys are never empty, so an `exceptKey` of '' excepts nothing.
      destroyByUser: sql(
        `UPDATE ${t} SET ${c('tombstone')} = 1, ${c('payload')} = '', ${c('user_id')} = NULL WHERE ${c('user_id')} = :userId AND ${c('key')} <> :exceptKey AND ${live}`,
      ),
      prune: sql(`DELETE FROM ${t} WHERE ${c('expires_at')} <= :now`),
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

  async get(port: SqlPort, key: string, now: number): Promise<SessionRecord | null> {
    const row = await port.one(this.q.get.sql, bind(this.q.get, { key, now }))
    return row ? rowToRecord(row) : null
  }

  async create(port: SqlPort, record: SessionRecord, now: number): Promise<boolean> {
    return (await port.run(this.q.create.sql, bind(this.q.create, { ...recordValues(record), now }))) === 1
  }

  async update(port: SqlPort, record: SessionRecord, expectedVersion: number, now: number): Promise<boolean> {
    const values = { ...recordValues(record), expectedVersion, now }
    return (await port.run(this.q.update.sql, bind(this.q.update, values))) === 1
  }

  async touch(port: SqlPort, key: string, lastSeenAt: number, idleExpiresAt: number, now: number) {
    await port.run(this.q.touch.sql, bind(this.q.touch, { key, lastSeenAt, idleExpiresAt, now }))
  }

  async destroy(port: SqlPort, key: string, now: number): Promise<void> {
    await port.run(this.q.destroy.sql, bind(this.q.destroy, { key, now }))
  }

  async listByUser(port: SqlPort, userId: string, now: number): Promise<SessionRecord[]> {
    return (await port.all(this.q.listByUser.sql, bind(this.q.listByUser, { userId, now }))).map(rowToRecord)
  }

  async destroyByUser(port: SqlPort, userId: string, exceptKey: string | undefined, now: number) {
    const values = { userId, exceptKey: exceptKey ?? '', now }
    return port.run(this.q.destroyByUser.sql, bind(this.q.destroyByUser, values))
  }

  async prune(port: SqlPort, now: number): Promise<number> {
    return port.run(this.q.prune.sql, bind(this.q.prune, { now }))
  }

  async count(port: SqlPort, now: number): Promise<number> {
    const row = await port.one(this.q.count.sql, bind(this.q.count, { now }))
    return Number(row?.n ?? 0)
  }

  /** Up to `limit` live records with keys after `after` ('' to start), in key order. */
  async listPage(port: SqlPort, after: string, limit: number, now: number): Promise<SessionRecord[]> {
    return (await port.all(this.q.listPage.sql, bind(this.q.listPage, { after, limit, now }))).map(
      rowToRecord,
    )
  }
}

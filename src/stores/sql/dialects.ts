/**
 * What differs between the SQL databases latchkey supports, and nothing else: the queries themselves
 * are written once, in `queries.ts`.
 */
import type { SqlValue } from './port.js'

/** One secondary index of the sessions table, both names quoted. */
export interface SqlIndex {
  readonly name: string
  readonly column: string
}

/** What differs between the SQL databases latchkey supports. Every identifier handed in is already quoted. */
export interface SqlDialect {
  /** The placeholder of the `index`-th bound parameter, from 1: `?` (SQLite, MySQL) or `$1` (PostgreSQL). */
  placeholder(index: number): string
  /** Quotes an identifier: `"name"` (SQLite, PostgreSQL) or `` `name` `` (MySQL). */
  quote(identifier: string): string
  /** The smaller of two SQL expressions: `MIN(a, b)` in SQLite, `LEAST(a, b)` elsewhere. */
  least(a: string, b: string): string
  /** `column = value` compared exactly, code point for code point (MySQL collations ignore trailing spaces). */
  equals(column: string, value: string): string
  /** The longest identifier the database accepts (index names are the table name plus a suffix). */
  readonly maxIdentifierLength: number
  /** The DDL creating `table` with `columns` (one definition each) and `indexes`, every statement idempotent. */
  createTable(table: string, columns: readonly string[], indexes: readonly SqlIndex[]): string[]
  /**
   * The statements of an insert-only create: insert `values` into `columns` of `table` (`columns[0]`,
   * `values[0]` being the primary key), except over an existing row, which is replaced only when
   * `replaceable` (a condition on it, columns qualified with the table) holds. Run in order; the last
   * one changes one row when the record was written and none otherwise.
   */
  insertUnlessTaken(
    table: string,
    columns: readonly string[],
    values: readonly string[],
    replaceable: string,
  ): string[]
  /**
   * Assigning an indexed column rewrites its index entry even when the value is the same (SQLite
   * decides which indexes an UPDATE writes from its SET list; PostgreSQL and InnoDB compare values):
   * the queries then try an update that assigns no indexed column first.
   */
  readonly assignmentWritesIndexes?: boolean
  /** Deletes at most `limit` rows of `table` matching `where`, taken in `orderBy` order; `key` is the primary key. */
  deleteSome(table: string, key: string, where: string, orderBy: string, limit: string): string
  /** The payload as bound to its parameter: the string, or its UTF-8 bytes where the column is binary. */
  payload(payload: string): SqlValue
  /**
   * The keys the key column can hold exactly, when not every string: any other key reads as not found
   * and is never written, instead of failing or being stored mangled. Core keys (43 base64url) always fit.
   */
  readonly keyPattern?: RegExp
  /** Column types: the 43-char key, the user ID (up to 255 characters), the payload and 64-bit integers. */
  readonly types: {
    readonly key: string
    readonly userId: string
    readonly payload: string
    readonly integer: string
  }
}

/** `CREATE TABLE` then one `CREATE INDEX IF NOT EXISTS` per index (SQLite, PostgreSQL). */
function tableThenIndexes(table: string, columns: readonly string[], indexes: readonly SqlIndex[]) {
  return [
    `CREATE TABLE IF NOT EXISTS ${table} (\n  ${columns.join(',\n  ')}\n)`,
    ...indexes.map((index) => `CREATE INDEX IF NOT EXISTS ${index.name} ON ${table} (${index.column})`),
  ]
}

/** `ON CONFLICT (key) DO UPDATE SET every column WHERE replaceable`: one statement (SQLite, PostgreSQL). */
function upsertWhen(
  table: string,
  columns: readonly string[],
  values: readonly string[],
  replaceable: string,
) {
  const set = columns.map((column) => `${column} = excluded.${column}`).join(', ')
  return [
    `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${values.join(', ')}) ON CONFLICT (${columns[0]}) DO UPDATE SET ${set} WHERE ${replaceable}`,
  ]
}

const doubleQuote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`

/** SQLite, 3.24 or later (upsert). */
export const sqliteDialect: SqlDialect = Object.freeze({
  placeholder: () => '?',
  quote: doubleQuote,
  least: (a: string, b: string) => `MIN(${a}, ${b})`,
  equals: (column: string, value: string) => `${column} = ${value}`,
  maxIdentifierLength: Number.POSITIVE_INFINITY,
  createTable: tableThenIndexes,
  insertUnlessTaken: upsertWhen,
  assignmentWritesIndexes: true,
  deleteSome: (table: string, key: string, where: string, orderBy: string, limit: string) =>
    `DELETE FROM ${table} WHERE ${key} IN (SELECT ${key} FROM ${table} WHERE ${where} ORDER BY ${orderBy} LIMIT ${limit})`,
  payload: (payload: string) => payload,
  types: Object.freeze({ key: 'TEXT', userId: 'TEXT', payload: 'TEXT', integer: 'INTEGER' }),
})

/**
 * PostgreSQL, 9.5 or later. The payload is `BYTEA` holding UTF-8, because a `TEXT` value cannot contain
 * NUL; keys sort bytewise (`COLLATE "C"`). Prune skips rows another prune has locked.
 */
export const postgresDialect: SqlDialect = Object.freeze({
  placeholder: (index: number) => `$${index}`,
  quote: doubleQuote,
  least: (a: string, b: string) => `LEAST(${a}, ${b})`,
  equals: (column: string, value: string) => `${column} = ${value}`,
  maxIdentifierLength: 63,
  createTable: tableThenIndexes,
  insertUnlessTaken: upsertWhen,
  deleteSome: (table: string, key: string, where: string, orderBy: string, limit: string) =>
    `DELETE FROM ${table} WHERE ${key} IN (SELECT ${key} FROM ${table} WHERE ${where} ORDER BY ${orderBy} LIMIT ${limit} FOR UPDATE SKIP LOCKED)`,
  payload: (payload: string) => Buffer.from(payload, 'utf8'),
  types: Object.freeze({ key: 'TEXT COLLATE "C"', userId: 'TEXT', payload: 'BYTEA', integer: 'BIGINT' }),
})

const backtick = (identifier: string) => `\`${identifier.replaceAll('`', '``')}\``

/**
 * MySQL 8 and MariaDB 10.11 or later, InnoDB. Without an upsert that reports "left alone" (mysql2 asks
 * for found rows, so `ON DUPLICATE KEY UPDATE` counts an untouched row as changed), a create deletes the
 * key's row if it has expired, then inserts with `INSERT IGNORE`: of two racing creates only one inserts.
 * Text is utf8mb4 with binary collation, compared without MySQL's trailing-space padding.
 */
export const mysqlDialect: SqlDialect = Object.freeze({
  placeholder: () => '?',
  quote: backtick,
  least: (a: string, b: string) => `LEAST(${a}, ${b})`,
  equals: (column: string, value: string) => `${column} = ${value} AND LENGTH(${column}) = LENGTH(${value})`,
  maxIdentifierLength: 64,
  // MySQL has no CREATE INDEX IF NOT EXISTS: the indexes are part of the table.
  createTable: (table: string, columns: readonly string[], indexes: readonly SqlIndex[]) => [
    `CREATE TABLE IF NOT EXISTS ${table} (\n  ${[
      ...columns,
      ...indexes.map((index) => `INDEX ${index.name} (${index.column})`),
    ].join(',\n  ')}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
  ],
  insertUnlessTaken: (
    table: string,
    columns: readonly string[],
    values: readonly string[],
    replaceable: string,
  ) => [
    `DELETE FROM ${table} WHERE ${columns[0]} = ${values[0]} AND ${replaceable}`,
    `INSERT IGNORE INTO ${table} (${columns.join(', ')}) VALUES (${values.join(', ')})`,
  ],
  deleteSome: (table: string, _key: string, where: string, orderBy: string, limit: string) =>
    `DELETE FROM ${table} WHERE ${where} ORDER BY ${orderBy} LIMIT ${limit}`,
  payload: (payload: string) => payload,
  // An ascii column refuses to compare with other text, and INSERT IGNORE would store a long or
  // non-ASCII key mangled (truncated, `?`) where it should fail.
  keyPattern: /^[A-Za-z0-9_-]{1,64}$/,
  types: Object.freeze({
    key: 'VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin',
    userId: 'VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
    payload: 'LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
    integer: 'BIGINT',
  }),
})

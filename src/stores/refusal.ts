/**
 * A server that answers and refuses is not a server that is down. A role or database that does not
 * exist, a wrong password, a Redis DB index out of range: retrying never helps. The stores reject with
 * a `StoreError` whose cause is the server's own error (Redis's too, not "the client is offline"), and
 * `openStore` turns it into a `ConfigError` carrying the server's reason, keeping "does not answer"
 * for what is down.
 * Also the "nothing there" error of a store told not to create its table, file or folder
 * (`createSchema: false`, `createDirectory: false`), with a code of its own.
 */
import { ConfigError, SessionError } from '../core/errors.js'

/** The code of the error for a missing table, database file or folder that the store was told not to create. */
export const NO_SCHEMA = 'ERR_LATCHKEY_NO_SCHEMA'

/** The error for a missing table, file or folder: `message` says what is missing and what to do. */
export function missingSchema(message: string, cause?: unknown): SessionError {
  return new SessionError(NO_SCHEMA, message, { cause })
}

/**
 * PostgreSQL's SQLSTATEs of a refused connection: invalid authorization (28000: also a role that does
 * not exist), wrong password (28P01), no such database (3D000).
 */
const POSTGRES_REFUSALS = new Set(['28000', '28P01', '3D000'])

/**
 * mysql2's codes of a refused connection: TLS asked for and not offered, access denied (with or without
 * a password), no such database.
 */
const MYSQL_REFUSALS = new Set([
  'HANDSHAKE_NO_SSL_SUPPORT',
  'ER_ACCESS_DENIED_ERROR',
  'ER_ACCESS_DENIED_NO_PASSWORD_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'ER_BAD_DB_ERROR',
])

/** node-postgres's error (it has no code) when the URL asks for TLS and the server offers none. */
const POSTGRES_NO_TLS = /^The server does not support SSL connections$/

/** Redis's replies to a refused AUTH or SELECT, as node-redis reports them. */
const REDIS_REFUSAL =
  /^(WRONGPASS|NOAUTH|ERR invalid password|ERR AUTH|ERR Client sent AUTH|ERR DB index is out of range|ERR invalid DB index)/

/** What each server is called in messages, by store. */
const SERVERS: Record<string, string> = {
  PostgresStore: 'PostgreSQL',
  MySqlStore: 'MySQL/MariaDB',
  RedisStore: 'Redis',
}

/** True when `error` (or an error it wraps) is a server refusing the connection, not a server down. */
export function isServerRefusal(error: unknown): boolean {
  return refusalIn(error) !== undefined
}

/** The refusal in `error`'s cause chain, if any. */
function refusalIn(error: unknown): Error | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && (POSTGRES_REFUSALS.has(code) || MYSQL_REFUSALS.has(code))) return e
    if (REDIS_REFUSAL.test(e.message) || POSTGRES_NO_TLS.test(e.message)) return e
  }
  return undefined
}

/**
 * `error` as a `ConfigError` with the server's reason when it is a refusal (see {@link isServerRefusal});
 * otherwise `error` itself, untouched.
 */
export function asRefusal(store: string, error: unknown): unknown {
  const refusal = refusalIn(error)
  if (refusal === undefined) return error
  const server = SERVERS[store] ?? 'the server'
  const code = (refusal as { code?: unknown }).code
  const check =
    code === 'HANDSHAKE_NO_SSL_SUPPORT' || POSTGRES_NO_TLS.test(refusal.message)
      ? 'the URL asks for TLS (sslmode, ssl) and the server offers none: enable TLS on the server, or change the URL'
      : 'check the user, password and database of the URL'
  return Object.assign(
    new ConfigError(
      'store',
      `${server} refused the connection: ${refusal.message} (${check}; retrying will not help)`,
    ),
    { cause: error },
  )
}

/**
 * True when `error` says that a table does not exist: PostgreSQL's 42P01 (undefined table), MySQL's
 * `ER_NO_SUCH_TABLE`, SQLite's "no such table".
 */
export function isMissingTable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code
  if (code === '42P01' || code === 'ER_NO_SUCH_TABLE') return true
  return error instanceof Error && /^no such table/.test(error.message)
}

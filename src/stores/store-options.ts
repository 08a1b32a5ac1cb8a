/**
 * The options each bundled store knows, and the refusal of any other. A store option that passed in
 * silence (`tablename` for `tableName`, connect-redis's `ttl`) would leave the store running with a
 * setting its caller believes it has; `openStore`'s `storeOptions` and the CLI's `--store-option` reach
 * the constructors, so they are refused there too. The habits of express-session's stores get a hint
 * saying what latchkey does instead.
 */
import { type OptionHints, refuseUnknownOptions } from '../core/known-options.js'

/** Options of `StoreOptions`, which every store takes. */
const COMMON = ['clock'] as const
/** Options of `SqlStoreOptions`, which every SQL store takes. */
const SQL = [...COMMON, 'tableName', 'pruneIntervalMs', 'onWarning', 'createSchema'] as const

/** Every option of each bundled store's constructor, by the store's name. */
export const STORE_OPTIONS = Object.freeze({
  MemoryStore: [...COMMON, 'maxSessions', 'sweepIntervalMs'],
  FileStore: [
    ...COMMON,
    'directory',
    'pruneIntervalMs',
    'lockStaleMs',
    'onWarning',
    'createDirectory',
    'durability',
  ],
  SqliteStore: [...SQL, 'path', 'busyTimeoutMs', 'synchronous'],
  PostgresStore: [...SQL, 'pool', 'connectionString', 'schema', 'commandTimeoutMs'],
  MySqlStore: [...SQL, 'pool', 'uri', 'poolOptions', 'commandTimeoutMs'],
  RedisStore: [
    ...COMMON,
    'client',
    'url',
    'prefix',
    'commandTimeoutMs',
    'clockSkewMs',
    'createSchema',
    'onError',
    'onWarning',
  ],
} satisfies Record<string, readonly string[]>)

const TIMEOUTS =
  'session lifetimes are set on the manager (idleTimeoutMs and absoluteTimeoutMs of createSessionManager)'
const PRUNING = 'expired records are deleted every pruneIntervalMs (in ms)'

/** Options of connect-pg-simple, connect-redis, connect-sqlite3, express-mysql-session, session-file-store. */
const HINTS: OptionHints = Object.freeze({
  ttl: TIMEOUTS,
  expiration: TIMEOUTS,
  disableTouch: 'when a session is touched is up to the manager (touchIntervalMs of createSessionManager)',
  disableTTL: TIMEOUTS,
  serializer: 'records are sealed by the manager, never serialized by the store',
  conString: 'the URL option is connectionString (PostgresStore), uri (MySqlStore) or url (RedisStore)',
  conObject: 'give a pg pool you own as pool, or a URL as connectionString',
  schemaName: 'the option is schema (PostgresStore)',
  table: 'the option is tableName',
  createTableIfMissing: 'tables are created on first use (createSchema: false turns that off)',
  createDatabaseTable: 'tables are created on first use (createSchema: false turns that off)',
  pruneSessionInterval: PRUNING,
  checkExpirationInterval: PRUNING,
  clearExpired: PRUNING,
  reapInterval: PRUNING,
  db: 'the database is the path (SqliteStore) or part of the URL',
  dir: 'the option is path (SqliteStore) or directory (FileStore)',
  scanCount: 'RedisStore keeps a user index and never scans',
  prefix: 'only RedisStore has a key prefix (SQL stores take tableName, FileStore a directory)',
  path: 'the folder of FileStore is directory; path is the file of SqliteStore',
})

/** Throws a `ConfigError` for the first option of `options` that `store` does not know. */
export function refuseUnknownStoreOptions(store: keyof typeof STORE_OPTIONS, options: object): void {
  refuseUnknownOptions(options, STORE_OPTIONS[store], { owner: store, hints: HINTS })
}

/**
 * `openStore(url)`: any bundled store from one URL, for configuration files and the CLI. Only the
 * driver of the scheme used is imported.
 *
 * | URL | store |
 * | --- | --- |
 * | `memory:` | MemoryStore |
 * | `file:./var/sessions`, `file:///srv/sessions` | FileStore |
 * | `sqlite:./var/sessions.db`, `sqlite:///srv/sessions.db`, `sqlite::memory:` | SqliteStore |
 * | `postgres://…`, `postgresql://…` | PostgresStore |
 * | `mysql://…`, `mariadb://…` | MySqlStore |
 * | `redis://…`, `rediss://…` | RedisStore |
 * | `redis+cluster://host:port,host:port` | RedisStore on a Redis Cluster |
 */
import { statSync } from 'node:fs'
import { isAbsolute } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, SessionError, StoreError } from '../core/errors.js'
import { refuseUnknownOptions } from '../core/known-options.js'
import type { SessionStore, StoreOptions } from '../core/store.js'
import { isClosableStore } from '../core/store.js'
import { asRefusal, isServerRefusal, missingSchema, NO_SCHEMA } from './refusal.js'
import { checkServerUrl } from './server-url.js'

/** Options of {@link openStore}: the clock, and options passed on to the store the URL names. */
export interface OpenStoreOptions extends StoreOptions {
  /**
   * Check that the store answers before resolving (one lookup of a key that does not exist; SQL stores
   * create their schema then). Default `true`; `false` opens lazily, and the first request finds out.
   */
  check?: boolean
  /** Further options for the store's constructor (`tableName`, `prefix`, `pruneIntervalMs`, ...). */
  storeOptions?: Record<string, unknown>
}

/** The schemes {@link openStore} knows, for messages. */
export const STORE_SCHEMES = Object.freeze([
  'memory:',
  'file:',
  'sqlite:',
  'postgres:',
  'postgresql:',
  'mysql:',
  'mariadb:',
  'redis:',
  'rediss:',
  'redis+cluster:',
])

/**
 * `url` with any password replaced by `***`, for messages and logs: every host of a
 * `redis+cluster://` list, and a password holding a raw `/` or `@` too (when unsure, more is masked).
 */
export function maskStoreUrl(url: string): string {
  const start = url.indexOf('://')
  if (start < 0) return url
  const hosts = url
    .slice(start + 3)
    .split(',')
    .map((host) => {
      const end = host.search(/[?#]/)
      const at = host.lastIndexOf('@', end < 0 ? host.length : end)
      const colon = host.indexOf(':')
      return at > 0 && colon >= 0 && colon < at ? `${host.slice(0, colon + 1)}***${host.slice(at)}` : host
    })
  return url.slice(0, start + 3) + hosts.join(',')
}

/** The npm package each scheme's store needs. */
const DRIVERS: Record<string, string> = {
  sqlite: 'better-sqlite3',
  postgres: 'pg',
  postgresql: 'pg',
  mysql: 'mysql2',
  mariadb: 'mysql2',
  redis: 'redis',
  rediss: 'redis',
  'redis+cluster': 'redis',
}

/**
 * Opens the store `url` names. Rejects with `ConfigError` for an unknown scheme, a malformed URL, an
 * option the store does not know or a missing driver package (naming it and the install command).
 * Unless `check: false`, it then looks one key up: a server that refuses (a role, database or password
 * it does not accept) rejects with `ConfigError` carrying the server's reason; a table, database file
 * or folder a store was told not to create (`createSchema: false`, `createDirectory: false`) with the
 * `ERR_LATCHKEY_NO_SCHEMA` error; a store that does not answer with `StoreError`. Every message shows
 * the URL with its password masked.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<SessionStore> {
  if (typeof url !== 'string') throw new ConfigError('store', 'must be a store URL string')
  const masked = maskStoreUrl(url)
  const scheme = /^([a-z][a-z0-9+]*):/i.exec(url)?.[1]?.toLowerCase()
  if (scheme === undefined || !STORE_SCHEMES.includes(`${scheme}:`)) {
    throw new ConfigError('store', `unknown store URL ${masked}: use one of ${STORE_SCHEMES.join(' ')}`)
  }
  refuseUnknownOptions(options, ['check', 'storeOptions', 'clock'], { owner: 'openStore' })
  if (SERVER_SCHEMES.has(scheme)) checkServerUrl(url, scheme, masked)
  const { check = true, storeOptions = {}, ...common } = options
  refuseFixedOptions(scheme, masked, storeOptions, common)
  const base = { ...storeOptions, ...common }
  const store = await built(url, masked, () => build(scheme, url, masked, base))
  if (check) {
    try {
      await store.get('A'.repeat(43))
    } catch (error) {
      if (isClosableStore(store)) await store.close().catch(() => {})
      throw openFailure(error, masked, scheme === 'sqlite' || scheme === 'file' ? url : undefined)
    }
  }
  return store
}

/** What the URL of each scheme sets, by the store option it would otherwise be. */
const SET_BY_URL: Record<string, Readonly<Record<string, string>>> = {
  file: { directory: 'the folder' },
  sqlite: { path: 'the database file' },
  postgres: { connectionString: 'the server and database', pool: 'the connection pool' },
  mysql: { uri: 'the server and database', pool: 'the connection pool' },
  redis: { url: 'the server', client: 'the client' },
  'redis+cluster': { url: 'the cluster', client: 'the cluster client' },
}

/**
 * Refuses a store option that the URL already sets (`path` with a `sqlite:` URL, `connectionString`,
 * `url`...), which would be dropped without a word, and a clock given both to `openStore` and in
 * `storeOptions`.
 */
function refuseFixedOptions(
  scheme: string,
  masked: string,
  storeOptions: unknown,
  common: { clock?: unknown },
): void {
  if (typeof storeOptions !== 'object' || storeOptions === null || Array.isArray(storeOptions)) {
    throw new ConfigError('storeOptions', 'must be an object of options for the store')
  }
  const family = ALIASES[scheme] ?? scheme
  const fixed = SET_BY_URL[family] ?? {}
  for (const name of Object.keys(storeOptions)) {
    const what = fixed[name]
    if (what === undefined) continue
    const advice =
      name === 'pool' || name === 'client'
        ? `the store opens its own with the URL; to use one of yours, build the store itself (new ${STORE_NAMES[family] ?? 'Store'}({ ${name} }))`
        : 'change the URL instead, or drop the option'
    throw new ConfigError(name, `${what} is set by the store URL ${masked}, not by a store option: ${advice}`)
  }
  if ('clock' in storeOptions && common.clock !== undefined) {
    throw new ConfigError('clock', 'given twice, to openStore and in storeOptions: give it once')
  }
}

/** The schemes that name the same store as another. */
const ALIASES: Record<string, string> = { postgresql: 'postgres', mariadb: 'mysql', rediss: 'redis' }

/** The store each scheme (family) opens, for messages. */
const STORE_NAMES: Record<string, string> = {
  postgres: 'PostgresStore',
  mysql: 'MySqlStore',
  redis: 'RedisStore',
  'redis+cluster': 'RedisStore',
}

/**
 * The store `build` makes: an error of a driver refusing its settings while the store is built (mysql2's
 * `?ssl=nonsense`, say) is a `ConfigError` naming the URL, not a raw error.
 */
async function built(url: string, masked: string, build: () => Promise<SessionStore>): Promise<SessionStore> {
  try {
    return await build()
  } catch (error) {
    if (error instanceof SessionError) throw error
    // The driver's message, with any password of the URL it may quote masked.
    let reason = messageOf(error)
    for (const [, password] of url.matchAll(/(?:\/\/|,)[^:/@,\s]*:([^@/,\s]+)@/g))
      if (password) reason = reason.split(password).join('***')
    throw Object.assign(new ConfigError('store', `${masked}: the driver refused its settings: ${reason}`), {
      cause: error,
    })
  }
}

/** The schemes of stores on a server, whose URLs {@link checkServerUrl} checks. */
const SERVER_SCHEMES = new Set(['postgres', 'postgresql', 'mysql', 'mariadb', 'redis', 'rediss'])

/**
 * Why the first lookup failed, naming the URL: a server that refused (a `ConfigError` with its
 * reason), a table, file or folder that is not there (`ERR_LATCHKEY_NO_SCHEMA`), a path of a local
 * store (`local`, its URL) that is wrong (a `ConfigError`: not a database, a folder, no permission),
 * or else a `StoreError`, "does not answer".
 */
function openFailure(error: unknown, masked: string, local?: string): Error {
  // A store's operations reject with the refusal of a server as a ConfigError already.
  if (error instanceof ConfigError) {
    return Object.assign(new ConfigError(error.option, `${masked}: ${messageOf(error)}`), { cause: error })
  }
  const cause = error instanceof StoreError ? error.cause : error
  if (isServerRefusal(cause)) {
    const refusal = asRefusal(error instanceof StoreError ? error.store : 'store', cause) as ConfigError
    return Object.assign(new ConfigError('store', `${masked}: ${messageOf(refusal)}`), { cause: error })
  }
  if (cause instanceof ConfigError) {
    return Object.assign(new ConfigError(cause.option, `${masked}: ${messageOf(cause)}`), { cause })
  }
  if ((cause as { code?: unknown })?.code === NO_SCHEMA) {
    return missingSchema(`${masked}: ${messageOf(cause)}`, cause)
  }
  const problem = local === undefined ? undefined : pathProblem(cause, local, masked)
  if (problem !== undefined) {
    return Object.assign(new ConfigError('store', `${masked}: ${problem}`), { cause: error })
  }
  const name = error instanceof StoreError ? error.store : 'store'
  return new StoreError(
    name,
    'open',
    new Error(`${masked} does not answer: ${messageOf(cause)}`, { cause: error }),
  )
}

/** What a local store's path error means, by its code (SQLite's, or node's). */
const PATH_PROBLEMS: Readonly<Record<string, string>> = {
  SQLITE_NOTADB: 'the file is not a SQLite database: check the path',
  SQLITE_CANTOPEN:
    'the database file cannot be opened: check that the path names a file in a folder that exists',
  ENOTDIR: 'a part of the path is a file, not a folder: check the path',
  EISDIR: 'the path is a folder, not a file: check the path',
  ENOENT: 'a folder of the path does not exist: create it, or check the path',
  EACCES: 'permission denied: check the owner and mode of the path',
  EPERM: 'permission denied: check the owner and mode of the path',
  EROFS: 'the path is on a read-only file system',
}

/**
 * The problem with the path of a local store (`url`, `file:` or `sqlite:`) that `error` shows: a file
 * that is not a database, a folder where a file should be, a folder missing or not allowed. `undefined`
 * for anything else (a busy database, too many open files), which stays "does not answer".
 */
function pathProblem(error: unknown, url: string, masked: string): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code
    const problem = typeof code === 'string' ? PATH_PROBLEMS[code] : undefined
    if (problem === undefined) continue
    if (url.startsWith('sqlite:') && (code === 'SQLITE_CANTOPEN' || code === 'EISDIR')) {
      const path = pathOf(url, 'sqlite', masked)
      if (isDirectory(path)) {
        return `${path} is a folder, not a database file: name a file in it (sqlite:${path}/sessions.db)`
      }
    }
    if (url.startsWith('file:') && code === 'ENOTDIR') {
      const path = pathOf(url, 'file', masked)
      if (isFile(path)) return `${path} is a file, not a folder: FileStore keeps its sessions in a folder`
    }
    return `${problem} (${e.message})`
  }
  return undefined
}

/** Whether `path` is a folder (false when it is not there or cannot be read). */
function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

/** Whether `path` is a file, not a folder (false when it is not there or cannot be read). */
function isFile(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** An error's message, without the `option: ` that a `ConfigError` starts with. */
function messageOf(error: unknown): string {
  if (error instanceof ConfigError) return error.message.slice(error.option.length + 2)
  return error instanceof Error ? error.message : String(error)
}

/** Imports a store module, turning a missing driver into a `ConfigError` that says what to install. */
async function load<M>(scheme: string, masked: string, importer: () => Promise<M>): Promise<M> {
  try {
    return await importer()
  } catch (error) {
    const driver = DRIVERS[scheme]
    if (driver && isModuleNotFound(error)) {
      throw new ConfigError('store', `${masked} needs the ${driver} package: npm install ${driver}`)
    }
    throw error
  }
}

/** A module that could not be found, as node reports it (also when wrapped as another error's cause). */
function isModuleNotFound(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return true
  }
  return false
}

/** A path from a `file:` or `sqlite:` URL: `file:///abs`, `file:./rel`, `file:rel`. */
function pathOf(url: string, scheme: string, masked: string): string {
  const rest = url.slice(scheme.length + 1)
  if (rest.startsWith('//')) {
    const path = fileURLToPath(`file:${rest}`)
    if (!isAbsolute(path)) throw new ConfigError('store', `${masked}: expected an absolute path after //`)
    return path
  }
  if (rest === '') throw new ConfigError('store', `${masked}: a path is missing`)
  return decodeURIComponent(rest)
}

async function build(
  scheme: string,
  url: string,
  masked: string,
  options: Record<string, unknown>,
): Promise<SessionStore> {
  switch (scheme) {
    case 'memory': {
      const { MemoryStore } = await import('./memory/index.js')
      return new MemoryStore(options)
    }
    case 'file': {
      const { FileStore } = await import('./file/index.js')
      return new FileStore({ ...options, directory: pathOf(url, scheme, masked) })
    }
    case 'sqlite': {
      const path = url.slice('sqlite:'.length) === ':memory:' ? ':memory:' : pathOf(url, scheme, masked)
      const { SqliteStore } = await load(scheme, masked, () => import('./sqlite/index.js'))
      return new SqliteStore({ ...options, path })
    }
    case 'postgres':
    case 'postgresql': {
      const { PostgresStore } = await load(scheme, masked, () => import('./postgres/index.js'))
      return new PostgresStore({ ...options, connectionString: url })
    }
    case 'mysql':
    case 'mariadb': {
      const { MySqlStore } = await load(scheme, masked, () => import('./mysql/index.js'))
      return new MySqlStore({ ...options, uri: url })
    }
    case 'redis':
    case 'rediss': {
      const { RedisStore } = await load(scheme, masked, () => import('./redis/index.js'))
      return new RedisStore({ ...options, url })
    }
    default:
      return openCluster(url, masked, options)
  }
}

/** `redis+cluster://host:port,host:port`: a cluster client the returned store owns and closes. */
async function openCluster(
  url: string,
  masked: string,
  options: Record<string, unknown>,
): Promise<SessionStore> {
  const nodes = url.slice('redis+cluster://'.length).split(',')
  if (nodes.length === 0 || nodes.some((node) => !/^[^\s/,]+:\d+$/.test(node.replace(/^[^@]*@/, '')))) {
    throw new ConfigError('store', `${masked}: expected redis+cluster://host:port,host:port`)
  }
  const [{ createCluster }, { RedisStore }] = await load('redis+cluster', masked, () =>
    Promise.all([import('redis'), import('./redis/index.js')]),
  )
  const cluster = createCluster({ rootNodes: nodes.map((node) => ({ url: `redis://${node}` })) })
  cluster.on('error', () => {
    // Reported to requests as StoreErrors; node-redis insists on a listener.
  })
  try {
    await cluster.connect()
  } catch (error) {
    throw new StoreError('RedisStore', 'open', new Error(`${masked} does not answer`, { cause: error }))
  }
  const store = new RedisStore({ ...options, client: cluster })
  const close = store.close.bind(store)
  store.close = async () => {
    await close()
    await cluster.close()
  }
  return store
}

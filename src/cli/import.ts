/**
 * `latchkey import-express-sessions --from-module PATH --store URL`: copies the sessions of an
 * express-session store (connect-redis, express-mysql-session, express-session's MemoryStore...) into
 * a latchkey store, as `latchkey/express-session` with `moveFrom` moves them when they are used: the
 * same session ID (the cookies stay valid), sealed with the keys, under the ID's hash, in the user index.
 *
 * The old store is the one the application builds: the module at PATH exports the instance (as its
 * default export or as `store`), and may export `userOf` (as the middleware's option) and `all` (for a
 * store package without `all()` or `ids()`; connect-pg-simple's table is read without one) and `close`
 * (called at the end).
 *
 * Each copy is a `create`: a session already in the latchkey store (moved by a request, or by an
 * earlier run) is never overwritten, so the command can run while the application serves requests,
 * and again. Sessions whose cookie has expired are skipped. Nothing is deleted from the old store
 * unless `--delete-source` is given (then each copied, already present or expired session is).
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Keyring } from '../core/crypto.js'
import { storeKeyOf } from '../core/id.js'
import { resolveKeys } from '../core/options.js'
import { expiresAt, type SessionStore } from '../core/store.js'
import {
  defaultUserOf,
  isLatchkeyStore,
  oldDestroy,
  oldGet,
  Sealer,
  type UserOf,
} from '../express-session/latchkey-store.js'
import type { SessionData, Store } from '../express-session/store.js'
import {
  CliError,
  EXIT,
  interrupted,
  type Output,
  readKeys,
  type StoreCommandOptions,
  withStore,
} from './context.js'
import { progress } from './progress.js'

/** Options of `import-express-sessions`. */
export type ImportOptions = StoreCommandOptions & {
  fromModule: string
  deleteSource?: boolean
  concurrency?: number
}

/** What became of the sessions the old store listed. */
export interface ImportReport {
  /** Created in the latchkey store by this run. */
  copied: number
  /** Already in the latchkey store (moved by a request, or an earlier run), or ended there: left alone. */
  alreadyThere: number
  /** Their cookie had expired: not copied. */
  expired: number
  /** Could not be copied (the message says why): left in the old store. */
  failed: number
  /** Deleted from the old store (`--delete-source` only). */
  deleted: number
}

/** What the module at `--from-module` gives. */
interface Source {
  readonly store: Store
  readonly userOf: UserOf
  readonly all: (() => Promise<unknown>) | undefined
  readonly close: (() => unknown) | undefined
}

/** `latchkey import-express-sessions` */
export async function importExpressSessions(options: ImportOptions, out: Output): Promise<number> {
  const keys = readKeys(options, out)
  const source = await loadSource(options.fromModule)
  try {
    const sessions = await enumerate(source, options.fromModule)
    return await withStore(options, 'existing', (target) =>
      copyAll(target, sessions, source, keys, options, out),
    )
  } finally {
    await source.close?.()
  }
}

async function copyAll(
  target: SessionStore,
  sessions: ReadonlyArray<readonly [string, unknown]>,
  source: Source,
  keys: string[],
  options: ImportOptions,
  out: Output,
): Promise<number> {
  const sealer = new Sealer(new Keyring(resolveKeys(keys, {})), { userOf: source.userOf })
  const report: ImportReport = { copied: 0, alreadyThere: 0, expired: 0, failed: 0, deleted: 0 }
  const failures: string[] = []
  const bar = progress(out, 'importing', sessions.length, options.progress !== false)
  const deleteSource = options.deleteSource === true

  const copyOne = async (sid: string, data: unknown): Promise<void> => {
    if (typeof data !== 'object' || data === null || typeof (data as SessionData).cookie !== 'object') {
      throw new Error('not an express-session record (it has no cookie field)')
    }
    const now = Date.now()
    const record = sealer.newRecord(storeKeyOf(sid), data as SessionData, now)
    let outcome: 'copied' | 'alreadyThere' | 'expired'
    if (expiresAt(record) <= now) outcome = 'expired'
    else outcome = (await target.create(record)) ? 'copied' : 'alreadyThere'
    report[outcome]++
    if (deleteSource) {
      await oldDestroy(source.store, sid)
      report.deleted++
    }
  }

  let next = 0
  const worker = async (): Promise<void> => {
    while (next < sessions.length && !out.io.signal.aborted) {
      const [sid, data] = sessions[next++] as readonly [string, unknown]
      try {
        await copyOne(sid, data)
      } catch (error) {
        report.failed++
        if (failures.length < 3) failures.push(error instanceof Error ? error.message : String(error))
      }
      bar.increment()
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 8) }, worker))
  } finally {
    bar.stop()
  }

  const summary =
    `copied ${report.copied}, already there ${report.alreadyThere}, skipped expired ${report.expired}, failed ${report.failed}` +
    (deleteSource ? `, deleted from the old store ${report.deleted}` : '')
  if (out.io.signal.aborted) {
    throw interrupted(`(${summary})`, report)
  }
  if (report.failed > 0) {
    throw Object.assign(
      new CliError(
        EXIT.partial,
        'ERR_LATCHKEY_PARTIAL',
        `${summary}; the failed sessions stay in the old store (${failures.join('; ')}): run the command again`,
      ),
      { partial: report },
    )
  }
  out.result({ ...report }, summary)
  return EXIT.ok
}

function usage(message: string): CliError {
  return new CliError(EXIT.usage, 'ERR_LATCHKEY_USAGE', message)
}

/** True for an express-session store instance: `get`, `set` and `destroy`. */
function isOldStyleStore(value: unknown): value is Store {
  if (typeof value !== 'object' || value === null) return false
  const methods = value as Record<string, unknown>
  return ['get', 'set', 'destroy'].every((name) => typeof methods[name] === 'function')
}

/** Imports `--from-module` and finds the store (default export, or `store`), `userOf`, `all` and `close`. */
async function loadSource(path: string): Promise<Source> {
  let module: Record<string, unknown>
  try {
    module = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>
  } catch (error) {
    throw usage(
      `cannot load --from-module ${path}: ${error instanceof Error ? error.message : String(error)}`,
    )
  }
  const fallback = module.default
  // A default export that is an object of exports (`module.exports = { store, userOf }`), not the store itself.
  const bag =
    typeof fallback === 'object' &&
    fallback !== null &&
    !isOldStyleStore(fallback) &&
    !isLatchkeyStore(fallback)
      ? (fallback as Record<string, unknown>)
      : undefined
  const named = (name: string): unknown => module[name] ?? bag?.[name]
  const candidates = [module.store, fallback, named('store')]
  const latchkey = candidates.find(isLatchkeyStore)
  if (latchkey !== undefined) {
    throw usage(
      `--from-module ${path} exports a latchkey store: it takes the express-session store the sessions come from (connect-redis, express-mysql-session...); the latchkey store is --store`,
    )
  }
  const store = candidates.find(isOldStyleStore)
  if (store === undefined) {
    throw usage(
      `--from-module ${path} exports no express-session store: export the instance the application uses (with get, set and destroy) as the default export or as \`store\``,
    )
  }
  const userOf = named('userOf')
  const all = named('all')
  const close = named('close')
  for (const [name, value] of [
    ['userOf', userOf],
    ['all', all],
    ['close', close],
  ] as const) {
    if (value !== undefined && typeof value !== 'function') {
      throw usage(`--from-module ${path}: its \`${name}\` export must be a function`)
    }
  }
  return {
    store,
    userOf: (userOf as UserOf | undefined) ?? defaultUserOf,
    all: all as Source['all'],
    close: close as Source['close'],
  }
}

/** Calls `method` of `self` with a callback; settles with the callback's answer, or the promise it returns. */
function call(self: object, method: (...args: unknown[]) => unknown, ...args: unknown[]): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    let settled = false
    const callback = (error: unknown, value?: unknown): void => {
      if (settled) return
      settled = true
      if (error) reject(error)
      else resolvePromise(value)
    }
    try {
      const returned = method.call(self, ...args, callback) as { then?: unknown } | undefined
      if (typeof returned?.then === 'function') {
        ;(returned as Promise<unknown>).then((value) => {
          // A store that answers both ways resolves its promise with the callback's return: wait for the callback.
          if (value !== undefined) callback(null, value)
        }, callback)
      }
    } catch (error) {
      callback(error)
    }
  })
}

/** Every session of the old store, as [ID, data] pairs: from `all` (the module's or the store's), else `ids` and `get`. */
async function enumerate(source: Source, path: string): Promise<Array<readonly [string, unknown]>> {
  const store = source.store as Store & { all?: unknown; ids?: unknown }
  let listed: unknown
  if (source.all !== undefined) listed = await source.all()
  else if (typeof store.all === 'function')
    listed = await call(store, store.all as (...a: unknown[]) => unknown)
  else if (typeof store.ids === 'function') {
    const ids = await call(store, store.ids as (...a: unknown[]) => unknown)
    if (!Array.isArray(ids)) throw usage(`${nameOf(store)}.ids() did not give an array of session IDs`)
    const pairs: Array<readonly [string, unknown]> = []
    for (const sid of ids) {
      const data = await oldGet(store, String(sid))
      if (data !== null) pairs.push([String(sid), data])
    }
    return pairs
  } else if (isPgSimple(store)) {
    return pgSimpleSessions(store)
  } else {
    throw new CliError(
      EXIT.unsupported,
      'ERR_LATCHKEY_UNSUPPORTED',
      `${nameOf(store)} cannot list its sessions (it has no all() and no ids()): export an \`all\` function from ${path} that resolves { [sessionId]: session }, or leave the sessions to move as they are used`,
    )
  }
  if (Array.isArray(listed)) {
    // connect-redis: an array of sessions, each with its ID added as `id` (not session data).
    return listed.map((item: unknown) => {
      const { id, ...data } = (item ?? {}) as Record<string, unknown>
      if (typeof id !== 'string') {
        throw usage(
          `${nameOf(store)}.all() gave a session without its ID: export an \`all\` from ${path} that resolves { [sessionId]: session }`,
        )
      }
      return [id, data] as const
    })
  }
  if (typeof listed === 'object' && listed !== null) return Object.entries(listed)
  throw usage(
    `${nameOf(store)}.all() gave ${listed === null ? 'null' : typeof listed}, not the sessions by ID`,
  )
}

/** connect-pg-simple's PGStore: no all() and no ids(), but its own query() on its own table. */
interface PgSimpleStore {
  quotedTable(): string
  query(sql: string, params: unknown[], callback: (error: unknown, row?: unknown) => void): void
}

function isPgSimple(store: object): store is PgSimpleStore {
  const candidate = store as Partial<Record<keyof PgSimpleStore, unknown>>
  return typeof candidate.quotedTable === 'function' && typeof candidate.query === 'function'
}

/** Rows per page when listing connect-pg-simple's table. */
const PG_SIMPLE_PAGE = 500

/**
 * The unexpired sessions of a connect-pg-simple table, read through the store's own query() (its pool,
 * its schema and table name), one page at a time in `sid` order. Its query() resolves the first row of a
 * result only, so each page is folded into one row by `json_object_agg`.
 */
async function pgSimpleSessions(store: PgSimpleStore): Promise<Array<readonly [string, unknown]>> {
  const sql = `SELECT json_object_agg(sid, sess) AS page, max(sid) AS last FROM (SELECT sid, sess FROM ${store.quotedTable()} WHERE expire >= to_timestamp($1) AND sid > $2 ORDER BY sid LIMIT ${PG_SIMPLE_PAGE}) AS listed`
  const now = Date.now() / 1000
  const pairs: Array<readonly [string, unknown]> = []
  for (let after = ''; ; ) {
    const row = (await call(store, store.query as (...a: unknown[]) => unknown, sql, [now, after])) as
      | { page: Record<string, unknown> | null; last: string | null }
      | undefined
    if (!row || row.page === null || row.last === null) return pairs
    for (const [sid, data] of Object.entries(row.page)) pairs.push([sid, data])
    after = row.last
  }
}

function nameOf(store: object): string {
  return store.constructor?.name || 'the store'
}

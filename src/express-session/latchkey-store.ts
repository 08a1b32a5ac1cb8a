/**
 * latchkey/express-session on a latchkey store (`store: new SqliteStore(...)`, any store of
 * latchkey/stores, with `keys`): the middleware keeps express-session's API, and the store gets what
 * latchkey's own sessions get.
 *
 * - **Sealed**: a record's payload is the session (its data and its cookie's fields) sealed with the
 *   keyring (AES-256-GCM, the store key as associated data), in the core's payload format, so a
 *   `SessionManager` on the same store and keys lists and revokes these sessions, and `latchkey list`,
 *   `revoke` and `rekey` work on them.
 * - **Hashed IDs**: the record's key is the SHA-256 of the session ID; the ID is nowhere in the store.
 * - **Compare-and-set**: the save of a session loaded from the store re-reads the record, merges this
 *   request's changes into it (merge.ts) and writes it with `update(record, version)`; when another
 *   write landed in between, it reads and merges again. No write lands blindly.
 * - **The user index**: each write sets the record's `userId` from `userOf(session)` (default
 *   {@link defaultUserOf}), so "your devices" and "sign out everywhere" find the session.
 * - **Deadlines**: the idle deadline is the cookie's `expires` (a browser-session cookie: a day after
 *   the last request, {@link BROWSER_SESSION_IDLE_MS}); the absolute one is the start of the session
 *   plus `absoluteTimeoutMs` when that is set, else {@link NO_ABSOLUTE_MS} after the record was made.
 *
 * With `moveFrom: oldStore`, sessions move over as they are used: a cookie whose session is not in the
 * latchkey store is looked up in the old one and, if there, created in the latchkey store under the
 * same ID (insert-only: of two requests moving one session at once, one creates it and the other reads
 * what it created), then destroyed in the old store, only after the create succeeded. A session ended
 * in the latchkey store (a tombstone) is never brought back from the old one: its old copy is destroyed.
 */
import { Keyring, randomToken } from '../core/crypto.js'
import { ConfigError, SessionError, StoreError } from '../core/errors.js'
import { storeKeyOf } from '../core/id.js'
import { kindOf } from '../core/lifecycle/record-state.js'
import { type Environment, resolveKeys } from '../core/options.js'
import { PayloadCodec } from '../core/payload.js'
import { MAX_USER_ID_LENGTH, type SessionMeta } from '../core/session.js'
import { expiresAt, isCountableStore, type SessionRecord, type SessionStore } from '../core/store.js'
import { changedKeys, mergeChanged, type Snapshot } from './merge.js'
import type { Callback, Session } from './session.js'
import { type GetCallback, type SessionData, Store, type StoreLike } from './store.js'

/** The options the drop-in adds for a latchkey store (each refused without one). */
export interface LatchkeyStoreOptions {
  /**
   * With a latchkey `store`: the master keys that seal the sessions, newest first (the first seals,
   * every one opens), as `createSessionManager` takes them. Default: `LATCHKEY_KEYS`, comma-separated.
   */
  keys?: readonly string[]
  /**
   * With a latchkey `store`: the old-style store (connect-redis, connect-pg-simple...) sessions move
   * from as they are used. Sessions not used are copied by `latchkey import-express-sessions`.
   */
  moveFrom?: Store | StoreLike
  /**
   * With a latchkey `store`: the signed-in user of a session's data (a string or a number), or
   * `null`/`undefined` for nobody; it fills the store's user index. Default {@link defaultUserOf}.
   */
  userOf?: UserOf
}

/** Finds the signed-in user in a session's data. */
export type UserOf = (session: Readonly<Record<string, unknown>>) => string | number | null | undefined

/** A browser-session cookie's record (no `expires`) lives this long after its last request: a day, as connect-redis and connect-pg-simple keep one. */
export const BROWSER_SESSION_IDLE_MS = 24 * 3_600_000

/** The absolute deadline of a record without `absoluteTimeoutMs`: a hundred years, i.e. none. */
export const NO_ABSOLUTE_MS = 100 * 365 * 24 * 3_600_000

/** Attempts of a compare-and-set write before it gives up (each lost to another write that landed). */
const MAX_ATTEMPTS = 16

/** Every option of the drop-in: anything else is refused as a typo (express-session would ignore it). */
export const DROP_IN_OPTIONS = Object.freeze([
  'secret',
  'name',
  'key',
  'cookie',
  'genid',
  'rolling',
  'resave',
  'saveUninitialized',
  'unset',
  'proxy',
  'store',
  'absoluteTimeoutMs',
  'keys',
  'moveFrom',
  'userOf',
])

/**
 * The signed-in user, as the common express-session apps keep it: Passport's `passport.user`, else
 * `userId`, else `user` (a string or a number), else `user.id`. Anything else is nobody (`null`).
 */
export function defaultUserOf(session: Readonly<Record<string, unknown>>): string | number | null {
  const passport = session.passport as { user?: unknown } | null | undefined
  const user = session.user as { id?: unknown } | null | undefined
  const candidates = [
    typeof passport === 'object' && passport !== null ? passport.user : undefined,
    session.userId,
    user,
    typeof user === 'object' && user !== null ? user.id : undefined,
  ]
  for (const candidate of candidates) {
    if (typeof candidate === 'string' || typeof candidate === 'number') return candidate
  }
  return null
}

/** True for a store of latchkey's contract (promise methods, `create` and `update`), not an express-session one. */
export function isLatchkeyStore(store: unknown): store is SessionStore {
  if (typeof store !== 'object' || store === null) return false
  const methods = store as Record<string, unknown>
  return (
    ['get', 'create', 'update', 'touch', 'destroy'].every((name) => typeof methods[name] === 'function') &&
    typeof methods.set !== 'function'
  )
}

/** True for an express-session store: `get`, `set` and `destroy`. */
function isOldStyleStore(store: unknown): store is Store {
  if (typeof store !== 'object' || store === null) return false
  const methods = store as Record<string, unknown>
  return ['get', 'set', 'destroy'].every((name) => typeof methods[name] === 'function')
}

/** What the middleware passes on besides the options. */
export interface StoreContext {
  readonly absoluteTimeoutMs: number | undefined
  /** The record key holding when the session began (`STARTED_AT`). */
  readonly startedAtKey: string
  readonly env?: Environment
}

/**
 * The store the middleware works with: a {@link SealedStore} over a latchkey `store`, else the
 * old-style store given (or `fallback()`). Refuses, with a `ConfigError` naming the fix, the options
 * of a latchkey store without one, and anything incoherent with one.
 */
export function storeFor(
  options: Record<string, unknown>,
  context: StoreContext,
  fallback: () => Store,
): Store {
  const { store, keys, moveFrom, userOf } = options as LatchkeyStoreOptions & { store?: unknown }
  if (!isLatchkeyStore(store)) {
    const latchkeyOnly = `pass \`store\` a store of latchkey/stores (SqliteStore, PostgresStore, RedisStore...) and \`keys\``
    if (keys !== undefined) {
      throw new ConfigError('keys', `seals sessions in a latchkey store: ${latchkeyOnly}, or remove keys`)
    }
    if (moveFrom !== undefined) {
      throw new ConfigError(
        'moveFrom',
        `moves sessions into a latchkey store: ${latchkeyOnly}; the old store goes in moveFrom`,
      )
    }
    if (userOf !== undefined) {
      throw new ConfigError(
        'userOf',
        `fills the user index of a latchkey store: ${latchkeyOnly}, or remove userOf`,
      )
    }
    if (store !== undefined && store !== null && !isOldStyleStore(store)) {
      throw new ConfigError(
        'store',
        'must be an express-session store (get, set, destroy) or a store of latchkey/stores (get, create, update, touch, destroy)',
      )
    }
    return (store as Store | null | undefined) ?? fallback()
  }
  if (keys !== undefined && !Array.isArray(keys)) {
    throw new ConfigError(
      'keys',
      'must be an array of keys, newest first (e.g. process.env.LATCHKEY_KEYS.split(","))',
    )
  }
  if (moveFrom !== undefined) {
    if (isLatchkeyStore(moveFrom)) {
      throw new ConfigError(
        'moveFrom',
        'is a latchkey store: moveFrom takes the express-session store the sessions come from (connect-redis, connect-pg-simple...)',
      )
    }
    if (!isOldStyleStore(moveFrom)) {
      throw new ConfigError('moveFrom', 'must be an express-session store (get, set, destroy)')
    }
  }
  if (userOf !== undefined && typeof userOf !== 'function') {
    throw new ConfigError(
      'userOf',
      'must be a function of the session data that returns the user ID, or null',
    )
  }
  const keyring = new Keyring(resolveKeys(keys, context.env ?? process.env))
  return new SealedStore(
    store,
    new Sealer(keyring, { ...context, userOf: userOf ?? defaultUserOf }),
    moveFrom,
  )
}

/** Settings of a {@link Sealer}. */
export interface SealerSettings {
  readonly absoluteTimeoutMs?: number | undefined
  readonly startedAtKey?: string
  readonly userOf: UserOf
}

/**
 * Records of express-session sessions for a latchkey store, and back: the one place that builds them,
 * for the middleware and for `latchkey import-express-sessions`.
 */
export class Sealer {
  private readonly codec: PayloadCodec

  constructor(
    keyring: Keyring,
    private readonly settings: SealerSettings,
  ) {
    this.codec = new PayloadCodec(keyring)
  }

  /** A first record (version 1) for session `data` under `key`. */
  newRecord(
    key: string,
    data: Readonly<Record<string, unknown>>,
    now: number,
    userAgent?: string,
  ): SessionRecord {
    const meta: SessionMeta = { csrf: '', iat: now, lid: randomToken(16) }
    if (userAgent !== undefined) meta.ua = userAgent
    return this.record(key, 1, now, data, meta, now)
  }

  /** The record that follows `record`, holding `data`, its metadata kept. */
  nextRecord(
    record: SessionRecord,
    meta: SessionMeta,
    data: Readonly<Record<string, unknown>>,
    now: number,
    userAgent?: string,
  ): SessionRecord {
    const next = meta.ua === undefined && userAgent !== undefined ? { ...meta, ua: userAgent } : meta
    return this.record(record.key, record.version + 1, record.createdAt, data, next, now)
  }

  /** The session in a live record, and its metadata; `null` for an ended record or one no key opens. */
  open(record: SessionRecord): { data: Record<string, unknown>; meta: SessionMeta } | null {
    const opened = this.codec.open(record)
    if (opened === null || kindOf(opened) !== 'live') return null
    return { data: Object.fromEntries(opened.data), meta: opened.meta }
  }

  /** The idle deadline of a session with `cookie`: its `expires`, else a day from `now`. */
  idleDeadline(cookie: unknown, now: number): number {
    const expires = (cookie as { expires?: unknown } | null | undefined)?.expires
    const ms =
      expires instanceof Date
        ? expires.getTime()
        : typeof expires === 'string'
          ? Date.parse(expires)
          : Number.NaN
    return Number.isFinite(ms) ? ms : now + BROWSER_SESSION_IDLE_MS
  }

  /** The user index entry of `data`, checked. */
  userIdOf(data: Readonly<Record<string, unknown>>): string | null {
    const value = this.settings.userOf(data)
    if (value === null || value === undefined) return null
    const id = typeof value === 'number' && Number.isFinite(value) ? String(value) : value
    if (typeof id !== 'string' || id === '' || id.length > MAX_USER_ID_LENGTH) {
      throw new ConfigError(
        'userOf',
        `must give a user ID (a non-empty string of at most ${MAX_USER_ID_LENGTH} characters, or a number) or null, got ${describe(value)}: pass a userOf that returns the ID`,
      )
    }
    return id
  }

  private record(
    key: string,
    version: number,
    createdAt: number,
    data: Readonly<Record<string, unknown>>,
    meta: SessionMeta,
    now: number,
  ): SessionRecord {
    const userId = this.userIdOf(data)
    const { absoluteTimeoutMs, startedAtKey } = this.settings
    const started = startedAtKey === undefined ? undefined : data[startedAtKey]
    const absoluteExpiresAt =
      absoluteTimeoutMs !== undefined && typeof started === 'number' && Number.isFinite(started)
        ? started + absoluteTimeoutMs
        : createdAt + NO_ABSOLUTE_MS
    return {
      key,
      version,
      userId,
      createdAt,
      lastSeenAt: now,
      idleExpiresAt: this.idleDeadline(data.cookie, now),
      absoluteExpiresAt,
      payload: this.codec.seal(null, new Map(Object.entries(data)), meta, key),
    }
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `a string of ${value.length} characters`
  return value === null ? 'null' : typeof value
}

/** Calls `callback` with what `work` resolves, outside the promise chain (so a throwing callback is not a rejection). */
function settle<T>(work: Promise<T>, callback: ((error: unknown, value?: T) => void) | undefined): void {
  work.then(
    (value) => {
      if (callback) process.nextTick(callback, null, value)
    },
    (failure: unknown) => {
      const error = answered(failure)
      if (callback) process.nextTick(callback, error)
      else
        process.nextTick(() => {
          throw error
        })
    },
  )
}

/**
 * A latchkey store that failed (`StoreError`: down, timed out, closed) answers 503, as latchkey's own
 * front doors do, instead of Express's default 500.
 */
function answered(error: unknown): unknown {
  if (error instanceof StoreError && (error as { status?: unknown }).status === undefined) {
    Object.assign(error, { status: 503, statusCode: 503, expose: false })
  }
  return error
}

/** `store.get(sid)` of an old-style store, as a promise; session-file-store's ENOENT is no session. */
export function oldGet(store: Store, sid: string): Promise<SessionData | null> {
  return new Promise((resolve, reject) => {
    store.get(sid, (error, session) => {
      if (error && !isMissing(error)) reject(error)
      else resolve(error ? null : (session ?? null))
    })
  })
}

/** `store.destroy(sid)` of an old-style store, as a promise; a session already gone is fine. */
export function oldDestroy(store: Store, sid: string): Promise<void> {
  return new Promise((resolve, reject) => {
    store.destroy(sid, (error) => {
      if (error && !isMissing(error)) reject(error)
      else resolve()
    })
  })
}

function isMissing(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'ENOENT'
}

function userAgentOf(session: Session | SessionData): string | undefined {
  const req = (session as { req?: { headers?: Record<string, unknown> } }).req
  const agent = req?.headers?.['user-agent']
  return typeof agent === 'string' ? agent : undefined
}

function conflict(): SessionError {
  return new SessionError(
    'ERR_LATCHKEY_CONFLICT',
    `the session kept changing under this save (${MAX_ATTEMPTS} compare-and-set attempts lost to other writes): try the request again`,
  )
}

/**
 * An express-session store (callbacks, session IDs) over a latchkey store (promises, hashed keys,
 * sealed payloads, compare-and-set), moving sessions from `moveFrom` as they are used.
 */
export class SealedStore extends Store {
  constructor(
    /** The latchkey store the sessions live in. */
    readonly target: SessionStore,
    private readonly sealer: Sealer,
    /** The old-style store sessions move from, if any. */
    readonly moveFrom: Store | undefined,
  ) {
    super()
  }

  override get(sid: string, callback: GetCallback): void {
    settle(this.read(sid), callback)
  }

  /** Writes `session` whole (a new session, or `store.set` called by the app): created, or replaced by compare-and-set. */
  override set(sid: string, session: SessionData | Session, callback?: Callback): void {
    settle(this.write(sid, session), callback)
  }

  override destroy(sid: string, callback?: Callback): void {
    settle(this.end(sid), callback)
  }

  /** Moves the idle deadline to the cookie's expiry; never the data. */
  override touch(sid: string, session: SessionData | Session, callback?: Callback): void {
    const now = Date.now()
    settle(this.target.touch(storeKeyOf(sid), now, this.sealer.idleDeadline(session.cookie, now)), callback)
  }

  /** The number of live sessions, when the latchkey store can count. */
  length(callback: (error: unknown, length?: number) => void): void {
    const store = this.target
    if (!isCountableStore(store)) {
      process.nextTick(callback, new Error(`${store.constructor.name} cannot count its sessions`))
      return
    }
    settle(store.count(), callback)
  }

  /**
   * Saves a session loaded from the store: reads the record, merges this request's changes since
   * `loaded` into it, writes it by compare-and-set, and on a lost race reads and merges again.
   * Calls back `false` when the record was ended (or expired) meanwhile: nothing is written back.
   */
  saveMerged(
    session: Session,
    loaded: Snapshot,
    callback: (error: unknown, written?: boolean) => void,
  ): void {
    settle(this.merge(session, loaded), callback)
  }

  private async read(sid: string): Promise<SessionData | null> {
    if (typeof sid !== 'string') return null
    const key = storeKeyOf(sid)
    const record = await this.target.get(key)
    if (record !== null) return this.dataOf(record)
    return this.moveFrom === undefined ? null : this.moveIn(sid, key, this.moveFrom)
  }

  private dataOf(record: SessionRecord): SessionData | null {
    return (this.sealer.open(record)?.data as SessionData | undefined) ?? null
  }

  /** The session `sid` from the old store, created in the latchkey store, then destroyed in the old one. */
  private async moveIn(sid: string, key: string, from: Store): Promise<SessionData | null> {
    const old = await oldGet(from, sid)
    if (old === null || typeof old !== 'object') return null
    // Not written by express-session (no cookie): not moved; the middleware refuses it as before.
    if (typeof old.cookie !== 'object' || old.cookie === null) return old
    const now = Date.now()
    const record = this.sealer.newRecord(key, old, now)
    if (expiresAt(record) <= now) return null
    if (await this.target.create(record)) {
      // The latchkey store has it: the old copy goes. If that fails the copy stays, never read again
      // while the record lives; `latchkey import-express-sessions --delete-source` removes it.
      await oldDestroy(from, sid).catch(() => {})
      return old
    }
    // Another request moved it first: use what it wrote.
    const moved = await this.target.get(key)
    if (moved !== null) return this.dataOf(moved)
    // Ended in the latchkey store (a tombstone): its old copy must never bring it back.
    await oldDestroy(from, sid)
    return null
  }

  private async write(sid: string, session: SessionData | Session): Promise<void> {
    const key = storeKeyOf(sid)
    const agent = userAgentOf(session)
    let record = await this.target.get(key)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const now = Date.now()
      if (record === null) {
        if (await this.target.create(this.sealer.newRecord(key, session, now, agent))) return
        record = await this.target.get(key)
        // A tombstone holds the key: an ended session is not written back.
        if (record === null) return
        continue
      }
      const opened = this.sealer.open(record)
      if (opened === null) return
      const next = this.sealer.nextRecord(record, opened.meta, session, now, agent)
      if (await this.target.update(next, record.version)) return
      record = await this.target.get(key)
    }
    throw conflict()
  }

  private async merge(session: Session, loaded: Snapshot): Promise<boolean> {
    const key = storeKeyOf(session.id)
    const changed = changedKeys(session, loaded)
    const agent = userAgentOf(session)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const record = await this.target.get(key)
      const opened = record === null ? null : this.sealer.open(record)
      if (record === null || opened === null) return false
      mergeChanged(session, changed, opened.data)
      const next = this.sealer.nextRecord(record, opened.meta, session, Date.now(), agent)
      if (await this.target.update(next, record.version)) return true
    }
    throw conflict()
  }

  private async end(sid: string): Promise<void> {
    await this.target.destroy(storeKeyOf(sid))
    if (this.moveFrom !== undefined) await oldDestroy(this.moveFrom, sid)
  }
}

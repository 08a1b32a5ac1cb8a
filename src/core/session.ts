import type { Clock } from './clock.js'
import { SessionError } from './errors.js'
import { absentMethod, readOnlyCookie, refuseCallback, SESSION_TRAPS } from './habits.js'
import { generateId } from './id.js'
import type { EndReason } from './lifecycle/notice.js'
import type { SessionRecord } from './store.js'

/**
 * The longest user ID `login` accepts, in UTF-16 code units (JavaScript string length). Every user ID
 * up to it fits the user index of every bundled store and a handle that `revoke` accepts.
 */
export const MAX_USER_ID_LENGTH = 255

/** The shape of session data: JSON-serialisable values under string keys. */
export type SessionData = Record<string, unknown>

/** One change the request made, kept so it can be replayed on fresh data after a write conflict. */
export type Change =
  | { readonly kind: 'set'; readonly key: string; readonly value: unknown }
  | { readonly kind: 'delete'; readonly key: string }
  | { readonly kind: 'update'; readonly key: string; readonly fn: (current: unknown) => unknown }
  | { readonly kind: 'clear' }

/** What the sealed payload holds besides the data. Never shown to the application. */
export interface SessionMeta {
  /** CSRF secret, base64url. Rotates at login. */
  csrf: string
  /** When the current ID was issued (epoch ms): renewal counts from here. */
  iat: number
  /**
   * The session's lineage: a random name given when it is first stored and at every login, kept
   * through renewal and `regenerate`. Handles name it, so a handle outlives ID rotations. `''` until set.
   */
  lid: string
  /** User agent at creation or login, for the "your devices" list. */
  ua?: string
  /**
   * Set on an old record that points to the ID that replaced it: a renewal's forwarder (it answers for
   * its successor during the grace window), or, with {@link retired}, the old record of a `regenerate`.
   */
  next?: string
  /**
   * The old record of a `regenerate`: its ID opens nothing (it died at once), but requests that loaded
   * the session before the change still commit their writes to the successor, and ends follow it there.
   */
  retired?: true
  /**
   * The session's "remember me" choice, made at `login(userId, { persistent })`: a persistent cookie
   * (`true`) or a browser-session cookie (`false`). Absent: the manager's `cookie.persistent`. Kept
   * through renewals and `regenerate`, so every cookie the session is handed is of the kind chosen.
   */
  p?: boolean
  /**
   * When the user last proved who they are (epoch ms): the sign-in, or the last `reauthenticate()`.
   * Kept through renewals and `regenerate`; absent for an anonymous session, and for one signed in
   * before latchkey kept it (the fresh-authentication guard counts that as too old).
   */
  at?: number
}

/** What `session.cookie` reports: the session cookie as latchkey sends it. Read-only. */
export interface SessionCookie {
  /**
   * A persistent cookie (it lasts until the session's absolute deadline) or a browser-session cookie
   * (it dies with the browser): the choice made at `login(userId, { persistent })`, else the manager's
   * `cookie.persistent`.
   */
  readonly persistent: boolean
  /** Milliseconds until a persistent cookie expires (the session's absolute deadline); `null` for a browser-session cookie. */
  readonly maxAge: number | null
  /** When a persistent cookie expires; `null` for a browser-session cookie. */
  readonly expires: Date | null
  readonly secure: boolean
  readonly httpOnly: true
  readonly sameSite: 'lax' | 'strict' | 'none'
  readonly path: string
  readonly domain: string | undefined
}

/** Describes a session's cookie (the manager's settings and clock), for `session.cookie`. */
export interface CookieFacts {
  describe(state: SessionState): SessionCookie
}

/** The options of `login`. */
export interface LoginOptions {
  /**
   * "Remember me": `true` hands this session a persistent cookie (it lasts until the absolute
   * deadline), `false` a browser-session cookie (it dies with the browser). Kept for the session's
   * life, through every renewal of its ID. Default: the manager's `cookie.persistent`.
   */
  persistent?: boolean
}

/**
 * The CSRF pre-session cookie as the request brought it: `none`; `valid` (its secret is the session's
 * `meta.csrf`); `aging` (valid, past half its life: re-issued if the response makes a token); `clear`
 * (malformed, expired, sent twice, or no longer wanted: cleared unless a new one is issued).
 */
export type CsrfCookieState = 'none' | 'valid' | 'aging' | 'clear'

/**
 * How the ID must change at commit: `none`; `regenerate` (a new ID for the same session, the old one
 * retired); `login` (the user changed in this request: a new ID and lineage when the session is
 * stored, the old session ended).
 */
export type Rotation = 'none' | 'regenerate' | 'login'

/** What the response must do with the session cookie when nothing else sets it: leave it, clear it, or send the current ID again. */
export type CookieAction = 'keep' | 'clear' | 'reissue'

/** What the request did with the CSRF secret: nothing, made a token, or created the secret and made a token. */
export type CsrfUse = 'none' | 'used' | 'minted'

/** The CSRF secret and its tokens, as a session needs them (the manager's `CsrfSecrets`). */
export interface CsrfTokens {
  /** A freshly masked token of the state's secret, creating the secret if it has none yet. */
  token(state: SessionState): string
}

/** The state the manager keeps behind a {@link Session}. Not part of the public API. */
export interface SessionState {
  id: string
  record: SessionRecord | null
  data: Map<string, unknown>
  meta: SessionMeta
  userId: string | null
  /** This request's changes, kept to be replayed on fresher data after a conflict. */
  changes: Change[]
  rotation: Rotation
  /** The session that `logout`/`destroy` must end at commit: its record as this request saw it, and its lineage. */
  destroyed: { readonly record: SessionRecord; readonly lineage: string } | null
  /** `logout`/`destroy` was called in this request (for `Clear-Site-Data`). */
  loggedOut: boolean
  cookie: CookieAction
  /** A retired key opened the payload: re-seal on this commit. */
  reseal: boolean
  /** When this request's `login` or `reauthenticate` was called (epoch ms): `meta.at` at commit; else `null`. */
  proved: number | null
  /** The manager's clock: the time of a proof, and the age `authenticatedWithin` measures. */
  readonly clock: Clock
  /** User agent of this request, kept in the payload at creation and login (trimmed). */
  readonly userAgent: string | undefined
  /** Makes CSRF tokens (the manager's keyring, kept out of sight of logs and inspectors). */
  readonly csrf: CsrfTokens
  /** Describes the session cookie, for `session.cookie`. */
  readonly cookieFacts: CookieFacts
  /** The CSRF pre-session cookie the request brought, and what the commit must do about it. */
  csrfCookie: CsrfCookieState
  csrfUse: CsrfUse
  /** Why the session the request's cookie named ended without its user asking, told once; else `null`. */
  endedBecause: EndReason | null
}

/** The metadata of a session that has none yet: no CSRF secret, no lineage, never issued. */
export function blankMeta(): SessionMeta {
  return { csrf: '', iat: 0, lid: '' }
}

/** What {@link newState} is given: the session the request opened, and the request's own facts. */
export type StateFields = Pick<
  SessionState,
  'id' | 'record' | 'data' | 'meta' | 'userId' | 'userAgent' | 'csrf' | 'cookieFacts' | 'csrfCookie' | 'clock'
> &
  Partial<Pick<SessionState, 'cookie' | 'reseal' | 'destroyed' | 'loggedOut' | 'csrfUse' | 'endedBecause'>>

/** A session's state, every field at its starting value but those given. The one place those values are set. */
export function newState(fields: StateFields): SessionState {
  // Field by field rather than `...fields`: a spread after other properties takes V8's slow path, and
  // this runs for every request.
  return {
    id: fields.id,
    record: fields.record,
    data: fields.data,
    meta: fields.meta,
    userId: fields.userId,
    changes: [],
    rotation: 'none',
    destroyed: fields.destroyed ?? null,
    loggedOut: fields.loggedOut ?? false,
    cookie: fields.cookie ?? 'keep',
    reseal: fields.reseal ?? false,
    proved: null,
    clock: fields.clock,
    userAgent: fields.userAgent,
    csrf: fields.csrf,
    cookieFacts: fields.cookieFacts,
    csrfCookie: fields.csrfCookie,
    csrfUse: fields.csrfUse ?? 'none',
    endedBecause: fields.endedBecause ?? null,
  }
}

/**
 * Starts `state` over, in place, as {@link newState} builds it from `fields`, keeping the request's own
 * facts (its clock, user agent, CSRF tokens and cookie facts). Its data map and change list are emptied,
 * not replaced: they are the same objects as before.
 */
export function resetState(
  state: SessionState,
  fields: Omit<StateFields, 'data' | 'clock' | 'userAgent' | 'csrf' | 'cookieFacts'>,
): void {
  const { data, changes, clock, userAgent, csrf, cookieFacts } = state
  data.clear()
  changes.length = 0
  Object.assign(state, newState({ ...fields, data, clock, userAgent, csrf, cookieFacts }), { changes })
}

/**
 * True when the last commit discarded this request's changes or its rotation: the session had ended
 * meanwhile (the commit emits a `dropped` event then).
 */
export function discarded(state: SessionState): boolean {
  return state.changes.length > 0 || state.rotation !== 'none'
}

/** Key of the internal state on a session object. Deliberately not exported from the package. */
export const STATE: unique symbol = Symbol('latchkey.session')

/**
 * One browser's session, typed by its data: `Session<{ cart: string[] }>`.
 * Read and write with `get`/`set`/`delete`/`update`; privilege changes with `login`/`logout`/`regenerate`.
 * Changes are recorded, not written: the adapter commits them once, before the response leaves.
 * Values must be JSON-serialisable; mutate an object in place and the change is not seen, so `set` it
 * again or use `update`.
 *
 * express-session habits are loud: an assignment to the object (`session.user = 'x'`), a callback
 * (`destroy(cb)`), `save`/`reload`/`touch` and a write to `session.cookie` throw a `TypeError` saying
 * what to do instead, in sloppy-mode CommonJS too (the manager hands out the session behind a proxy
 * that traps writes, never reads).
 */
export class Session<T extends SessionData = SessionData> {
  /** @internal */
  readonly [STATE]: SessionState

  /** @internal Built by the manager only. */
  constructor(state: SessionState) {
    this[STATE] = state
    // biome-ignore lint/correctness/noConstructorReturn: the session is handed out behind its write traps
    return new Proxy<this>(this, SESSION_TRAPS)
  }

  /** The session ID. A secret: never log it, put it in a URL or render it. */
  get id(): string {
    return this[STATE].id
  }

  /** True until the session has been stored (a fresh visitor, or after `destroy`/`logout`). */
  get isNew(): boolean {
    return this[STATE].record === null
  }

  /** The signed-in user, or `null`. Set by `login`, cleared by `logout`. */
  get userId(): string | null {
    return this[STATE].userId
  }

  /**
   * When the signed-in user last proved who they are (epoch ms, by the manager's clock): their
   * `login`, or their last `reauthenticate()`, this request's included. `null` when nobody is signed
   * in, or for a session signed in before latchkey kept the time.
   */
  get authenticatedAt(): number | null {
    const state = this[STATE]
    if (state.userId === null) return null
    return state.proved ?? state.meta.at ?? null
  }

  /**
   * True when a user is signed in and proved who they are at most `maxAgeMs` ago (see
   * {@link authenticatedAt}): what the adapters' `requireFreshAuth(maxAgeMs)` guard asks before a
   * sensitive action. Throws a `TypeError` for a `maxAgeMs` that is not a positive integer.
   */
  authenticatedWithin(maxAgeMs: number): boolean {
    checkMaxAge(maxAgeMs)
    const at = this.authenticatedAt
    return at !== null && this[STATE].clock.now() - at <= maxAgeMs
  }

  /**
   * The session cookie as latchkey sends it: persistent or not ("remember me", chosen at `login`),
   * its `maxAge` and `expires` (`null` for a browser-session cookie), its attributes. Read-only: a
   * write throws a `TypeError` (set the lifetime with `login(userId, { persistent })` and the
   * manager's `cookie` options).
   */
  get cookie(): SessionCookie {
    const state = this[STATE]
    return readOnlyCookie(state.cookieFacts.describe(state))
  }

  /** The value under `key`, or `undefined`. */
  get<K extends keyof T & string>(key: K): T[K] | undefined {
    return this[STATE].data.get(key) as T[K] | undefined
  }

  /** True if `key` holds a value. */
  has<K extends keyof T & string>(key: K): boolean {
    return this[STATE].data.has(key)
  }

  /** Stores `value` under `key`. `undefined` deletes the key. */
  set<K extends keyof T & string>(key: K, value: T[K]): void {
    this.record(value === undefined ? { kind: 'delete', key } : { kind: 'set', key, value })
  }

  /** Removes `key`. */
  delete<K extends keyof T & string>(key: K): void {
    this.record({ kind: 'delete', key })
  }

  /** Removes every key (the user stays signed in; use `logout` to sign out). */
  clear(): void {
    this.record({ kind: 'clear' })
  }

  /**
   * Read-modify-write that survives concurrency: `fn` gets the current value and returns the new one.
   * If another request wrote the session meanwhile, `fn` runs again on the fresh value before saving,
   * so 200 parallel `update('n', (n = 0) => n + 1)` end with 200. `fn` must be pure. Returns the new value.
   */
  update<K extends keyof T & string>(key: K, fn: (current: T[K] | undefined) => T[K]): T[K] {
    this.record({ kind: 'update', key, fn: fn as (current: unknown) => unknown })
    return this[STATE].data.get(key) as T[K]
  }

  /**
   * Signs `userId` in: a new ID (the old one dies at once), the data kept, a new CSRF secret,
   * the user indexed for `listUserSessions`. `{ persistent }` is the "remember me" box: a persistent
   * cookie or a browser-session cookie for this session, through every later renewal; left out, the
   * manager's `cookie.persistent` (each sign-in makes the choice afresh). Throws `SessionError`
   * (`ERR_LATCHKEY_USER_ID`) for a user ID that is not a string of 1 to {@link MAX_USER_ID_LENGTH}
   * characters, a `TypeError` for options that are not `{ persistent?: boolean }` (a callback too).
   */
  login(userId: string, options?: LoginOptions): void {
    if (typeof userId !== 'string' || userId.length === 0 || userId.length > MAX_USER_ID_LENGTH) {
      throw new SessionError(
        'ERR_LATCHKEY_USER_ID',
        `login: userId must be a string of 1 to ${MAX_USER_ID_LENGTH} characters, got ${
          typeof userId === 'string' ? `${userId.length} characters` : typeof userId
        }`,
      )
    }
    const persistent = loginPersistence(options)
    const state = this[STATE]
    state.userId = userId
    state.rotation = 'login'
    state.proved = state.clock.now()
    // A sign-in starts a new lineage with a new CSRF secret, and makes its own "remember me" choice.
    state.meta.csrf = ''
    state.meta.lid = ''
    if (persistent === undefined) delete state.meta.p
    else state.meta.p = persistent
  }

  /**
   * A CSRF token for a form field (`_csrf`) or the `x-csrf-token` header. Every call gives another
   * string (freshly masked, so two renders differ), all valid until the session's CSRF secret changes:
   * at `login()`, `logout()` or `destroy()`. A session that is not stored (the login form) keeps its
   * secret in a short-lived sealed cookie instead of the store; the session adopts it if it is stored
   * later. Responses that make a token are sent `Cache-Control: no-store`. Make the token before the
   * response starts: a visitor's pre-session cookie leaves with the headers.
   */
  csrfToken(): string {
    const state = this[STATE]
    return state.csrf.token(state)
  }

  /**
   * Signs out: the record is destroyed server-side and the cookie cleared, when the response is
   * committed. Takes no callback (a `TypeError`): there is nothing to wait for.
   */
  logout(callback?: never): void {
    refuseCallback('logout', callback)
    this.destroy()
  }

  /**
   * A new ID for the same data (use at every privilege change); the old ID dies at once. Applied when
   * the response is committed; takes no callback (a `TypeError`): there is nothing to wait for.
   */
  regenerate(callback?: never): void {
    refuseCallback('regenerate', callback)
    const state = this[STATE]
    if (state.record && state.rotation === 'none') state.rotation = 'regenerate'
  }

  /**
   * The signed-in user proved who they are again (the app checked their password, a passkey, a
   * one-time code): {@link authenticatedAt} becomes now, and the session gets a new ID as with
   * {@link regenerate} (the old one dies at once), when the response is committed. Throws
   * `SessionError` (`ERR_LATCHKEY_NOT_SIGNED_IN`) when nobody is signed in: use `login(userId)` then.
   * Takes no callback (a `TypeError`): there is nothing to wait for.
   */
  reauthenticate(callback?: never): void {
    refuseCallback('reauthenticate', callback)
    const state = this[STATE]
    if (state.userId === null) {
      throw new SessionError(
        'ERR_LATCHKEY_NOT_SIGNED_IN',
        'reauthenticate: no user is signed in to this session; after checking the credentials, call login(userId) instead',
      )
    }
    state.proved = state.clock.now()
    // A sign-in in this request renews the ID already.
    if (state.rotation === 'none') state.rotation = 'regenerate'
  }

  /**
   * Destroys the session: its record leaves a tombstone (a slow request cannot bring it back) and the
   * cookie is cleared, when the response is committed. The object becomes a fresh, empty session for
   * the rest of the request. Takes no callback (a `TypeError`): there is nothing to wait for.
   */
  destroy(callback?: never): void {
    refuseCallback('destroy', callback)
    const state = this[STATE]
    const { record, meta, csrfCookie, csrfUse } = state
    resetState(state, {
      id: generateId(),
      record: null,
      meta: blankMeta(),
      userId: null,
      // The session to end at commit (the first one, if this is a second `destroy`), and the cookie cleared.
      destroyed: record ? { record, lineage: meta.lid } : state.destroyed,
      loggedOut: true,
      cookie: 'clear',
      // A pre-session secret the browser holds dies with the session too.
      csrfCookie: csrfCookie === 'none' ? 'none' : 'clear',
      csrfUse: csrfUse === 'minted' ? 'used' : csrfUse,
      // What the request brought stays: a payload to re-seal, the reason its cookie's session ended.
      reseal: state.reseal,
      endedBecause: state.endedBecause,
    })
  }

  private record(change: Change): void {
    const state = this[STATE]
    applyChange(state.data, change)
    state.changes.push(change)
  }

  /**
   * Why the session this request's cookie named ended, when its user did not ask: `'revoked'` (from
   * another device), `'signed-out-everywhere'`, `'idle-timeout'`, `'absolute-timeout'`,
   * `'key-retired'` (sealed with a key no longer configured) or `'session-cap'` (a sign-in elsewhere
   * went past `maxSessionsPerUser` and this was the least recently used session). Told to the holder of that cookie only,
   * on the first load after the end, once; `null` otherwise (no cookie, a forged one, a logout).
   */
  get endedBecause(): EndReason | null {
    return this[STATE].endedBecause
  }
}

// express-session's save(cb), reload(cb) and touch(): on the prototype, outside the class, so that
// JavaScript gets a TypeError saying what latchkey does instead and TypeScript sees no such method.
for (const name of ['save', 'reload', 'touch'] as const) {
  Object.defineProperty(Session.prototype, name, { value: absentMethod(name), configurable: true })
}

/** `authenticatedWithin`'s argument: a `TypeError` for anything but a positive integer number of milliseconds. */
export function checkMaxAge(maxAgeMs: unknown): void {
  if (typeof maxAgeMs !== 'number' || !Number.isSafeInteger(maxAgeMs) || maxAgeMs <= 0) {
    throw new TypeError(
      `latchkey: maxAgeMs must be a positive integer number of milliseconds (e.g. 300000 for 5 minutes), got ${String(maxAgeMs)}`,
    )
  }
}

/** The "remember me" choice of `login`'s options; a `TypeError` for anything but `{ persistent?: boolean }`. */
function loginPersistence(options: LoginOptions | undefined): boolean | undefined {
  if (options === undefined) return undefined
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(
      typeof options === 'function'
        ? 'latchkey: session.login(userId, options) takes no callback: the sign-in is applied when the response is committed, so there is nothing to wait for; its options are { persistent?: boolean }'
        : `latchkey: session.login(userId, options): options must be { persistent?: boolean }, got ${options === null ? 'null' : typeof options}`,
    )
  }
  const persistent = options.persistent
  if (persistent !== undefined && typeof persistent !== 'boolean') {
    throw new TypeError(
      `latchkey: session.login(userId, { persistent }): persistent must be a boolean, got ${typeof persistent}`,
    )
  }
  return persistent
}

/** Applies one change to a data map; used for the request itself and for replays after a conflict. */
export function applyChange(data: Map<string, unknown>, change: Change): void {
  switch (change.kind) {
    case 'set':
      data.set(change.key, change.value)
      break
    case 'delete':
      data.delete(change.key)
      break
    case 'clear':
      data.clear()
      break
    case 'update': {
      const next = change.fn(data.get(change.key))
      if (next === undefined) data.delete(change.key)
      else data.set(change.key, next)
      break
    }
  }
}

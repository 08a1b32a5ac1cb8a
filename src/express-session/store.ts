/**
 * express-session's Store: an EventEmitter that store packages extend, old style
 * (`Store.call(this)` and `util.inherits`) or as a class. It emits `disconnect` and `connect`, which
 * the middleware follows, and gives subclasses `regenerate`, `load` and `createSession`. It is a
 * function, not a class, because old-style packages call it without `new`.
 */
import { EventEmitter } from 'node:events'
import { inherits } from 'node:util'
import { Cookie, type CookieData } from './cookie.js'
import { type Callback, Session, type SessionRequest } from './session.js'

/** A session as a store keeps it: the data and the cookie's fields (`expires` may be a string). */
export interface SessionData {
  cookie: Partial<CookieData> | Cookie | { expires?: string | Date | null; originalMaxAge?: number | null }
  [key: string]: unknown
}

/** Called with an error, or with the session (undefined or null when there is none). */
export type GetCallback = (error: unknown, session?: SessionData | null) => void

/** What every store implements; `touch`, `all`, `clear`, `length` are optional, as in express-session. */
export interface Store extends EventEmitter {
  get(sid: string, callback: GetCallback): void
  set(sid: string, session: SessionData | Session, callback?: Callback): void
  destroy(sid: string, callback?: Callback): void
  touch?(sid: string, session: SessionData | Session, callback?: Callback): void
  /** Set by the middleware: gives `req` a new ID and an empty session. */
  generate?(req: SessionRequest): void
  regenerate(req: SessionRequest, callback: Callback): void
  load(sid: string, callback: (error: unknown, session?: Session) => void): void
  createSession(req: SessionRequest, stored: SessionData): Session
}

/**
 * Any store package, however its own types spell sessions (most use @types/express-session's): the
 * `store` option checks only that the methods are there.
 */
export interface StoreLike extends EventEmitter {
  get(sid: string, callback: never): unknown
  set(sid: string, session: never, callback?: never): unknown
  destroy(sid: string, callback?: never): unknown
}

export interface StoreConstructor {
  new (): Store
  (this: Store): void
  prototype: Store
}

export const Store = function Store(this: Store): void {
  EventEmitter.call(this)
} as unknown as StoreConstructor

inherits(Store, EventEmitter)

/** Destroys the session of `req` and gives `req` a new, empty one. */
Store.prototype.regenerate = function regenerate(this: Store, req, callback) {
  this.destroy(req.sessionID as string, (error) => {
    generateFor(this, req)
    callback(error)
  })
}

/** Reads the session `sid` as a Session, or nothing when the store has none. */
Store.prototype.load = function load(this: Store, sid, callback) {
  this.get(sid, (error, stored) => {
    if (error) return callback(error)
    if (!stored) return callback(null)
    const req = { sessionID: sid, sessionStore: this } as SessionRequest
    callback(null, this.createSession(req, stored))
  })
}

/** Makes `req.session` from a stored record: its cookie a Cookie again, `expires` a Date again. */
Store.prototype.createSession = function createSession(req, stored) {
  if (typeof stored.cookie !== 'object' || stored.cookie === null) {
    throw new TypeError(
      `the stored session ${req.sessionID} has no cookie field, so it was not written by express-session or ` +
        'latchkey/express-session: remove it from the store (the user gets a new session)',
    )
  }
  const fields = stored.cookie as { expires?: string | Date | null; originalMaxAge?: number | null }
  const { expires, originalMaxAge } = fields
  const cookie = new Cookie(fields as ConstructorParameters<typeof Cookie>[0])
  if (typeof expires === 'string') cookie.expires = new Date(expires)
  cookie.originalMaxAge = originalMaxAge ?? null
  stored.cookie = cookie
  const session = new Session(req, stored)
  req.session = session
  return session
}

function generateFor(store: Store, req: SessionRequest): void {
  if (!store.generate) {
    throw new Error('this store is not attached to a session middleware: pass it as the `store` option')
  }
  store.generate(req)
}

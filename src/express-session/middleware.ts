/**
 * The middleware factory: express-session's options and request lifecycle (load by the signed cookie,
 * `req.session`, the cookie set when the README says, save or touch before the response completes),
 * with latchkey's guarantees where they do not change the API:
 * - a secret is required, refused at startup when missing;
 * - a store error, or a disconnected store, goes to `next(err)` (status 503 for the latter): there is
 *   never a request without `req.session` that looks like a signed-out user;
 * - saving a session loaded from the store merges this request's changes into the fresh record, and
 *   does not write back a record destroyed meanwhile (merge.ts);
 * - a failed save or touch never completes the response as if it had worked (response.ts);
 * - `regenerate` keeps nothing unless called with `{ keepData: true }`.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { refuseUnknownOptions } from '../core/known-options.js'
import type { SessionStore as LatchkeyStore } from '../core/store.js'
import { Cookie, type CookieOptions } from './cookie.js'
import { DROP_IN_OPTIONS, type LatchkeyStoreOptions, SealedStore, storeFor } from './latchkey-store.js'
import { MemoryStore } from './memory.js'
import { mergeInto, type Snapshot, snapshotOf } from './merge.js'
import { beforeHeaders, holdEnd } from './response.js'
import { type Callback, type RegenerateOptions, Session, type SessionRequest } from './session.js'
import { isSecure, readSessionId, type Secret, writeSessionCookie } from './signing.js'
import { type SessionData, Store, type StoreLike } from './store.js'

/**
 * express-session's options (its README documents each), and latchkey's: `absoluteTimeoutMs`, and for a
 * latchkey store `keys`, `moveFrom` and `userOf` (latchkey-store.ts).
 */
export interface SessionOptions extends LatchkeyStoreOptions {
  /** Signs the cookie: one secret, or several (the first signs, any of them verifies). Required. */
  secret: Secret | Secret[]
  /** The cookie's name; default `connect.sid`. `key` is the old spelling. */
  name?: string
  key?: string
  /** The cookie's attributes, or a function of the request that returns them. */
  cookie?: SessionCookieOptions | ((req: SessionRequest) => SessionCookieOptions)
  /** Makes a new session ID; default 32 random bytes, base64url. */
  genid?: (req: SessionRequest) => string
  /** Sets the cookie on every response, restarting its `maxAge`; default false. */
  rolling?: boolean
  /** Saves an unmodified session at the end of each request; default true, as express-session. */
  resave?: boolean
  /** Saves (and sends the cookie of) a new, unmodified session; default true, as express-session. */
  saveUninitialized?: boolean
  /** What `req.session = null` (or `delete req.session`) does: `keep` (default) or `destroy`. */
  unset?: 'keep' | 'destroy'
  /** Trust X-Forwarded-Proto (true), ignore it (false), or follow Express's "trust proxy" (unset). */
  proxy?: boolean
  /**
   * Where sessions live: an express-session store, or a store of latchkey/stores (with `keys`), sealed
   * and written by compare-and-set; default a MemoryStore.
   */
  store?: Store | StoreLike | LatchkeyStore
  /**
   * latchkey's addition, off by default: a session ends this many milliseconds after it began (a new
   * session, or `regenerate`), however active. Kept in the record as {@link STARTED_AT}; a session
   * loaded past it is destroyed and the request gets a new one.
   */
  absoluteTimeoutMs?: number
}

/**
 * The record's key holding when the session began (milliseconds since the epoch), with
 * `absoluteTimeoutMs`. A top-level key, so express-session (in a rolling deploy) keeps it as data when
 * it saves; a field in `cookie` would be dropped by express-session's Cookie.
 */
export const STARTED_AT = '__latchkeyStartedAt'

/** Cookie options, where `secure` and `sameSite` may be `auto` (decided by the request's protocol). */
export type SessionCookieOptions = CookieOptions

export type Next = (error?: unknown) => void
/** Typed on node's request, so that it fits Express's `app.use` with or without @types/express-session. */
export type SessionMiddleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void

const DEFAULT_NAME = 'connect.sid'

function defaultGenid(): string {
  return randomBytes(32).toString('base64url')
}

/** An error for `next` with the HTTP status Express should answer. */
function withStatus(message: string, status: number): Error {
  return Object.assign(new Error(message), { status, statusCode: status, expose: false })
}

function checkedSecrets(secret: unknown): Secret[] {
  const isSecret = (s: unknown): s is Secret => (typeof s === 'string' && s !== '') || Buffer.isBuffer(s)
  if (Array.isArray(secret)) {
    if (secret.length === 0) {
      throw new TypeError('secret option array must contain one or more strings (the first one signs)')
    }
    if (!secret.every(isSecret))
      throw new TypeError('secret option array must hold non-empty strings or Buffers')
    return secret
  }
  if (!isSecret(secret)) {
    throw new TypeError(
      'latchkey/express-session: the `secret` option is required (a string, a Buffer or an array of them; ' +
        'the same secret as before the switch keeps users signed in). express-session fell back to ' +
        'req.secret; latchkey refuses to start without one.',
    )
  }
  return [secret]
}

export function session(options: SessionOptions): SessionMiddleware {
  const opts = (options ?? {}) as Partial<SessionOptions>
  // express-session ignores what it does not know; a typo there is a setting silently not applied.
  refuseUnknownOptions(opts, DROP_IN_OPTIONS, { owner: 'latchkey/express-session' })
  const genid = opts.genid ?? defaultGenid
  if (typeof genid !== 'function') throw new TypeError('genid option must be a function that returns an ID')
  if (opts.unset !== undefined && opts.unset !== 'destroy' && opts.unset !== 'keep') {
    throw new TypeError('unset option must be "destroy" or "keep"')
  }
  const secrets = checkedSecrets(opts.secret)
  const signer = secrets[0] as Secret
  const name = opts.name || opts.key || DEFAULT_NAME
  const absoluteTimeoutMs = checkedTimeout(opts.absoluteTimeoutMs)
  const store = storeFor(opts, { absoluteTimeoutMs, startedAtKey: STARTED_AT }, () => new MemoryStore())
  const sealed = store instanceof SealedStore ? store : undefined
  const cookieOptions = opts.cookie ?? {}
  const cookieFor = (req: SessionRequest): SessionCookieOptions =>
    typeof cookieOptions === 'function' ? cookieOptions(req) : cookieOptions
  const proxy = opts.proxy
  const resave = opts.resave ?? true
  const saveUninitialized = opts.saveUninitialized ?? true
  const rolling = Boolean(opts.rolling)
  const unsetDestroy = opts.unset === 'destroy'
  const storeTouches = typeof store.touch === 'function'

  /**
   * With `absoluteTimeoutMs`, moves the cookie's `expires` back to the session's deadline when it lies
   * beyond it (a long `maxAge`, `rolling`, or a per-request `req.session.cookie.maxAge`), so that neither
   * the browser nor the store keeps the session past its end. `originalMaxAge` stays as it was: the next
   * touch starts from the configured lifetime again, and is capped again. A cookie without `expires`
   * (gone when the browser closes) is left so.
   */
  const capCookie =
    absoluteTimeoutMs === undefined
      ? (_sess: Session): void => {}
      : (sess: Session): void => {
          const startedAt = sess[STARTED_AT]
          const cookie = sess.cookie
          const expires = cookie?.expires
          if (typeof startedAt !== 'number' || !(expires instanceof Date)) return
          const deadline = startedAt + absoluteTimeoutMs
          if (!(expires.valueOf() > deadline)) return
          const originalMaxAge = cookie.originalMaxAge
          cookie.expires = new Date(deadline)
          cookie.originalMaxAge = originalMaxAge
        }

  store.generate = (req) => {
    req.sessionID = genid(req)
    const session = new Session(req)
    const wanted = cookieFor(req)
    session.cookie = new Cookie(wanted)
    const secure = isSecure(req, proxy)
    if (wanted.secure === 'auto') session.cookie.secure = secure
    if (wanted.sameSite === 'auto') session.cookie.sameSite = secure ? 'none' : 'lax'
    if (absoluteTimeoutMs !== undefined) session[STARTED_AT] = Date.now()
    req.session = session
  }

  let connected = true
  store.on('disconnect', () => {
    connected = false
  })
  store.on('connect', () => {
    connected = true
  })

  return function sessionMiddleware(incoming, res, next) {
    const req = incoming as SessionRequest
    if (req.session) return next()
    if (!connected) {
      return next(
        withStatus(
          'the session store is disconnected (it emitted "disconnect" and no "connect" since): ' +
            'check the store server; requests get sessions again once it reconnects',
          503,
        ),
      )
    }
    if (!pathOf(req).startsWith(cookieFor(req).path || '/')) return next()

    req.sessionStore = store
    const cookieId = readSessionId(req, name, secrets)
    req.sessionID = cookieId as string
    let originalId: string | undefined
    let originalHash: string | undefined
    let savedHash: string | undefined
    let loaded: Snapshot | undefined
    let touched = false

    const isModified = (sess: Session): boolean => originalId !== sess.id || originalHash !== hashOf(sess)
    const isSaved = (sess: Session): boolean => originalId === sess.id && savedHash === hashOf(sess)
    const validId = (): boolean => typeof req.sessionID === 'string'
    const shouldSave = (sess: Session): boolean =>
      !saveUninitialized && savedHash === undefined && cookieId !== req.sessionID
        ? isModified(sess)
        : !isSaved(sess)
    const shouldSetCookie = (sess: Session): boolean =>
      cookieId !== req.sessionID
        ? saveUninitialized || isModified(sess)
        : rolling || (sess.cookie.expires != null && isModified(sess))
    const touchOnce = (sess: Session): void => {
      if (touched) return
      touched = true
      sess.touch()
      capCookie(sess)
    }

    /** Writes `sess`: merged into the fresh record when it is the session this request loaded. */
    const persist = (sess: Session, done: Callback): void => {
      capCookie(sess)
      const snapshot = loaded
      if (snapshot === undefined || sess.id !== cookieId) {
        savedHash = hashOf(sess)
        store.set(sess.id, sess, done)
        return
      }
      if (sealed) {
        // A latchkey store: merged and written by compare-and-set (latchkey-store.ts).
        sealed.saveMerged(sess, snapshot, (error, written) => {
          if (!error && written) {
            savedHash = hashOf(sess)
            loaded = snapshotOf(sess)
          }
          done(error)
        })
        return
      }
      store.get(sess.id, (error, fresh) => {
        if (error && !isMissing(error)) return done(error)
        if (error || !fresh) return done()
        mergeInto(sess, snapshot, fresh)
        savedHash = hashOf(sess)
        store.set(sess.id, sess, (setError) => {
          if (!setError) loaded = snapshotOf(sess)
          done(setError)
        })
      })
    }

    /** `req.session` from a stored record, always this module's Session and Cookie, whatever the store extends. */
    const inflate = (fresh: SessionData): Session => Store.prototype.createSession.call(store, req, fresh)

    const adopt = (sess: Session): void => {
      originalId = sess.id
      originalHash = hashOf(sess)
      wrap(sess)
    }

    const wrap = (sess: Session): void => {
      const methods = {
        save(this: Session, callback?: Callback): Session {
          persist(this, callback ?? noopCallback)
          return this
        },
        reload(this: Session, callback: Callback): Session {
          store.get(this.id, (error, fresh) => {
            if (error) return callback(error)
            if (!fresh) return callback(new Error('failed to load session'))
            const reloaded = inflate(fresh)
            loaded = snapshotOf(reloaded)
            wrap(reloaded)
            callback()
          })
          return this
        },
        regenerate(this: Session, how: RegenerateOptions | Callback, callback?: Callback): Session {
          const done = typeof how === 'function' ? how : (callback ?? noopCallback)
          const kept = typeof how === 'object' && how?.keepData ? dataOf(this) : undefined
          if (kept) delete kept[STARTED_AT]
          store.regenerate(req, (error) => {
            const next = req.session
            if (next) {
              if (kept) Object.assign(next, kept)
              wrap(next)
            }
            done(error)
          })
          return this
        },
      }
      for (const [key, value] of Object.entries(methods)) {
        Object.defineProperty(sess, key, { configurable: true, enumerable: false, writable: true, value })
      }
    }

    beforeHeaders(res, () => {
      const sess = req.session
      if (!sess || !validId() || !shouldSetCookie(sess)) return
      if (sess.cookie.secure && !isSecure(req, proxy)) return
      touchOnce(sess)
      capCookie(sess)
      try {
        writeSessionCookie(res, name, req.sessionID as string, signer, sess.cookie.data)
      } catch (error) {
        setImmediate(next, error)
      }
    })

    holdEnd(
      res,
      () => {
        const sess = req.session
        if (!sess) {
          if (unsetDestroy && req.sessionID) {
            const sid = req.sessionID
            return (done) => store.destroy(sid, done)
          }
          return undefined
        }
        if (!validId()) return undefined
        touchOnce(sess)
        if (shouldSave(sess)) return (done) => persist(sess, done)
        if (storeTouches && cookieId === req.sessionID) {
          const touch = store.touch as NonNullable<Store['touch']>
          // A session destroyed meanwhile has nothing to touch (session-file-store says ENOENT).
          return (done) =>
            touch.call(store, sess.id, sess, (error) => done(isMissing(error) ? undefined : error))
        }
        return undefined
      },
      (error) => setImmediate(next, error),
    )

    const generate = (): void => {
      ;(store.generate as NonNullable<Store['generate']>)(req)
      adopt(req.session as Session)
    }

    if (!cookieId) {
      generate()
      return next()
    }

    /** Continues the request with `stored` as its session, or a new one when there is none. */
    const start = (stored: SessionData | null | undefined): void => {
      try {
        if (!stored) {
          generate()
        } else {
          const sess = inflate(stored)
          adopt(sess)
          loaded = snapshotOf(sess)
          if (!resave) savedHash = originalHash
          // A session from before the option was on starts its window now, saved as a change.
          if (absoluteTimeoutMs !== undefined && sess[STARTED_AT] === undefined) sess[STARTED_AT] = Date.now()
        }
      } catch (failure) {
        next(failure)
        return
      }
      next()
    }

    store.get(cookieId, (error, stored) => {
      if (error && !isMissing(error)) return next(error)
      if (!error && stored && absoluteTimeoutMs !== undefined && isPast(stored, absoluteTimeoutMs)) {
        store.destroy(cookieId, (destroyError) => {
          if (destroyError && !isMissing(destroyError)) return next(destroyError)
          start(undefined)
        })
        return
      }
      start(error ? undefined : stored)
    })
  }
}

function noopCallback(): void {}

/**
 * The session's data as JSON (the cookie is not data), to tell whether a request changed it: a copy
 * without the cookie, so that JSON.stringify runs without a replacer (a function call per value).
 */
function hashOf(sess: Session): string {
  const { cookie: _cookie, ...data } = sess
  return JSON.stringify(data)
}

function checkedTimeout(ms: unknown): number | undefined {
  if (ms === undefined) return undefined
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) {
    throw new TypeError('absoluteTimeoutMs option must be a positive number of milliseconds (or left out)')
  }
  return ms
}

/**
 * Whether the stored session began `timeoutMs` ago or more. A record without the key (written before
 * the option was on) is not past; one whose key is not a number is (a record never written so).
 */
function isPast(stored: SessionData, timeoutMs: number): boolean {
  const startedAt = stored[STARTED_AT]
  if (startedAt === undefined) return false
  return typeof startedAt !== 'number' || !Number.isFinite(startedAt) || Date.now() >= startedAt + timeoutMs
}

/** A store's way of saying "no such session" with an error: session-file-store answers ENOENT. */
function isMissing(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'ENOENT'
}

/** The data of a session (its own enumerable properties but the cookie). */
function dataOf(sess: Session): Record<string, unknown> {
  const data: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(sess)) if (key !== 'cookie') data[key] = value
  return data
}

/** The path of the URL the request came in with (before any Express mount point stripped it). */
function pathOf(req: SessionRequest): string {
  const url = req.originalUrl ?? req.url ?? '/'
  if (url.startsWith('/')) return url.split('?')[0] || '/'
  try {
    return new URL(url).pathname || '/'
  } catch {
    return '/'
  }
}

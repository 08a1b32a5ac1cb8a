/**
 * express-session habits, made loud. Code written for express-session assigns to the session object
 * (`req.session.user = 'x'`), passes callbacks (`req.session.destroy(cb)`), calls `save`/`reload`/
 * `touch` and sets `req.session.cookie.maxAge`. On a latchkey session each of those used to do nothing
 * without a word (an assignment stored nothing, a callback was never called and the request hung), so
 * each now throws a `TypeError` that says what latchkey does instead. Proxy traps, not a frozen object:
 * a frozen object ignores an assignment in sloppy-mode CommonJS without a word; a trap throws there too.
 * There is no `get` trap, so reading a session costs what it did.
 */
import type { SessionCookie } from './session.js'

/** Where express-session's own API is (src/express-session), and how to use it: named by every message below. */
const DROP_IN =
  "For express-session's API as it is, use its drop-in, session() from 'latchkey/express-session', in place of express-session's: see docs/express-session.md"

/** How a key reads in a message: `session.user`, `session[Symbol(x)]`. */
function member(key: string | symbol): string {
  return typeof key === 'symbol' ? `session[${String(key)}]` : `session.${key}`
}

/** Hints for the members of the Session API an application may try to assign. */
const MEMBER_HINTS: Readonly<Record<string, string>> = {
  userId: ': sign in with session.login(userId), out with session.logout()',
  id: ': session.regenerate() gives the session a new ID when the response is committed',
  isNew: ': a session is stored once it holds data or a user',
  cookie: ': see session.cookie for what it reports, and login(userId, { persistent }) for "remember me"',
}

/** The error of an assignment, a definition or a deletion on a session. */
function sessionWriteError(target: object, key: string | symbol, deleting: boolean): TypeError {
  if (key in target) {
    const hint = typeof key === 'string' ? (MEMBER_HINTS[key] ?? '') : ''
    return new TypeError(
      `latchkey: ${member(key)} is part of the Session API and cannot be ${deleting ? 'deleted' : 'assigned'}${hint}`,
    )
  }
  if (typeof key === 'symbol') {
    return new TypeError(
      `latchkey: ${member(key)} stores nothing: session data lives under string keys, through session.set(key, value)`,
    )
  }
  return deleting
    ? new TypeError(
        `latchkey: delete ${member(key)} removes nothing: use session.delete('${key}'). (${DROP_IN}.)`,
      )
    : new TypeError(
        `latchkey: ${member(key)} = … stores nothing: a latchkey session is read and written through its methods: use session.set('${key}', value), and session.get('${key}') to read it. (${DROP_IN}.)`,
      )
}

/** The traps of every session the manager hands out: writes to the object itself throw. */
export const SESSION_TRAPS: ProxyHandler<object> = {
  set(target, key) {
    throw sessionWriteError(target, key, false)
  },
  defineProperty(target, key) {
    throw sessionWriteError(target, key, false)
  },
  deleteProperty(target, key) {
    throw sessionWriteError(target, key, true)
  },
}

/** What a session's methods do instead of calling a callback. */
const INSTEAD: Readonly<Record<'destroy' | 'logout' | 'regenerate' | 'reauthenticate', string>> = {
  destroy:
    'the session is ended when the response is committed, before it leaves: call session.destroy() and answer the request',
  logout:
    'the session is ended when the response is committed, before it leaves: call session.logout() and answer the request',
  regenerate:
    'the new ID is made when the response is committed and leaves with it: call session.regenerate() and carry on',
  reauthenticate:
    'the new ID is made when the response is committed and leaves with it: call session.reauthenticate() and carry on',
}

/** Throws when a session method that takes no callback is given an argument (express-session's `destroy(cb)`). */
export function refuseCallback(method: keyof typeof INSTEAD, argument: unknown): void {
  if (argument === undefined) return
  throw new TypeError(
    `latchkey: session.${method}() takes no ${typeof argument === 'function' ? 'callback' : 'argument'} and returns nothing to wait for: ${INSTEAD[method]}. (${DROP_IN}.)`,
  )
}

/**
 * express-session's methods that latchkey has no use for, each throwing what latchkey does instead.
 * Put on `Session.prototype` outside the class, so TypeScript users see no such method at all.
 */
export const ABSENT_METHODS: Readonly<Record<'save' | 'reload' | 'touch', string>> = {
  save: 'there is nothing to save by hand: changes made with set(), update() and delete() are written when the response is committed, before it leaves',
  reload:
    "a session is loaded once per request, and a write that meets a newer version of the session replays this request's changes on it",
  touch:
    'every request that loads the session counts as activity: latchkey moves its idle deadline itself, at most once per touchIntervalMs',
}

/** The method that stands for `name` of {@link ABSENT_METHODS}. */
export function absentMethod(name: keyof typeof ABSENT_METHODS): () => never {
  return () => {
    throw new TypeError(`latchkey: session.${name}() does not exist: ${ABSENT_METHODS[name]}. (${DROP_IN}.)`)
  }
}

const COOKIE_WRITE =
  'latchkey sends the session cookie itself. For "remember me", sign in with session.login(userId, { persistent: true }) (a cookie that lasts until the session\'s absolute deadline) or { persistent: false } (a cookie that dies with the browser); the default is the manager\'s cookie.persistent, the other attributes its cookie options (secure, sameSite, path, domain), the lifetime its absoluteTimeoutMs and idleTimeoutMs'

const COOKIE_TRAPS: ProxyHandler<SessionCookie> = {
  set(_target, key) {
    throw new TypeError(`latchkey: session.cookie.${String(key)} cannot be set: ${COOKIE_WRITE}`)
  },
  defineProperty(_target, key) {
    throw new TypeError(`latchkey: session.cookie.${String(key)} cannot be set: ${COOKIE_WRITE}`)
  },
  deleteProperty(_target, key) {
    throw new TypeError(`latchkey: session.cookie.${String(key)} cannot be deleted: ${COOKIE_WRITE}`)
  },
}

/** `facts` as `session.cookie` hands them out: readable, and every write a `TypeError` saying what to do instead. */
export function readOnlyCookie(facts: SessionCookie): SessionCookie {
  return new Proxy(Object.freeze(facts), COOKIE_TRAPS)
}

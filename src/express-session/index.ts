/**
 * latchkey/express-session: a drop-in for express-session. The module is the middleware factory, as
 * express-session's is, with `Store`, `MemoryStore`, `Cookie` and `Session` attached (and `STARTED_AT`,
 * the record key of the optional absolute timeout, and `defaultUserOf`, the user index of a latchkey
 * store); `require()` returns the factory itself (the `module.exports` export, honoured by require(esm)
 * on Node 20.19+).
 * docs/express-session.md lists every difference from express-session, and why.
 */
import { Cookie } from './cookie.js'
import { defaultUserOf } from './latchkey-store.js'
import { MemoryStore } from './memory.js'
import { session as createMiddleware, STARTED_AT } from './middleware.js'
import { Session } from './session.js'
import { Store } from './store.js'
import './request.js'

export type { CookieData, CookieOptions } from './cookie.js'
export type { LatchkeyStoreOptions, UserOf } from './latchkey-store.js'
export type { Next, SessionCookieOptions, SessionMiddleware, SessionOptions } from './middleware.js'
export type { Callback, RegenerateOptions, SessionRequest } from './session.js'
export type { GetCallback, SessionData, StoreConstructor, StoreLike } from './store.js'
export { Cookie, defaultUserOf, MemoryStore, Session, STARTED_AT, Store }

const session = Object.assign(createMiddleware, {
  Store,
  MemoryStore,
  Cookie,
  Session,
  STARTED_AT,
  defaultUserOf,
})

export default session
export { session as 'module.exports' }

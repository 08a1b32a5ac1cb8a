/**
 * `req.session`: express-session's Session. Its own enumerable properties are the session data (and
 * `cookie`); `id` and `req` are hidden, and the methods live on the prototype, so `Object.keys`, JSON
 * and the store see data only. A stored property named like a method (`save`, `destroy`...) is not
 * copied over the method. The middleware replaces `save`, `reload`, `destroy` and `regenerate` on each
 * request's session with versions that keep latchkey's guarantees (see middleware.ts); these are the
 * plain ones, for sessions made outside a request (`store.load`).
 */
import type { IncomingMessage } from 'node:http'
import type { Cookie } from './cookie.js'
import type { Store } from './store.js'

/** Called with an error, or with nothing once done. */
export type Callback = (error?: unknown) => void

/** The request fields express-session adds. */
export interface SessionRequest extends IncomingMessage {
  session?: Session | null | undefined
  sessionID?: string
  sessionStore?: Store
  originalUrl?: string
}

/** Options of `regenerate`: `keepData` carries the data (not the ID) over to the new session. */
export interface RegenerateOptions {
  keepData?: boolean
}

export class Session {
  [key: string]: unknown
  declare cookie: Cookie
  declare readonly id: string
  declare readonly req: SessionRequest

  constructor(req: SessionRequest, data?: object | null) {
    Object.defineProperty(this, 'req', { value: req })
    Object.defineProperty(this, 'id', { value: req.sessionID })
    if (typeof data === 'object' && data !== null) {
      for (const [key, value] of Object.entries(data)) {
        if (!(key in this)) this[key] = value
      }
    }
  }

  /** Restarts the cookie's lifetime (`maxAge` back to `originalMaxAge`). */
  touch(): this {
    return this.resetMaxAge()
  }

  resetMaxAge(): this {
    this.cookie.maxAge = this.cookie.originalMaxAge
    return this
  }

  save(callback?: Callback): this {
    storeOf(this).set(this.id, this, callback ?? noop)
    return this
  }

  reload(callback: Callback): this {
    const req = this.req
    const store = storeOf(this)
    store.get(this.id, (error, stored) => {
      if (error) return callback(error)
      if (!stored) return callback(new Error('failed to load session'))
      store.createSession(req, stored)
      callback()
    })
    return this
  }

  destroy(callback?: Callback): this {
    delete this.req.session
    storeOf(this).destroy(this.id, callback ?? noop)
    return this
  }

  regenerate(options: RegenerateOptions | Callback, callback?: Callback): this {
    const done = typeof options === 'function' ? options : (callback ?? noop)
    storeOf(this).regenerate(this.req, done)
    return this
  }
}

for (const name of ['touch', 'resetMaxAge', 'save', 'reload', 'destroy', 'regenerate'] as const) {
  Object.defineProperty(Session.prototype, name, { enumerable: false })
}

/** Does nothing: the callback of a call whose caller passed none. */
export function noop(): void {}

function storeOf(session: Session): Store {
  const store = session.req.sessionStore
  if (!store) throw new Error('this session has no store: req.sessionStore is missing')
  return store
}

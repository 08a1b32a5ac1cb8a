/**
 * latchkey for Express 4 and 5: `app.use(sessions(manager))`, then `req.session` in every later handler.
 *
 * An Express response is a node response, so the session is committed the way `withSessions` does
 * it: the first `writeHead`/`write`/`end`/`flushHeaders` is held until the commit is done, whatever
 * sends it (`res.send`, `res.redirect`, a piped stream, `HEAD`). Errors go to `next(err)` for the app's
 * error handler, with `status`/`statusCode`/`headers` set (503 for a store that is down), so Express's
 * own handler answers them right. Only APIs common to Express 4 and 5 are used.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Request, RequestHandler } from 'express'
import type { SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import type { Committer } from './hold.js'
import { holdUntilCommitted } from './hold.js'
import type { NodeRequestView } from './kernel.js'
import {
  asHttpError,
  checkAdapterOptions,
  encrypted,
  FrontDoor,
  logError,
  NodeCsrfRequest,
  sendFailure,
} from './kernel.js'

/** The default of `csrf.maxBodyBytes`: 1 MiB. */
export { DEFAULT_MAX_BODY_BYTES } from '../csrf/index.js'
/** Sessions and the origin check on WebSocket (and other) upgrades, which no middleware sees. */
export * from './upgrade.js'

/** Options of the Express {@link sessions} middleware. */
export interface ExpressSessionsOptions {
  /**
   * The CSRF check, run before the next handler on every unsafe request (see `CsrfOptions`); on by
   * default. A failure goes to `next(err)` as a `CsrfError` with `status` 403 (413 for a form body
   * past `maxBodyBytes`), for the app's error handler to render. `false` turns it off for the whole
   * app; to let a route through (a webhook), list it in `exempt` or mount it before this middleware.
   */
  csrf?: CsrfOptions | false
  /**
   * Called with the errors the middleware answers itself: a commit that fails once the handler has
   * started its response (503, or the connection dropped if the response had gone). Errors before
   * the handler runs go to `next(err)` instead. Default `console.error`.
   */
  onError?: (error: unknown) => void
}

/**
 * An Express request that went through {@link sessions}: `(req as SessionRequest<Data>).session`.
 * Express's handler types take a plain `Request`, so this is a cast, not a parameter annotation.
 * Its `session` replaces any other library's (express-session types `req.session` globally).
 */
export type SessionRequest<T extends SessionData = SessionData> = Omit<Request, 'session'> & {
  session: Session<T>
}

/** The middleware, and a typed way to reach the session of a request it served. */
export interface ExpressSessions<T extends SessionData = SessionData> extends RequestHandler {
  /**
   * The session of `req`, typed by the manager's data: `auth.session(req).get('cart')`. Throws a
   * `TypeError` when the middleware did not run for this request (mounted after the route).
   */
  session(req: IncomingMessage): Session<T>
}

type ExpressRequest = IncomingMessage & { originalUrl?: string; secure?: boolean; body?: unknown }
type WithSession<T extends SessionData> = ExpressRequest & { session?: Session<T> }

/** Where Express keeps the request target as received, its `trust proxy` verdict, and a parsed body. */
const EXPRESS_VIEW: NodeRequestView<ExpressRequest> = {
  url: (req) => req.originalUrl ?? req.url ?? '/',
  secure: (req) => req.secure ?? encrypted(req),
  parsedBody: (req) => req.body,
}

/**
 * The session middleware for Express: loads the session, sets `req.session`, and commits it before
 * the response leaves, after the CSRF check of an unsafe request. A store that fails before the
 * handler runs gives `next(err)` with a 503 `StoreError`; one that fails at commit gives a 503 answered here (the handler's response is
 * dropped, nothing of it has left). A handler error reaches the app's error handler and is not seen
 * here: a response with a 5xx status saves none of the request's session changes, as `withSessions`
 * does for a handler that throws, but a logout or the end of the ID a login or `regenerate` replaces
 * is applied all the same (ends fail closed).
 */
export function sessions<T extends SessionData>(
  manager: SessionManager<T>,
  options: ExpressSessionsOptions = {},
): ExpressSessions<T> {
  checkAdapterOptions(options, ['csrf', 'onError'], 'sessions() of latchkey/express')
  const door = new FrontDoor(manager, options.csrf)
  const onError = options.onError ?? logError
  const committer: Committer<Session<T>> = {
    commit: (session, res) => (res.statusCode >= 500 ? door.abandon(session) : door.commit(session)),
    fail: (res, error) => {
      onError(error)
      sendFailure(res, error)
    },
  }

  const serve = (
    req: WithSession<T>,
    res: ServerResponse,
    next: (error?: unknown) => void,
    session: Session<T>,
  ) => {
    req.session = session
    // Express swaps each response's prototype: the hold goes on that prototype (see holdUntilCommitted),
    // and `headersSent` counts held output, so Express's final handler (and any error handler that
    // checks) does not start a second response behind it.
    holdUntilCommitted(res, session, committer, true)
    const check = door.checksNode(req, EXPRESS_VIEW.url(req))
      ? door.check(session, new NodeCsrfRequest(req, req, EXPRESS_VIEW, door.maxBodyBytes))
      : null
    if (check === null) {
      next()
      return
    }
    check.then(
      () => next(),
      (error: unknown) => next(asHttpError(error)),
    )
  }

  const middleware = (req: WithSession<T>, res: ServerResponse, next: (error?: unknown) => void): void => {
    let loaded: Session<T> | Promise<Session<T>>
    try {
      loaded = door.load(req.headers.cookie, req.headers['user-agent'])
    } catch (error) {
      next(asHttpError(error))
      return
    }
    if (!(loaded instanceof Promise)) {
      serve(req, res, next, loaded)
      return
    }
    loaded.then(
      (session) => serve(req, res, next, session),
      (error: unknown) => next(asHttpError(error)),
    )
  }

  return Object.assign(middleware as unknown as RequestHandler, {
    session(req: IncomingMessage): Session<T> {
      const session = (req as WithSession<T>).session
      if (session === undefined || session === null) {
        throw new TypeError('latchkey: no session on this request: mount sessions(manager) before this route')
      }
      return session
    },
  })
}

// Importing `latchkey/express` types `req.session` on every Express request, as express-session's types do.
export type { ExpressSessionData } from './express-augment.js'
export { expressFreshAuth as requireFreshAuth } from './fresh-auth.js'

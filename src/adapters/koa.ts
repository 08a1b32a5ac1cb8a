/**
 * latchkey for Koa 3: `app.use(sessions(manager))`, then `ctx.session` in every later middleware.
 *
 * Koa sends the response once the middleware chain is done, so the session is committed after
 * `await next()`, whatever the body (a stream, a redirect, `HEAD`). Errors are thrown into Koa's
 * error handling with `status`, `expose` and `headers` set (503 and `Retry-After` for a store that is
 * down). A response the app writes itself (`ctx.respond = false`) is not held back for the commit.
 */
import type { DefaultState, Middleware, ParameterizedContext } from 'koa'
import type { SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import type { ChainBinding, NodeRequestView } from './kernel.js'
import {
  applyCommit,
  aroundChain,
  checkAdapterOptions,
  FrontDoor,
  NODE_HEADERS,
  NodeCsrfRequest,
} from './kernel.js'

/** The default of `csrf.maxBodyBytes`: 1 MiB. */
export { DEFAULT_MAX_BODY_BYTES } from '../csrf/index.js'

/** The context fields {@link sessions} adds: `new Koa<DefaultState, SessionContext<Data>>()`, or chain `.use()`. */
export interface SessionContext<T extends SessionData = SessionData> {
  /** The latchkey session of this request. */
  session: Session<T>
}

/** Options of the Koa {@link sessions} middleware. */
export interface KoaSessionsOptions {
  /**
   * The CSRF check, run before the rest of the chain on every unsafe request (see `CsrfOptions`); on
   * by default. A failure is thrown as a `CsrfError` with `status` 403 (413 for a form body past
   * `maxBodyBytes`). `false` turns it off for the whole app; a route skips it by a path in `exempt`.
   */
  csrf?: CsrfOptions | false
}

/** Where Koa keeps the request target as received, its `app.proxy` verdict, and a parsed body. */
const KOA_VIEW: NodeRequestView<ParameterizedContext> = {
  url: (ctx) => ctx.originalUrl,
  secure: (ctx) => ctx.secure,
  parsedBody: (ctx) => (ctx.request as { body?: unknown }).body,
}

/** Koa's context, as the front door needs it. Headers go on node's response, as Koa's own setters put them. */
const KOA: ChainBinding<SessionData, ParameterizedContext> = {
  cookie: (ctx) => ctx.req.headers.cookie,
  userAgent: (ctx) => ctx.req.headers['user-agent'],
  setSession: (ctx, session) => {
    ;(ctx as { session?: Session }).session = session
  },
  csrfRequest: (ctx, maxBodyBytes) => new NodeCsrfRequest(ctx, ctx.req, KOA_VIEW, maxBodyBytes),
  checksCsrf: (door, ctx) => door.checksNode(ctx.req, KOA_VIEW.url(ctx)),
  apply: (ctx, result) => {
    // Like Koa's own setters, nothing is set once the app has sent the head itself (`ctx.respond = false`).
    if (!ctx.res.headersSent) applyCommit(NODE_HEADERS, ctx.res, result)
  },
}

/**
 * The session middleware for Koa: loads the session into `ctx.session` and commits it once the rest
 * of the chain is done, before Koa responds; an unsafe request is checked for CSRF first. A store that fails throws a 503 `StoreError`; an error
 * from the rest of the chain goes on to Koa's error handling and none of the request's session
 * changes are saved.
 */
export function sessions<T extends SessionData>(
  manager: SessionManager<T>,
  options: KoaSessionsOptions = {},
): Middleware<DefaultState, SessionContext<T>> {
  checkAdapterOptions(options, ['csrf'], 'sessions() of latchkey/koa')
  const door = new FrontDoor(manager, options.csrf)
  const binding = KOA as unknown as ChainBinding<T, ParameterizedContext>
  return (ctx, next) => aroundChain(door, binding, ctx as unknown as ParameterizedContext, next)
}
export { koaFreshAuth as requireFreshAuth } from './fresh-auth.js'

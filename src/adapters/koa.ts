/**
 * latchkey for Koa 3: `app.use(sessions(manager))`, then `ctx.session` in every later middleware.
 *
 * Koa sends the response once the middleware chain is done, so the session is committed after
 * `await next()`, whatever the body (a stream, a redirect, `HEAD`). Errors are thrown into Koa's
 * error handling with `status`, `expose` and `headers` set (503 and `Retry-After` for a store that is
 * down). A response the app writes itself (`ctx.respond = false`) is not held back for the commit.
 */
import type { DefaultState, Middleware, ParameterizedContext } from 'koa'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import { createCsrfGuard, DEFAULT_MAX_BODY_BYTES } from '../csrf/index.js'
import { NodeCsrfRequest } from './csrf-request.js'
import { asHttpError, commitCookies, DISCARDED } from './shared.js'

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

/** A Koa request for the CSRF check: `secure` by Koa's `app.proxy`, the body as a parser left it. */
class KoaCsrfRequest extends NodeCsrfRequest {
  constructor(
    private readonly ctx: ParameterizedContext,
    maxBodyBytes: number,
  ) {
    super(ctx.req, maxBodyBytes)
  }

  get url(): string {
    return this.ctx.originalUrl
  }

  get secure(): boolean {
    return this.ctx.secure
  }

  protected parsedBody(): unknown {
    return (this.ctx.request as { body?: unknown }).body
  }
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
  const guard = createCsrfGuard(manager, options.csrf ?? {})
  const maxBodyBytes = guard.options?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  return async (ctx, next) => {
    const headers = ctx.req.headers
    const facts = { cookie: headers.cookie, userAgent: headers['user-agent'] }
    let session: Session<T>
    try {
      session = manager.loadSync(facts) ?? (await manager.load(facts))
    } catch (error) {
      throw asHttpError(error)
    }
    ;(ctx as { session: Session<T> }).session = session
    if (guard.options !== null) {
      const request = new KoaCsrfRequest(ctx, maxBodyBytes)
      if (guard.applies(request)) {
        try {
          await guard.check(session, request)
        } catch (error) {
          throw asHttpError(error)
        }
      }
    }
    try {
      await next()
    } catch (error) {
      applyCommit(ctx, DISCARDED)
      throw error
    }
    try {
      applyCommit(ctx, manager.commitSync(session) ?? (await manager.commit(session)))
    } catch (error) {
      throw asHttpError(error)
    }
  }
}

function applyCommit(ctx: ParameterizedContext, result: CommitResult): void {
  for (const cookie of commitCookies(result)) ctx.append('Set-Cookie', cookie)
  if (result.private) {
    ctx.set('Cache-Control', 'no-store')
    ctx.vary('Cookie')
  }
  if (result.clearSiteData !== undefined) ctx.set('Clear-Site-Data', result.clearSiteData)
}

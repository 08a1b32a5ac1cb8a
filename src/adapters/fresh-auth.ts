/**
 * The fresh-authentication guard (OWASP ASVS V7.5), one per front door: `requireFreshAuth(maxAgeMs)`
 * lets a route through only when the signed-in user proved who they are (`login`, or
 * `session.reauthenticate()`) at most `maxAgeMs` ago, by the manager's clock. Otherwise it raises a
 * `FreshAuthError` (403, reason `not-signed-in` or `reauthentication-required`) the way each
 * framework hands errors to the app, so the app can catch it and show "confirm your password".
 *
 * The guards are typed by shape, not by the frameworks' types, so each adapter re-exports its own
 * without making the others' types a dependency of its declarations.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ConfigError, FreshAuthError } from '../core/errors.js'
import type { Session, SessionData } from '../core/session.js'
import { checkMaxAge } from '../core/session.js'
import { asHttpError, freshAuthAnswer, sendAnswer } from './kernel.js'

/**
 * The refusal of `session` for a route that wants a proof at most `maxAgeMs` old, or `null` to let
 * it through. No session on the request means the sessions middleware did not run for it: a `TypeError`.
 */
export function freshAuthRefusal(
  session: Session | undefined | null,
  maxAgeMs: number,
): FreshAuthError | null {
  if (session === undefined || session === null) {
    throw new TypeError(
      'latchkey: requireFreshAuth() found no session on this request: mount the sessions middleware before it',
    )
  }
  if (session.userId === null) return new FreshAuthError('not-signed-in', maxAgeMs)
  return session.authenticatedWithin(maxAgeMs)
    ? null
    : new FreshAuthError('reauthentication-required', maxAgeMs)
}

/** `maxAgeMs`, checked when the guard is built: a `ConfigError` for anything but a positive integer. */
function checked(maxAgeMs: number): number {
  try {
    checkMaxAge(maxAgeMs)
  } catch (error) {
    throw new ConfigError('requireFreshAuth(maxAgeMs)', (error as Error).message.replace(/^latchkey: /, ''))
  }
  return maxAgeMs
}

/** Options of the node:http guard. */
export interface NodeFreshAuthOptions<T extends SessionData, Req extends IncomingMessage> {
  /**
   * Answers a refused request instead of the handler ("confirm your password"): `error.reason` says
   * why. The session is committed as for the handler. Default: a short plain-text 403 page.
   */
  onRefused?: (error: FreshAuthError, req: Req, res: ServerResponse, session: Session<T>) => unknown
}

/**
 * node:http: wraps a `withSessions` handler so it runs only after a proof at most `maxAgeMs` old:
 * `withSessions(manager, requireFreshAuth(5 * 60_000, changePassword))`.
 */
export function nodeFreshAuth<T extends SessionData, Req extends IncomingMessage = IncomingMessage>(
  maxAgeMs: number,
  handler: (req: Req, res: ServerResponse, session: Session<T>) => unknown,
  options: NodeFreshAuthOptions<T, Req> = {},
): (req: Req, res: ServerResponse, session: Session<T>) => unknown {
  checked(maxAgeMs)
  const onRefused =
    options.onRefused ??
    ((error: FreshAuthError, _req: Req, res: ServerResponse) => sendAnswer(res, freshAuthAnswer(error)))
  return (req, res, session) => {
    const refusal = freshAuthRefusal(session as Session, maxAgeMs)
    return refusal === null ? handler(req, res, session) : onRefused(refusal, req, res, session)
  }
}

/**
 * Express: route middleware, `app.post('/password', requireFreshAuth(5 * 60_000), handler)`. A refusal
 * goes to `next(err)` as a `FreshAuthError` with `status` 403, for the app's error handler.
 */
export function expressFreshAuth(
  maxAgeMs: number,
): (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void {
  checked(maxAgeMs)
  return (req, _res, next) => {
    let refusal: FreshAuthError | null
    try {
      refusal = freshAuthRefusal((req as { session?: Session }).session, maxAgeMs)
    } catch (error) {
      next(error)
      return
    }
    next(refusal === null ? undefined : asHttpError(refusal))
  }
}

/**
 * Fastify: a `preHandler` hook, `{ preHandler: requireFreshAuth(5 * 60_000) }` in a route's options.
 * A refusal is thrown into Fastify's error handling as a `FreshAuthError` with `statusCode` 403.
 */
export function fastifyFreshAuth(
  maxAgeMs: number,
): (request: { readonly session?: unknown }, reply: unknown, done: (error?: Error) => void) => void {
  checked(maxAgeMs)
  return (request, _reply, done) => {
    let refusal: FreshAuthError | null
    try {
      refusal = freshAuthRefusal(request.session as Session | undefined, maxAgeMs)
    } catch (error) {
      done(error as Error)
      return
    }
    if (refusal === null) done()
    else done(asHttpError(refusal))
  }
}

/**
 * Hono: route middleware, `app.post('/password', requireFreshAuth(5 * 60_000), handler)`. A refusal is
 * thrown as a `FreshAuthError` to `app.onError` (Hono's default handler answers 403).
 */
export function honoFreshAuth(
  maxAgeMs: number,
): (c: { get(key: 'session'): unknown }, next: () => Promise<void>) => Promise<void> {
  checked(maxAgeMs)
  return async (c, next) => {
    const refusal = freshAuthRefusal(c.get('session') as Session | undefined, maxAgeMs)
    if (refusal !== null) throw asHttpError(refusal)
    await next()
  }
}

/**
 * Koa: middleware, `router.post('/password', requireFreshAuth(5 * 60_000), handler)`. A refusal is
 * thrown into Koa's error handling as a `FreshAuthError` with `status` 403 and `expose`.
 */
export function koaFreshAuth(
  maxAgeMs: number,
): (ctx: { readonly session?: unknown }, next: () => Promise<unknown>) => Promise<void> {
  checked(maxAgeMs)
  return async (ctx, next) => {
    const refusal = freshAuthRefusal(ctx.session as Session | undefined, maxAgeMs)
    if (refusal !== null) throw asHttpError(refusal)
    await next()
  }
}

/**
 * The fresh-authentication guard (OWASP ASVS V7.5), one per front door: `requireFreshAuth(maxAgeMs)`
 * lets a route through only when the signed-in user proved who they are (`login`, or
 * `session.reauthenticate()`) at most `maxAgeMs` ago, by the manager's clock. Otherwise it raises a
 * `FreshAuthError` (403, reason `not-signed-in` or `reauthentication-required`) the way each
 * framework hands errors to the app, so the app can catch it and show "confirm your password".
 *
 * The guards are typed by shape, not by the frameworks' types (nor node's: `latchkey/hono` must
 * compile without them), so each adapter re-exports its own without making the others' types a
 * dependency of its declarations. node:http's, which wraps a handler, lives in `node.ts`.
 */
import { ConfigError, FreshAuthError } from '../core/errors.js'
import type { Session } from '../core/session.js'
import { checkMaxAge } from '../core/session.js'
import { asHttpError } from './kernel.js'

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
export function checked(maxAgeMs: number): number {
  try {
    checkMaxAge(maxAgeMs)
  } catch (error) {
    throw new ConfigError('requireFreshAuth(maxAgeMs)', (error as Error).message.replace(/^latchkey: /, ''))
  }
  return maxAgeMs
}

/**
 * Express: route middleware, `app.post('/password', requireFreshAuth(5 * 60_000), handler)`. A refusal
 * goes to `next(err)` as a `FreshAuthError` with `status` 403, for the app's error handler.
 */
export function expressFreshAuth(
  maxAgeMs: number,
): (req: object, res: unknown, next: (error?: unknown) => void) => void {
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

/**
 * latchkey for Fastify 5: `app.register(latchkey, { manager })`, then `request.session` in every route
 * of the scope it is registered in (and its children: the plugin is wrapped with fastify-plugin).
 *
 * The session is loaded in `onRequest` and committed in `onSend`, which Fastify runs before any byte
 * of every reply leaves: `reply.send`, `reply.redirect`, a stream, `HEAD`. A reply that bypasses
 * `onSend` (`reply.hijack()`, writing to `reply.raw`) is not committed. Errors are thrown into
 * Fastify's error handling with `statusCode` set (503 and `Retry-After` for a store that is down).
 */
import type { FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import { createCsrfGuard, DEFAULT_MAX_BODY_BYTES, isCsrfError } from '../csrf/index.js'
import { requireDriver } from '../stores/driver.js'
import { NodeCsrfRequest } from './csrf-request.js'
import { asHttpError, commitCookies, commitHeaders, DISCARDED } from './shared.js'

/**
 * The data of `request.session`. Untyped by default: cast (`request.session as Session<Data>`), or
 * merge your keys in once: `declare module 'latchkey/fastify' { interface FastifySessionData { cart: string[] } }`.
 */
export interface FastifySessionData {
  [key: string]: unknown
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The latchkey session (null only in `onRequest` hooks that run before latchkey's). */
    session: Session<FastifySessionData>
  }
  interface FastifyContextConfig {
    /** `false`: this route skips latchkey's CSRF check (a webhook that authenticates by signature). */
    csrf?: boolean
  }
}

/** Options of the Fastify plugin. */
export interface FastifySessionsOptions<T extends SessionData = SessionData> {
  /** The session manager. Required. */
  manager: SessionManager<T>
  /**
   * The CSRF check, run in `preParsing` (before Fastify's body parser) on every unsafe request (see
   * `CsrfOptions`); on by default. A failure is thrown as a `CsrfError` with `statusCode` 403 (413 for
   * a form body past `maxBodyBytes`) for Fastify's error handler. `false` turns it off for the whole
   * app; a route skips it with `config: { csrf: false }` or by a path in `exempt`.
   */
  csrf?: CsrfOptions | false
}

/** A Fastify request for the CSRF check: `secure` by Fastify's `trustProxy`; a form read from the raw stream. */
class FastifyCsrfRequest extends NodeCsrfRequest {
  constructor(
    private readonly request: FastifyRequest,
    maxBodyBytes: number,
  ) {
    super(request.raw, maxBodyBytes)
  }

  get url(): string {
    return this.request.raw.url ?? '/'
  }

  get secure(): boolean {
    return this.request.protocol === 'https'
  }

  protected parsedBody(): unknown {
    return this.request.body
  }
}

/** Where a request is: its session loaded, its handler failed (nothing to save), or its commit done. */
const LOADED = 0
const FAILED = 1
const DONE = 2
const PHASE = Symbol('latchkey.phase')

type Tracked = { session: Session | null; [PHASE]: number }

function applyCommit(reply: FastifyReply, result: CommitResult): void {
  for (const cookie of commitCookies(result)) reply.header('set-cookie', cookie)
  const vary = reply.getHeader('vary')
  for (const [name, value] of commitHeaders(result, vary === undefined ? undefined : String(vary))) {
    reply.header(name, value)
  }
}

const plugin: FastifyPluginCallback<FastifySessionsOptions> = (fastify, options, done) => {
  const manager = options.manager as SessionManager<SessionData> | undefined
  if (!manager || typeof manager.load !== 'function') {
    done(new TypeError('latchkey: register the plugin with { manager }, a SessionManager'))
    return
  }
  const guard = createCsrfGuard(manager, options.csrf ?? {})
  const maxBodyBytes = guard.options?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  fastify.decorateRequest('session', null as unknown as Session<FastifySessionData>)
  fastify.decorateRequest(PHASE, LOADED)

  fastify.addHook('onRequest', (request, _reply, next) => {
    const facts = { cookie: request.headers.cookie, userAgent: request.headers['user-agent'] }
    let session: Session | null
    try {
      session = manager.loadSync(facts)
    } catch (error) {
      next(asHttpError(error as Error))
      return
    }
    if (session !== null) {
      request.session = session
      next()
      return
    }
    manager.load(facts).then(
      (loaded) => {
        request.session = loaded
        next()
      },
      (error: Error) => next(asHttpError(error)),
    )
  })

  if (guard.options !== null) {
    // Before Fastify's parser: a form's token is read from the stream, which is then put back for
    // the parser, so `maxBodyBytes` holds and no content type is refused before the check.
    fastify.addHook('preParsing', (request, _reply, payload, next) => {
      if (request.routeOptions.config?.csrf === false) {
        next(null, payload)
        return
      }
      const csrfRequest = new FastifyCsrfRequest(request, maxBodyBytes)
      if (!guard.applies(csrfRequest)) {
        next(null, payload)
        return
      }
      guard.check(request.session, csrfRequest).then(
        () => next(null, payload),
        (error: Error) => next(asHttpError(error)),
      )
    })
  }

  // Runs for any error before the reply is sent (a handler's, a hook's, a failed commit's): the
  // request's session changes are not saved, as `withSessions` does for a handler that throws. A
  // failed CSRF check is not one: the handler never ran, and the error page may show a new token.
  fastify.addHook('onError', (request, _reply, error, next) => {
    const tracked = request as unknown as Tracked
    if (tracked[PHASE] === LOADED && !isCsrfError(error)) tracked[PHASE] = FAILED
    next()
  })

  fastify.addHook('onSend', (request, reply, payload, next) => {
    const tracked = request as unknown as Tracked
    const session = tracked.session
    const phase = tracked[PHASE]
    if (session === null || phase === DONE) {
      next(null, payload)
      return
    }
    tracked[PHASE] = DONE
    if (phase === FAILED) {
      applyCommit(reply, DISCARDED)
      next(null, payload)
      return
    }
    let result: CommitResult | null
    try {
      result = manager.commitSync(session)
    } catch (error) {
      next(asHttpError(error as Error))
      return
    }
    if (result !== null) {
      applyCommit(reply, result)
      next(null, payload)
      return
    }
    manager.commit(session).then(
      (committed) => {
        applyCommit(reply, committed)
        next(null, payload)
      },
      (error: Error) => next(asHttpError(error)),
    )
  })
  done()
}

/**
 * The latchkey plugin for Fastify 5: `app.register(latchkey, { manager })`. Decorates requests with
 * `session`; a store that fails answers 503 through Fastify's error handler; a handler that fails saves
 * none of its session changes.
 */
// fastify-plugin is loaded like a store's driver: a project without it gets a ConfigError naming it.
const fp = requireDriver<typeof import('fastify-plugin')>('fastify-plugin', 'latchkey/fastify')
const latchkey = fp(plugin, { fastify: '5.x', name: 'latchkey' }) as FastifyPluginCallback<
  FastifySessionsOptions<SessionData>
> &
  (<T extends SessionData>(...args: Parameters<FastifyPluginCallback<FastifySessionsOptions<T>>>) => void)

export default latchkey
export { latchkey }

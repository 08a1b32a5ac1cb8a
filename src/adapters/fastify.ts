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
import { requireDriver } from '../core/optional-peer.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import { isCsrfError } from '../csrf/index.js'
import type { HeaderAccess, NodeRequestView } from './kernel.js'
import { applyCommit, asHttpError, checkAdapterOptions, FrontDoor, NodeCsrfRequest } from './kernel.js'

/** The default of `csrf.maxBodyBytes`: 1 MiB. */
export { DEFAULT_MAX_BODY_BYTES } from '../csrf/index.js'

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

/** Where Fastify keeps the request target, its `trustProxy` verdict, and a parsed body. */
const FASTIFY_VIEW: NodeRequestView<FastifyRequest> = {
  url: (request) => request.raw.url ?? '/',
  secure: (request) => request.protocol === 'https',
  parsedBody: (request) => request.body,
}

/** A reply's headers: Fastify keeps them until the reply is sent, and appends to `set-cookie` itself. */
const REPLY_HEADERS: HeaderAccess<FastifyReply> = {
  get: (reply, name) => reply.getHeader(name),
  set: (reply, name, value) => {
    reply.header(name, value)
  },
  appendCookie: (reply, cookie) => {
    reply.header('set-cookie', cookie)
  },
}

/** Where a request is: its session loaded, its handler failed (nothing to save), or its commit done. */
const LOADED = 0
const FAILED = 1
const DONE = 2
const PHASE = Symbol('latchkey.phase')

type Tracked = { session: Session | null; [PHASE]: number }

/** The plugin's options, and those Fastify's `register` takes in the same object. */
const FASTIFY_OPTIONS = ['manager', 'csrf', 'prefix', 'logLevel', 'logSerializers']

const plugin: FastifyPluginCallback<FastifySessionsOptions> = (fastify, options, done) => {
  const manager = options.manager as SessionManager<SessionData> | undefined
  if (!manager || typeof manager.load !== 'function') {
    done(new TypeError('latchkey: register the plugin with { manager }, a SessionManager'))
    return
  }
  try {
    // Fastify's own register options (prefix, logLevel, ...) come in the same object.
    checkAdapterOptions(options, FASTIFY_OPTIONS, 'the latchkey plugin of latchkey/fastify')
  } catch (error) {
    done(error as Error)
    return
  }
  const door = new FrontDoor(manager, options.csrf)
  fastify.decorateRequest('session', null as unknown as Session<FastifySessionData>)
  fastify.decorateRequest(PHASE, LOADED)

  fastify.addHook('onRequest', (request, _reply, next) => {
    let loaded: Session | Promise<Session>
    try {
      loaded = door.load(request.headers.cookie, request.headers['user-agent'])
    } catch (error) {
      next(asHttpError(error as Error))
      return
    }
    if (!(loaded instanceof Promise)) {
      request.session = loaded
      next()
      return
    }
    loaded.then(
      (session) => {
        request.session = session
        next()
      },
      (error: Error) => next(asHttpError(error)),
    )
  })

  if (door.checksCsrf) {
    // Before Fastify's parser: a form's token is read from the stream, which is then put back for
    // the parser, so `maxBodyBytes` holds and no content type is refused before the check.
    fastify.addHook('preParsing', (request, _reply, payload, next) => {
      // A route opts out with `config: { csrf: false }`.
      const check =
        request.routeOptions.config?.csrf === false ||
        !door.checksNode(request.raw, FASTIFY_VIEW.url(request))
          ? null
          : door.check(
              request.session,
              new NodeCsrfRequest(request, request.raw, FASTIFY_VIEW, door.maxBodyBytes),
            )
      if (check === null) {
        next(null, payload)
        return
      }
      check.then(
        () => next(null, payload),
        (error: Error) => next(asHttpError(error)),
      )
    })
  }

  // Runs for any error before the reply is sent (a handler's, a hook's, a failed commit's): the
  // request's session changes are not saved, as `withSessions` does for a handler that throws, but the
  // ends it asked for are (a logout, the old ID of a login or regenerate: ends fail closed). A
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
    let outcome: CommitResult | Promise<CommitResult>
    try {
      outcome = phase === FAILED ? door.abandon(session) : door.commit(session)
    } catch (error) {
      next(asHttpError(error as Error))
      return
    }
    if (!(outcome instanceof Promise)) {
      applyCommit(REPLY_HEADERS, reply, outcome)
      next(null, payload)
      return
    }
    outcome.then(
      (result) => {
        applyCommit(REPLY_HEADERS, reply, result)
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
export { fastifyFreshAuth as requireFreshAuth } from './fresh-auth.js'
export { latchkey }

/**
 * latchkey for node:http (and anything built on its request and response objects).
 *
 * `withSessions(manager, handler)` loads the session, runs the handler, and commits the session before
 * any byte of the response leaves, even when the handler writes the response itself: the first
 * `writeHead`/`write`/`end`/`flushHeaders` is held until the commit is done.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { CsrfError, FreshAuthError } from '../core/errors.js'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import { DEFAULT_MAX_BODY_BYTES, isCsrfError } from '../csrf/index.js'
import { peekBody } from './body.js'
import { checked, freshAuthRefusal } from './fresh-auth.js'
import type { Committer, HeldResponse } from './hold.js'
import { holdUntilCommitted } from './hold.js'
import type { NodeRequestView } from './kernel.js'
import {
  checkAdapterOptions,
  csrfAnswer,
  encrypted,
  FrontDoor,
  freshAuthAnswer,
  logError,
  NodeCsrfRequest,
  sendAnswer,
  sendFailure,
} from './kernel.js'

/** The two kinds of form body a token is read from (`urlencoded`, `multipart`). */
export type { FormKind } from '../csrf/index.js'
/**
 * For reading a form after {@link readBody}, or in a front door of your own: the default body limit
 * (1 MiB, `csrf.maxBodyBytes` and `readBody`'s `maxBytes`), a content type's form kind, a form's fields.
 */
export { DEFAULT_MAX_BODY_BYTES, formKind, parseFormFields } from '../csrf/index.js'
/** Sessions and the origin check on WebSocket (and other) upgrades, which no middleware sees. */
export * from './upgrade.js'

/** A node:http handler that also receives the session. */
export type SessionHandler<T extends SessionData, Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
  session: Session<T>,
) => unknown

/** Options of {@link withSessions}. */
export interface NodeAdapterOptions<
  T extends SessionData = SessionData,
  Req extends IncomingMessage = IncomingMessage,
> {
  /** Called with errors the adapter answered itself (store down: 503, handler threw: 500). Default `console.error`. */
  onError?: (error: unknown) => void
  /**
   * The CSRF check, run before the handler on every unsafe request (see `CsrfOptions`); on by
   * default. `false` turns it off for the whole app; to let one route through, use `exempt`.
   */
  csrf?: CsrfOptions | false
  /**
   * Answers a request that failed the CSRF check, instead of the handler: `error.status` is 403 (413
   * for `body-too-large`), `error.reason` says why, and `session` can make a new token to show the form
   * again. The session is committed as for the handler. Default: a short plain-text page with that status.
   */
  onCsrfError?: (error: CsrfError, req: Req, res: ServerResponse, session: Session<T>) => unknown
}

/**
 * The request's body, at most `maxBytes` (default 1 MiB; past it, rejects with a `CsrfError`
 * `body-too-large`, status 413): the bytes the CSRF check already read (it reads a form body when the
 * token is not in the header), or read now. Either way the bytes are put back into `req`, so reading
 * the stream yourself (or with busboy, formidable...) works as well. Parse a form with
 * `new URLSearchParams(body.toString())` or `parseFormFields(body, req.headers['content-type'])`.
 */
export function readBody(req: IncomingMessage, options: { maxBytes?: number } = {}): Promise<Buffer> {
  return peekBody(req, options.maxBytes ?? DEFAULT_MAX_BODY_BYTES)
}

/** Where node:http keeps the request target and the scheme; no parser runs before the check. */
const NODE_VIEW: NodeRequestView<IncomingMessage> = {
  url: (req) => req.url ?? '/',
  secure: encrypted,
}

/** The default answer to a failed CSRF check: its status, a short plain-text reason, nothing cached. */
function sendCsrfFailure(error: CsrfError, _req: IncomingMessage, res: ServerResponse): void {
  sendAnswer(res, csrfAnswer(error))
}

/**
 * Wraps a node:http handler with sessions: `http.createServer(withSessions(manager, handler))`.
 * A failing store answers 503 (the handler never runs with a missing session); a handler that throws
 * before responding answers 500 and its session changes are not saved (but a logout, or the end of the ID
 * a login or `regenerate` replaces, is applied: ends fail closed). A handler that throws after
 * its response started gets the commit and its output finished, then an unfinished response is
 * aborted (socket destroyed); one it had already ended is left alone. `onError` hears of it once.
 *
 * With a store that answers synchronously (MemoryStore, SqliteStore) the common request is loaded,
 * handled and committed without waiting on a promise; anything unusual takes the asynchronous path.
 * The returned promise settles when the adapter is done with the request.
 */
export function withSessions<T extends SessionData, Req extends IncomingMessage = IncomingMessage>(
  manager: SessionManager<T>,
  handler: SessionHandler<T, Req>,
  options: NodeAdapterOptions<T, Req> = {},
): (req: Req, res: ServerResponse) => Promise<void> {
  checkAdapterOptions(options, ['csrf', 'onError', 'onCsrfError'], 'withSessions() of latchkey/node')
  const door = new FrontDoor(manager, options.csrf)
  const onError = options.onError ?? logError
  const onCsrfError = options.onCsrfError ?? sendCsrfFailure
  const committer: Committer<Session<T>> = {
    commit: (session) => door.commit(session),
    fail: (res, error) => {
      onError(error)
      sendFailure(res, error)
    },
  }
  /** The handler, after the CSRF check when the request needs one (synchronously when it does not). */
  const run = (req: Req, res: ServerResponse, session: Session<T>): unknown => {
    // The common GET needs no request object for the check to say no.
    const check = door.checksNode(req, NODE_VIEW.url(req))
      ? door.check(session, new NodeCsrfRequest(req, req, NODE_VIEW, door.maxBodyBytes))
      : null
    if (check === null) return handler(req, res, session)
    return check.then(
      () => handler(req, res, session),
      (error: unknown) => {
        if (!isCsrfError(error)) throw error
        for (const [name, value] of Object.entries(csrfAnswer(error).headers)) res.setHeader(name, value)
        return onCsrfError(error, req, res, session)
      },
    )
  }
  const failed = async (
    res: ServerResponse,
    held: HeldResponse,
    session: Session<T>,
    error: unknown,
  ): Promise<void> => {
    onError(error)
    if (held.phase === 'waiting') {
      // Nothing has left yet: drop the request's data changes, apply the ends it asked for, answer 500.
      held.phase = 'open'
      let ended: CommitResult
      try {
        const outcome = door.abandon(session)
        ended = outcome instanceof Promise ? await outcome : outcome
      } catch (storeError) {
        onError(storeError)
        sendFailure(res, storeError)
        return
      }
      sendFailure(res, error, ended)
      return
    }
    // The response started: let the commit and the held output finish, then end what is left open.
    await held.settled
    if (!res.writableEnded && !res.destroyed) sendFailure(res, error)
  }
  const serve = (req: Req, res: ServerResponse, session: Session<T>): Promise<void> => {
    const held = holdUntilCommitted(res, session, committer)
    let outcome: unknown
    try {
      outcome = run(req, res, session)
    } catch (error) {
      return failed(res, held, session, error)
    }
    if (!isThenable(outcome)) return DONE
    return Promise.resolve(outcome).then(noop, (error: unknown) => failed(res, held, session, error))
  }
  return (req, res) => {
    let loaded: Session<T> | Promise<Session<T>>
    try {
      loaded = door.load(req.headers.cookie, req.headers['user-agent'])
    } catch (error) {
      committer.fail(res, error)
      return DONE
    }
    if (!(loaded instanceof Promise)) return serve(req, res, loaded)
    return loaded.then(
      (session) => serve(req, res, session),
      (error: unknown) => committer.fail(res, error),
    )
  }
}

const DONE: Promise<void> = Promise.resolve()

function noop(): void {}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

/** Options of the node:http guard. */
export interface FreshAuthOptions<T extends SessionData, Req extends IncomingMessage> {
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
export function requireFreshAuth<T extends SessionData, Req extends IncomingMessage = IncomingMessage>(
  maxAgeMs: number,
  handler: (req: Req, res: ServerResponse, session: Session<T>) => unknown,
  options: FreshAuthOptions<T, Req> = {},
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

/**
 * What every front door does, written once: the request facts, the session loaded (synchronously
 * when the store can answer so, else asynchronously), the CSRF check with its body limit, the commit
 * (the same way round), the commit's headers put on a response, and the answer latchkey gives itself
 * for its errors. An adapter only binds these to its framework. No session rule lives here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { ConfigError, isUnavailableError } from '../core/errors.js'
import { refuseUnknownOptions } from '../core/known-options.js'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfGuard, CsrfOptions, CsrfRequest, FormLimits } from '../csrf/index.js'
import {
  createCsrfGuard,
  DEFAULT_MAX_BODY_BYTES,
  formKind,
  formScan,
  isPlainlySafe,
  leftBodyUnread,
} from '../csrf/index.js'
import { parsedFields, peekUntil } from './body.js'

/**
 * Refuses an adapter's options it does not know (a `ConfigError` naming the nearest known one), and
 * anything but an object: `owner` is the factory, as the user calls it (`sessions() of latchkey/koa`).
 */
export function checkAdapterOptions(options: unknown, known: readonly string[], owner: string): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new ConfigError('options', `${owner} takes an object of options`)
  refuseUnknownOptions(options, known, { owner, hints: ADAPTER_HINTS })
}

/** express-session's options, said where a user brings them to an adapter. */
const ADAPTER_HINTS = {
  secret:
    'the session options (keys, cookie, timeouts) belong to createSessionManager, whose manager the adapter takes',
  store: 'the store is an option of createSessionManager, whose manager the adapter takes',
  cookie: 'cookie is an option of createSessionManager, whose manager the adapter takes',
  name: 'the cookie is named by cookie.name, an option of createSessionManager',
  resave: 'latchkey writes a session only when it changed, by compare-and-set, so no write is lost',
  saveUninitialized: 'latchkey stores a new session only once it holds something',
  rolling: 'idle expiry always rolls with activity (idleTimeoutMs, an option of createSessionManager)',
  manager: 'pass the manager as the first argument',
}

/** One manager behind one adapter, with its CSRF check: built once per app, used for every request. */
export class FrontDoor<T extends SessionData> {
  /** The CSRF check (`csrf: false` gives one that checks nothing). */
  readonly guard: CsrfGuard<T>
  /** Whether the CSRF check is on: when not, no request for it need be built. */
  readonly checksCsrf: boolean
  /** The largest form body read to find a token, in bytes. */
  readonly maxBodyBytes: number

  constructor(
    readonly manager: SessionManager<T>,
    csrf: CsrfOptions | false | undefined,
  ) {
    this.guard = createCsrfGuard(manager, csrf ?? {})
    this.checksCsrf = this.guard.options !== null
    this.maxBodyBytes = this.guard.options?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  }

  /**
   * The session of a request with these headers: the session itself when the store answered
   * synchronously (no promise made), else a promise. A store failure throws, or rejects.
   */
  load(cookie: string | undefined, userAgent: string | undefined): Session<T> | Promise<Session<T>> {
    const facts = { cookie, userAgent }
    return this.manager.loadSync(facts) ?? this.manager.load(facts)
  }

  /**
   * Whether a request built on node's (this method, these headers, this target as received) needs
   * its CSRF request built and checked: not when the check is off, nor for a plain GET, HEAD or
   * OPTIONS that the check would let through anyway (see `isPlainlySafe`), the common case.
   */
  checksNode(req: IncomingMessage, url: string): boolean {
    return this.checksCsrf && !isPlainlySafe(req.method, req.headers, url)
  }

  /**
   * The CSRF check of `request` for `session`, or `null` when none is due (a safe or exempt
   * request): then there is nothing to wait for. Rejects with a `CsrfError` when the check fails.
   */
  check(session: Session<T>, request: CsrfRequest): Promise<void> | null {
    if (!this.guard.applies(request)) return null
    const checked = this.guard.check(session, request)
    const { lingerAfterAnswer } = request as Partial<Lingering>
    if (lingerAfterAnswer === undefined) return checked
    return checked.catch((error: unknown) => {
      if (closesConnection(error)) lingerAfterAnswer.call(request)
      throw error
    })
  }

  /** Commits `session`: the result itself when it was written synchronously, else a promise. */
  commit(session: Session<T>): CommitResult | Promise<CommitResult> {
    return this.manager.commitSync(session) ?? this.manager.commit(session)
  }

  /**
   * The commit of a request whose handler failed: its data changes dropped, the ends it asked for
   * applied (see `SessionManager.abandon`). The result itself when no end was due, else a promise.
   */
  abandon(session: Session<T>): CommitResult | Promise<CommitResult> {
    return this.manager.abandonSync(session) ?? this.manager.abandon(session)
  }
}

/** Where a framework built on node's request keeps what the CSRF check reads besides headers. */
export interface NodeRequestView<R> {
  /** The request target as received (before any router rewrote it). */
  url(request: R): string
  /** Over TLS, or a proxy the framework trusts says so. */
  secure(request: R): boolean
  /** The body as the framework's parser left it; absent where no parser runs before the check (node:http). */
  parsedBody?(request: R): unknown
}

/**
 * A node request (node:http, Express, Fastify, Koa) as the CSRF check sees it: `source` is the
 * framework's request object, `req` node's underneath, `view` where the framework keeps the rest.
 */
export class NodeCsrfRequest<R> implements CsrfRequest, Lingering {
  constructor(
    private readonly source: R,
    private readonly req: IncomingMessage,
    private readonly view: NodeRequestView<R>,
    private readonly maxBodyBytes: number,
  ) {}

  get method(): string {
    return this.req.method ?? 'GET'
  }

  get url(): string {
    return this.view.url(this.source)
  }

  get secure(): boolean {
    return this.view.secure(this.source)
  }

  get host(): string | undefined {
    return this.req.headers.host ?? this.req.headers[':authority']?.toString()
  }

  header(name: string): string | undefined {
    const value = this.req.headers[name]
    return Array.isArray(value) ? value.join(', ') : value
  }

  /**
   * The form's string fields: from the framework's parsed body when a parser has read the stream
   * already, else read from the stream and parsed as the bytes arrive, only as far as `limits` say
   * (at most `maxBodyBytes`); the bytes read are put back for whatever reads the body later, and the
   * rest is left in the stream.
   */
  async form(limits?: FormLimits): Promise<Readonly<Record<string, string>> | null> {
    const type = this.req.headers['content-type']
    if (formKind(type) === null) return null
    if (this.view.parsedBody !== undefined && this.req.readableEnded) {
      return parsedFields(this.view.parsedBody(this.source))
    }
    const scan = formScan(type, limits)
    let ended: boolean
    try {
      ended = await peekUntil(this.req, this.maxBodyBytes, (chunk) => scan.write(chunk))
    } catch (error) {
      scan.finish(false).catch(() => {})
      throw error
    }
    return scan.finish(ended)
  }

  /** Part of the body is still on the wire (node has not received all of it). */
  bodyPending(): boolean {
    return !this.req.complete
  }

  /** The connection, closed after a refusal, stays open a moment first: see {@link lingerAfterAnswer}. */
  lingerAfterAnswer(): void {
    lingerAfterAnswer(this.req)
  }
}

/** A request whose connection can wait for its answer to arrive before closing (node's socket under it). */
export interface Lingering {
  /** See {@link lingerAfterAnswer}. */
  lingerAfterAnswer(): void
}

/** How long a connection closed after a refusal stays open once the answer is sent, in ms. */
export const LINGER_MS = 2000

const LINGERING = new WeakSet<Socket>()

/**
 * Closes `socket` a moment after the answer instead of at once, for a request answered with
 * `Connection: close` while its body was still arriving. Closing a socket with unread bytes makes the
 * kernel reset the connection, and a client still sending its body (a browser, curl, node's own
 * client) then loses the answer it had received: it sees "connection reset" instead of the 403 or 413.
 * node closes such a connection through `socket.destroySoon()`; on this socket that now sends the end
 * of the answer, stops reading (the rest of the body is never read nor parsed, and so the client's own
 * close is not seen either), and destroys the socket {@link LINGER_MS} later. The cost is one open
 * socket, and the kernel's buffers of what the client sent meanwhile, per refused request for that long.
 */
export function lingerAfterAnswer(req: IncomingMessage): void {
  const socket = req.socket as Socket | null
  if (socket === null || LINGERING.has(socket)) return
  LINGERING.add(socket)
  // node dumps an unread request once its answer is sent (it resumes it on the next tick), and a
  // flowing request reads its socket: pausing both, now and once that tick has passed, keeps the
  // rest of the body unread.
  const stop = (): void => {
    req.pause()
    socket.pause()
  }
  socket.destroySoon = function lingering(this: Socket): void {
    this.end()
    stop()
    setImmediate(stop)
    const timer = setTimeout(() => this.destroy(), LINGER_MS)
    timer.unref()
    this.once('close', () => clearTimeout(timer))
  }
}

/** Whether latchkey answers this CSRF refusal with `Connection: close` (see {@link csrfAnswer}). */
function closesConnection(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  return (error as { status?: unknown }).status === 413 || leftBodyUnread(error)
}

/** Whether a node request arrived over TLS. */
export function encrypted(req: IncomingMessage): boolean {
  return (req.socket as TLSSocket | null)?.encrypted === true
}

/**
 * How to read and write one kind of response's headers, given the response: one static object per
 * kind, so that putting a commit's headers on a response allocates nothing for it.
 */
export interface HeaderAccess<R> {
  /** The current value of a header, by its lower-case name. */
  get(target: R, name: string): unknown
  /** Sets a header, replacing any value it had (under any case of its name). */
  set(target: R, name: string, value: string): void
  /** Adds one `Set-Cookie` after those the response has. */
  appendCookie(target: R, cookie: string): void
}

/**
 * Puts a commit's headers on a response: its cookies after the response's own (the session's, then
 * the CSRF pre-session cookie), `Cache-Control: no-store` in place of the response's, `Cookie` added
 * to its `Vary`, and `Clear-Site-Data`.
 */
export function applyCommit<R>(access: HeaderAccess<R>, target: R, result: CommitResult): void {
  if (result.setCookie !== null) access.appendCookie(target, result.setCookie)
  if (result.csrfCookie !== undefined) access.appendCookie(target, result.csrfCookie)
  if (result.private) {
    access.set(target, 'Cache-Control', 'no-store')
    const vary = access.get(target, 'vary')
    const value = vary === undefined || vary === null ? '' : String(vary)
    // A Vary that names Cookie already (or is `*`) is left as it is.
    if (!/(^|,)\s*(cookie|\*)\s*(,|$)/i.test(value))
      access.set(target, 'Vary', value ? `${value}, Cookie` : 'Cookie')
  }
  if (result.clearSiteData !== undefined) access.set(target, 'Clear-Site-Data', result.clearSiteData)
}

/** Headers of a node response (node:http, Express, Koa) before they are sent. */
export const NODE_HEADERS: HeaderAccess<ServerResponse> = {
  get: (res, name) => res.getHeader(name),
  set: (res, name, value) => {
    res.setHeader(name, value)
  },
  appendCookie: (res, cookie) => {
    // A copy: node's appendHeader would push into an array the app set, and may reuse for every response.
    const existing = res.getHeader('set-cookie')
    const cookies = existing === undefined ? [] : Array.isArray(existing) ? [...existing] : [String(existing)]
    cookies.push(cookie)
    res.setHeader('Set-Cookie', cookies)
  },
}

/** Web-standard response headers (Hono): cookies are appended, so each one keeps its own `Set-Cookie`. */
export const WEB_HEADERS: HeaderAccess<Headers> = {
  get: (headers, name) => headers.get(name),
  set: (headers, name, value) => headers.set(name, value),
  appendCookie: (headers, cookie) => headers.append('Set-Cookie', cookie),
}

/** latchkey's own answer to one of its errors: a status, the headers that go with it, a plain-text page. */
export interface FailureAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly message: string
}

/** The answer for a store that is down or a conflict that lasted: try again shortly. */
const UNAVAILABLE: FailureAnswer = Object.freeze({
  status: 503,
  headers: Object.freeze({ 'Retry-After': '1', 'Cache-Control': 'no-store' }),
  message: 'Service unavailable: the session store is not answering. Please try again shortly.\n',
})

const INTERNAL: FailureAnswer = Object.freeze({
  status: 500,
  headers: Object.freeze({}),
  message: 'Internal server error.\n',
})

/** The answer to a sign-in past `maxSessionsPerUser` that was refused (`ERR_LATCHKEY_SESSION_CAP`). */
const SESSION_CAP: FailureAnswer = Object.freeze({
  status: 403,
  headers: Object.freeze({}),
  message:
    'Forbidden: this account has as many sessions signed in as it may have. Sign out on another device and sign in again.\n',
})

/** The answer to a route refused by the fresh-authentication guard (`ERR_LATCHKEY_FRESH_AUTH`), by its reason. */
export function freshAuthAnswer(error: { readonly reason?: unknown }): FailureAnswer {
  return {
    status: 403,
    headers: {},
    message:
      error.reason === 'not-signed-in'
        ? 'Forbidden: sign in first (not-signed-in).\n'
        : 'Forbidden: confirm who you are to continue (reauthentication-required).\n',
  }
}

/** latchkey's answer to an error the adapter answers itself: 503, 403 for a refused sign-in, else 500. */
function failureAnswer(error: unknown): FailureAnswer {
  if (isUnavailableError(error)) return UNAVAILABLE
  return codeOf(error) === 'ERR_LATCHKEY_SESSION_CAP' ? SESSION_CAP : INTERNAL
}

/** The `code` of an error-like value, or `undefined`. */
function codeOf(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
}

/**
 * The answer to a failed CSRF check: its status (403, or 413 for a form body too large) and reason.
 * After a 413, and after any refusal that left part of the body unread (refused before the body was
 * read, or before its end: see `leftBodyUnread`), the connection closes: node would otherwise
 * receive and discard the rest of a body the client chose (up to `maxBodyBytes` and beyond) to keep
 * the connection for another request.
 */
export function csrfAnswer(error: { readonly status?: unknown; readonly reason?: unknown }): FailureAnswer {
  const status = typeof error.status === 'number' ? error.status : 403
  const close = closesConnection(error)
  if (status === 413) {
    return {
      status,
      headers: { Connection: 'close' },
      message: 'Payload too large: the form is bigger than this site accepts.\n',
    }
  }
  return {
    status,
    headers: close ? { Connection: 'close' } : {},
    message: `Forbidden: this request was refused as a possible cross-site request forgery (${String(error.reason)}). Reload the page and try again.\n`,
  }
}

/** Writes `answer` as the whole response: its status, a short plain-text page, nothing cached. */
export function sendAnswer(res: ServerResponse, answer: FailureAnswer): void {
  res.writeHead(answer.status, STATUS_CODES[answer.status], {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
    ...answer.headers,
  })
  res.end(answer.message)
}

/**
 * Answers a request that the adapter itself must fail (store down, conflict, handler crash): 503 for
 * an unavailable store or a lasting conflict (by error code), 500 otherwise, with the headers of
 * `ended` (the failed request's {@link FrontDoor.abandon}: a cleared cookie). A response whose head has
 * already gone, or that cannot be answered, is destroyed instead. Never throws.
 */
export function sendFailure(res: ServerResponse, error: unknown, ended?: CommitResult): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  try {
    for (const name of res.getHeaderNames()) res.removeHeader(name)
    if (ended !== undefined) applyCommit(NODE_HEADERS, res, ended)
    sendAnswer(res, failureAnswer(error))
  } catch {
    res.destroy()
  }
}

/** The HTTP fields frameworks read off an error (http-errors' convention, and Hono's `getResponse`). */
export interface HttpErrorFields {
  readonly status: number
  readonly statusCode: number
  /** Whether the message may be shown to the client (Koa). */
  readonly expose: boolean
  readonly headers: Readonly<Record<string, string>>
  /** Hono's default error handler answers with this. */
  getResponse(): Response
}

/**
 * Gives a latchkey error the fields Express, Fastify, Koa and Hono read to answer it: a store failure
 * or a lasting conflict becomes 503 with `Retry-After: 1`, a `CsrfError` its own `status` (403, or
 * 413), a `FreshAuthError` and a sign-in refused by `maxSessionsPerUser` 403. The error keeps its class and identity, so the app's error handler can still test
 * `instanceof CsrfError`. Fields the error already has are kept; any other error is returned as it is.
 */
export function asHttpError<E>(error: E): E {
  if (typeof error !== 'object' || error === null || !Object.isExtensible(error)) return error
  let answer: FailureAnswer
  const code = codeOf(error)
  if (isUnavailableError(error)) answer = UNAVAILABLE
  else if (code === 'ERR_LATCHKEY_CSRF') answer = csrfAnswer(error)
  else if (code === 'ERR_LATCHKEY_FRESH_AUTH') answer = freshAuthAnswer(error)
  else if (code === 'ERR_LATCHKEY_SESSION_CAP') answer = SESSION_CAP
  else return error
  const { status, headers, message } = answer
  const fields: HttpErrorFields = {
    status,
    statusCode: status,
    expose: status < 500,
    headers: { ...headers },
    getResponse: () =>
      new Response(message, {
        status,
        headers: { ...headers, 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' },
      }),
  }
  for (const [name, value] of Object.entries(fields)) {
    if (name in error) continue
    Object.defineProperty(error, name, { value, configurable: true, writable: true, enumerable: false })
  }
  return error
}

/** The default `onError`: the adapter answered the error itself, so it is logged, not lost. */
export function logError(error: unknown): void {
  console.error('latchkey:', error)
}

/** What a middleware that runs the rest of its chain inside itself (Hono, Koa) binds to its framework. */
export interface ChainBinding<T extends SessionData, C> {
  /** The request's `Cookie` header. */
  cookie(ctx: C): string | undefined
  /** The request's `User-Agent` header. */
  userAgent(ctx: C): string | undefined
  /** Hands the session to the rest of the chain. */
  setSession(ctx: C, session: Session<T>): void
  /** The request as the CSRF check sees it (built only when the check is on). */
  csrfRequest(ctx: C, maxBodyBytes: number): CsrfRequest
  /** Whether the CSRF check is due (see {@link FrontDoor.checksNode}); when absent, the check decides. */
  checksCsrf?(door: FrontDoor<T>, ctx: C): boolean
  /** Whether the rest of the chain failed without throwing (Hono records its error on the context). */
  failed?(ctx: C): boolean
  /** Puts a commit's headers on the response. */
  apply(ctx: C, result: CommitResult): void
}

/**
 * One request through a middleware that runs the rest of its chain inside itself: load, the CSRF
 * check, `next()`, commit, the commit's headers. latchkey's errors are thrown as {@link asHttpError}
 * makes them; a chain that failed saves none of its data changes, but the ends it asked for are
 * applied ({@link FrontDoor.abandon}).
 * With a store that answers synchronously, nothing is awaited but `next()`.
 */
export async function aroundChain<T extends SessionData, C>(
  door: FrontDoor<T>,
  binding: ChainBinding<T, C>,
  ctx: C,
  next: () => Promise<unknown>,
): Promise<void> {
  let session: Session<T>
  try {
    const loaded = door.load(binding.cookie(ctx), binding.userAgent(ctx))
    session = loaded instanceof Promise ? await loaded : loaded
  } catch (error) {
    throw asHttpError(error)
  }
  binding.setSession(ctx, session)
  if (binding.checksCsrf?.(door, ctx) ?? door.checksCsrf) {
    const check = door.check(session, binding.csrfRequest(ctx, door.maxBodyBytes))
    if (check !== null) {
      try {
        await check
      } catch (error) {
        throw asHttpError(error)
      }
    }
  }
  try {
    await next()
  } catch (error) {
    const ended = await abandoned(door, session)
    binding.apply(ctx, ended)
    throw carryCookies(error, ended)
  }
  if (binding.failed?.(ctx)) {
    binding.apply(ctx, await abandoned(door, session))
    return
  }
  let result: CommitResult
  try {
    const committed = door.commit(session)
    result = committed instanceof Promise ? await committed : committed
  } catch (error) {
    throw asHttpError(error)
  }
  binding.apply(ctx, result)
}

/** {@link FrontDoor.abandon}, awaited; a store failure is thrown as {@link asHttpError} makes it (503). */
async function abandoned<T extends SessionData>(
  door: FrontDoor<T>,
  session: Session<T>,
): Promise<CommitResult> {
  try {
    const ended = door.abandon(session)
    return ended instanceof Promise ? await ended : ended
  } catch (error) {
    throw asHttpError(error)
  }
}

/**
 * Puts the cookie a failed request's end cleared on its error's `headers` (http-errors' convention),
 * for error handlers that start the response afresh: Koa's removes every header set before, then sets
 * the error's own. The error is returned as it is when it cannot carry them.
 */
function carryCookies<E>(error: E, ended: CommitResult): E {
  if (ended.setCookie === null || typeof error !== 'object' || error === null) return error
  try {
    const own = (error as { headers?: unknown }).headers
    const headers: Record<string, unknown> = typeof own === 'object' && own !== null ? { ...own } : {}
    headers['Set-Cookie'] = ended.setCookie
    if (ended.clearSiteData !== undefined) headers['Clear-Site-Data'] = ended.clearSiteData
    ;(error as { headers?: unknown }).headers = headers
  } catch {
    // A frozen error keeps its headers; the response set them already for handlers that keep them.
  }
  return error
}

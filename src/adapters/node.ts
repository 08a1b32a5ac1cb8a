/**
 * latchkey for node:http (and anything built on its request and response objects).
 *
 * `withSessions(manager, handler)` loads the session, runs the handler, and commits the session before
 * any byte of the response leaves, even when the handler writes the response itself: the first
 * `writeHead`/`write`/`end`/`flushHeaders` is held until the commit is done.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { OutgoingMessage, ServerResponse, STATUS_CODES } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { CsrfError } from '../core/errors.js'
import { isUnavailableError } from '../core/errors.js'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfGuard, CsrfOptions, CsrfRequest } from '../csrf/index.js'
import {
  createCsrfGuard,
  DEFAULT_MAX_BODY_BYTES,
  formKind,
  isCsrfError,
  parseFormFields,
} from '../csrf/index.js'
import { peekBody } from './body.js'

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

/** A node request as the CSRF check sees it. */
class NodeCsrfRequest implements CsrfRequest {
  constructor(
    private readonly req: IncomingMessage,
    private readonly maxBodyBytes: number,
  ) {}

  get method(): string {
    return this.req.method ?? 'GET'
  }

  get url(): string {
    return this.req.url ?? '/'
  }

  get secure(): boolean {
    return (this.req.socket as TLSSocket).encrypted === true
  }

  get host(): string | undefined {
    return this.req.headers.host ?? this.req.headers[':authority']?.toString()
  }

  header(name: string): string | undefined {
    const value = this.req.headers[name]
    return Array.isArray(value) ? value.join(', ') : value
  }

  async form(): Promise<Readonly<Record<string, string>> | null> {
    const type = this.req.headers['content-type']
    if (formKind(type) === null) return null
    return parseFormFields(await readBody(this.req, { maxBytes: this.maxBodyBytes }), type)
  }
}

/** The default answer to a failed CSRF check: its status, a short plain-text reason, nothing cached. */
function sendCsrfFailure(error: CsrfError, _req: IncomingMessage, res: ServerResponse): void {
  const tooLarge = error.status === 413
  res.writeHead(error.status, STATUS_CODES[error.status], {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
  })
  res.end(
    tooLarge
      ? 'Payload too large: the form is bigger than this site accepts.\n'
      : `Forbidden: this request was refused as a possible cross-site request forgery (${error.reason}). Reload the page and try again.\n`,
  )
}

/** A held output call: index into writeHead, write, end, flushHeaders, and its arguments. */
type Held = readonly [number, unknown[]]

/** Puts a commit's headers on a node response (or an Express one, which is the same object). */
export function applyCommitHeaders(res: ServerResponse, result: CommitResult): void {
  if (result.setCookie !== null || result.csrfCookie !== undefined) {
    const existing = res.getHeader('set-cookie')
    const cookies = existing === undefined ? [] : Array.isArray(existing) ? [...existing] : [String(existing)]
    if (result.setCookie !== null) cookies.push(result.setCookie)
    if (result.csrfCookie !== undefined) cookies.push(result.csrfCookie)
    res.setHeader('Set-Cookie', cookies)
  }
  if (result.private) {
    res.setHeader('Cache-Control', 'no-store')
    const vary = res.getHeader('vary')
    const merged = varyCookie(vary)
    if (merged !== vary) res.setHeader('Vary', merged)
  }
  if (result.clearSiteData !== undefined) res.setHeader('Clear-Site-Data', result.clearSiteData)
}

/** A `Vary` value that includes `Cookie` (the same value when it already does, or is `*`). */
function varyCookie(vary: number | string | string[] | undefined): number | string | string[] {
  const values = vary === undefined ? '' : String(vary)
  if (vary !== undefined && /(^|,)\s*(cookie|\*)\s*(,|$)/i.test(values)) return vary
  return values ? `${values}, Cookie` : 'Cookie'
}

/** Lower-cased names of the headers a commit sets, by length, to skip lower-casing every other name. */
const COMMIT_HEADER_LENGTHS = new Set([4, 10, 13, 15])

/**
 * The handler's writeHead headers with the commit's folded in, as {@link applyCommitHeaders} would
 * leave them: the session cookie after the handler's cookies, `Cache-Control: no-store` in place of
 * the handler's, `Cookie` added to its `Vary`. Header names are compared without regard to case.
 */
function mergeCommitHeaders(headers: OutgoingHttpHeaders, result: CommitResult): OutgoingHttpHeaders {
  const merged: OutgoingHttpHeaders = {}
  const cookies: string[] = []
  const setsCookies = result.setCookie !== null || result.csrfCookie !== undefined
  let vary: number | string | string[] | undefined
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    const lower = COMMIT_HEADER_LENGTHS.has(name.length) ? name.toLowerCase() : ''
    if (lower === 'set-cookie' && setsCookies) {
      if (Array.isArray(value)) cookies.push(...value)
      else cookies.push(String(value))
    } else if (lower === 'vary' && result.private) {
      vary = value
    } else if (lower === 'cache-control' && result.private) {
      // Replaced below.
    } else if (lower === 'clear-site-data' && result.clearSiteData !== undefined) {
      // Replaced below.
    } else {
      merged[name] = value
    }
  }
  if (setsCookies) {
    if (result.setCookie !== null) cookies.push(result.setCookie)
    if (result.csrfCookie !== undefined) cookies.push(result.csrfCookie)
    merged['Set-Cookie'] = cookies
  }
  if (result.private) {
    merged['Cache-Control'] = 'no-store'
    merged.Vary = varyCookie(vary)
  }
  if (result.clearSiteData !== undefined) merged['Clear-Site-Data'] = result.clearSiteData
  return merged
}

/**
 * Answers a request that the adapter itself must fail (store down, conflict, handler crash): 503 for
 * an unavailable store or a lasting conflict (by error code), 500 otherwise. A response whose head has
 * already gone, or that cannot be answered, is destroyed instead. Never throws.
 */
export function sendFailure(res: ServerResponse, error: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const unavailable = isUnavailableError(error)
  const status = unavailable ? 503 : 500
  const message = unavailable
    ? 'Service unavailable: the session store is not answering. Please try again shortly.\n'
    : 'Internal server error.\n'
  try {
    for (const name of res.getHeaderNames()) res.removeHeader(name)
    res.writeHead(status, STATUS_CODES[status], {
      'Content-Type': 'text/plain; charset=utf-8',
      'Cache-Control': 'no-store',
      ...(unavailable ? { 'Retry-After': '1' } : {}),
    })
    res.end(message)
  } catch {
    res.destroy()
  }
}

/** Control over a response whose output is held until the session is committed. */
export interface HeldResponse {
  /**
   * `waiting` until the handler first tries to send something; `open` once output flows; `failed`
   * once the commit failed and the adapter answered instead (the handler's later output is dropped).
   */
  phase: 'waiting' | 'committing' | 'open' | 'failed'
  /**
   * Settles (never rejects) once an asynchronous commit is over and the held output replayed or
   * failed; `undefined` while waiting, or when the commit answered synchronously.
   */
  settled: Promise<void> | undefined
}

interface HoldState {
  readonly res: ServerResponse
  readonly commit: () => CommitResult | Promise<CommitResult>
  readonly onFailure: (error: unknown) => void
  readonly originals: readonly OutputMethod[]
  readonly held: Held[]
  phase: 'waiting' | 'committing' | 'open' | 'failed'
  settled: Promise<void> | undefined
}

type OutputMethod = (...args: unknown[]) => unknown
type OutputMethods = Record<(typeof OUTPUT)[number], OutputMethod>

/** The response methods that send output, in the order of `Held`'s index. */
const OUTPUT = ['writeHead', 'write', 'end', 'flushHeaders'] as const

/** The hold of a response held through its own properties, on the response itself (the cheapest way). */
const HOLD = Symbol('latchkey.hold')
type Holding = { [HOLD]?: HoldState }

/**
 * The hold of a response held through its prototype: adding a property to it is what must be avoided
 * there (see {@link holdViaPrototype}). Not for every response: a WeakMap entry per response costs the
 * garbage collector more than a property (measured on node:http: some 25 µs of CPU per request when
 * every hold lived here until its response was collected), so entries go as soon as the hold opens.
 */
const HOLDS = new WeakMap<object, HoldState>()

function callOriginal(state: HoldState, index: number, args: unknown[]): unknown {
  return (state.originals[index] as OutputMethod).apply(state.res, args)
}

/**
 * Applies the commit's headers and replays the held calls; returns what the last of them returned.
 * A call that throws (as node's own would: bad status, odd header array) throws out of here.
 */
function finishHold(state: HoldState, result: CommitResult): unknown {
  state.phase = 'open'
  // Open, a hold through the prototype does what no hold does: its entry can go. Entries dropped at
  // once keep the WeakMap near empty, and the garbage collector's work on it with them.
  if (HOLDS.get(state.res) === state) HOLDS.delete(state.res)
  try {
    let returned: unknown = state.res
    const head = state.held.find(([index]) => index === 0)
    if (head) replayWriteHead(state.res, head[1], result, (args) => callOriginal(state, 0, args))
    else applyCommitHeaders(state.res, result)
    for (const [index, args] of state.held) if (index !== 0) returned = callOriginal(state, index, args)
    return returned
  } finally {
    state.held.length = 0
  }
}

/** Ends an asynchronous commit: replays the held output, or fails the response if replaying throws. */
function finishHoldLater(state: HoldState, result: CommitResult): void {
  try {
    finishHold(state, result)
  } catch (error) {
    // Nobody is left to throw to: the handler's call returned long ago.
    failHold(state, error)
  }
}

function failHold(state: HoldState, error: unknown): void {
  // Open while the failure answer goes out through the interceptors, then closed to the handler:
  // its output after that (an end() after the writeHead whose commit failed) must not reach node,
  // which would throw write-after-end with nobody to catch it.
  state.phase = 'open'
  state.held.length = 0
  try {
    state.onFailure(error)
  } finally {
    state.phase = 'failed'
  }
}

function intercept(state: HoldState, index: number, args: unknown[]): unknown {
  const res = state.res
  if (state.phase === 'open') return callOriginal(state, index, args)
  if (state.phase === 'failed') return index === 1 ? false : res
  state.held.push([index, args])
  if (state.phase === 'waiting') {
    state.phase = 'committing'
    let outcome: CommitResult | Promise<CommitResult>
    try {
      outcome = state.commit()
    } catch (error) {
      failHold(state, error)
      return index === 1 ? false : res
    }
    if (outcome instanceof Promise) {
      state.settled = outcome.then(
        (result) => finishHoldLater(state, result),
        (error: unknown) => failHold(state, error),
      )
    } else {
      // Nothing to write: the call goes straight through, and its own result goes back to the caller.
      return finishHold(state, outcome)
    }
  }
  return index === 1 ? true : res
}

/**
 * One set of output methods that find their hold by `this` (no closures per request). Installed on a
 * shared prototype (`fallback` given), they hold only responses held that way, and pass the others
 * to `fallback`'s methods: a response held through its own properties may reach them again from a
 * wrapper (compression's) that captured them, when replaying.
 */
function interceptors(fallback: readonly OutputMethod[] | null): OutputMethods {
  const through =
    fallback === null
      ? (self: object, index: number, args: unknown[]): unknown => {
          const state = (self as Holding)[HOLD]
          if (state === undefined)
            throw new TypeError('latchkey: a held response method called on another object')
          return intercept(state, index, args)
        }
      : (self: object, index: number, args: unknown[]): unknown => {
          // Only holds made through the prototype are here: a response held through its own
          // properties reaches these again when a wrapper that captured them is replayed.
          const state = HOLDS.get(self)
          if (state !== undefined) return intercept(state, index, args)
          return (fallback[index] as OutputMethod).apply(self, args)
        }
  return {
    writeHead(this: object, ...args: unknown[]) {
      return through(this, 0, args)
    },
    write(this: object, ...args: unknown[]) {
      return through(this, 1, args)
    },
    end(this: object, ...args: unknown[]) {
      return through(this, 2, args)
    },
    flushHeaders(this: object, ...args: unknown[]) {
      return through(this, 3, args)
    },
  }
}

/** For responses whose own properties receive the interceptors. */
const OWN_INTERCEPTORS = interceptors(null)

/** node's own `headersSent` getter. */
const nodeHeadersSent = Object.getOwnPropertyDescriptor(OutgoingMessage.prototype, 'headersSent')?.get as (
  this: ServerResponse,
) => boolean

/** `headersSent` that also counts output held while the commit runs: to the handler, it has been sent. */
function heldHeadersSent(this: ServerResponse): boolean {
  const state = (this as Holding)[HOLD] ?? HOLDS.get(this)
  return state?.phase === 'committing' || nodeHeadersSent.call(this)
}

/**
 * Framework response prototypes (the one a framework puts between its responses and node's
 * `ServerResponse.prototype`, like Express's `express.response`) that carry the interceptors, with
 * the methods they replaced; and, per prototype a response is seen with, the one to use or null.
 */
const INSTALLED = new WeakMap<object, readonly OutputMethod[]>()
const VIA_PROTOTYPE = new WeakMap<object, readonly OutputMethod[] | null>()

/**
 * Holds `res` through its prototype chain when it can, and returns the methods to replay with; null
 * when the interceptors must go on `res` itself. This is for frameworks that swap every response's
 * prototype (Express does, per request and per mounted sub-app): V8 adds properties to an object
 * whose prototype was swapped some eighty times slower than to any other (measured here: 19 µs for
 * the five a hold needs, against 0.23 µs), and a getter put on an instance costs 2 µs more. On the
 * prototype, nothing is added to the response at all, and a sub-app's swap keeps the interceptors,
 * which sit on the prototype all of a framework's apps share (Express's `express.response`).
 * Responses of the same prototype that are not held pass straight through (a WeakMap lookup).
 */
function holdViaPrototype(res: ServerResponse): readonly OutputMethod[] | null {
  const own = res as object
  if (
    Object.hasOwn(own, 'writeHead') ||
    Object.hasOwn(own, 'write') ||
    Object.hasOwn(own, 'end') ||
    Object.hasOwn(own, 'flushHeaders') ||
    Object.hasOwn(own, 'headersSent')
  ) {
    // Something wrapped this response's methods before us (compression, on-headers...) capturing
    // node's: wrap theirs, as on any response.
    return null
  }
  const proto = Object.getPrototypeOf(res) as object | null
  if (proto === null) return null
  let known = VIA_PROTOTYPE.get(proto)
  if (known === undefined) {
    known = installOnFrameworkPrototype(proto)
    VIA_PROTOTYPE.set(proto, known)
  }
  return known
}

/** Finds the prototype just above `ServerResponse.prototype` in `proto`'s chain and installs there. */
function installOnFrameworkPrototype(proto: object): readonly OutputMethod[] | null {
  let base: object | null = proto
  for (;;) {
    if (base === null || base === ServerResponse.prototype) return null
    const parent = Object.getPrototypeOf(base) as object | null
    if (parent === ServerResponse.prototype) break
    // An object in between with its own output methods would hide the interceptors.
    if (OUTPUT.some((name) => Object.hasOwn(base as object, name)) || Object.hasOwn(base, 'headersSent')) {
      return null
    }
    base = parent
  }
  let originals = INSTALLED.get(base)
  if (originals === undefined) {
    const target = base as Record<string, OutputMethod>
    originals = OUTPUT.map((name) => target[name] as OutputMethod)
    Object.assign(base, interceptors(originals))
    Object.defineProperty(base, 'headersSent', { configurable: true, get: heldHeadersSent })
    INSTALLED.set(base, originals)
  }
  return originals
}

/**
 * Holds back every output call on `res` until `commit` has run, then applies its headers and
 * replays the calls in order. If the commit fails, the held output is dropped and `onFailure` answers.
 * `commit` may answer synchronously (nothing to write): then the first output call goes straight through.
 * The interceptors stay on the object and pass through once done: removing them would cost more.
 *
 * `viaPrototype` (for frameworks that give each response a prototype of their own, like Express):
 * put the interceptors on that prototype once instead of on every response, and make `headersSent`
 * true while held output waits for the commit, so the framework's own error and 404 handlers do not
 * start a second response behind it.
 */
export function holdUntilCommitted(
  res: ServerResponse,
  commit: () => CommitResult | Promise<CommitResult>,
  onFailure: (error: unknown) => void,
  viaPrototype = false,
): HeldResponse {
  // A second hold on one response (two managers' middleware in one app) wraps the first one's
  // methods through its own properties: the prototype holds one response's hold at a time.
  const shared = viaPrototype && !HOLDS.has(res) ? holdViaPrototype(res) : null
  const target = res as unknown as OutputMethods
  const state: HoldState = {
    res,
    commit,
    onFailure,
    originals: shared ?? [target.writeHead, target.write, target.end, target.flushHeaders],
    held: [],
    phase: 'waiting',
    settled: undefined,
  }
  if (shared !== null) {
    HOLDS.set(res, state)
  } else {
    ;(res as Holding)[HOLD] = state
    target.writeHead = OWN_INTERCEPTORS.writeHead
    target.write = OWN_INTERCEPTORS.write
    target.end = OWN_INTERCEPTORS.end
    target.flushHeaders = OWN_INTERCEPTORS.flushHeaders
    if (viaPrototype) Object.defineProperty(res, 'headersSent', { configurable: true, get: heldHeadersSent })
  }
  return state
}

function replayWriteHead(
  res: ServerResponse,
  args: unknown[],
  result: CommitResult,
  writeHead: (args: unknown[]) => unknown,
): void {
  const [status, second, third] = args
  const withMessage = typeof second === 'string'
  const headers = withMessage ? third : second
  if (
    headers &&
    typeof headers === 'object' &&
    !Array.isArray(headers) &&
    res.getHeaderNames().length === 0
  ) {
    // Nothing set on the response before: node takes one merged object as it is, header by header.
    const merged = mergeCommitHeaders(headers as OutgoingHttpHeaders, result)
    writeHead(withMessage ? [status, second, merged] : [status, merged])
    return
  }
  if (headers && typeof headers === 'object' && (!Array.isArray(headers) || headers.length % 2 === 0)) {
    // Fold the handler's headers in first, as node's writeHead would, so ours are added to them
    // (Set-Cookie, Vary) or replace them (Cache-Control) rather than being overwritten by them.
    foldHeaders(res, headers)
    applyCommitHeaders(res, result)
    writeHead(withMessage ? [status, second] : [status])
    return
  }
  // No headers, or something node refuses (an odd raw array): set ours first, let node answer as it does.
  applyCommitHeaders(res, result)
  writeHead(args)
}

/**
 * Puts writeHead's headers on the response the way node's writeHead does once headers are set: an
 * object's names replace existing ones; a raw array (`[name, value, name, value, ...]`, even length)
 * first removes every name it holds, then appends each pair, so repeated names all arrive.
 */
function foldHeaders(res: ServerResponse, headers: object): void {
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) res.removeHeader(headers[i])
    for (let i = 0; i < headers.length; i += 2) if (headers[i]) res.appendHeader(headers[i], headers[i + 1])
    return
  }
  for (const name in headers) {
    const value = (headers as OutgoingHttpHeaders)[name]
    if (value !== undefined) res.setHeader(name, value)
  }
}

/**
 * Wraps a node:http handler with sessions: `http.createServer(withSessions(manager, handler))`.
 * A failing store answers 503 (the handler never runs with a missing session); a handler that throws
 * before responding answers 500 and its session changes are not saved. A handler that throws after
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
  const onError = options.onError ?? ((error: unknown) => console.error('latchkey:', error))
  const guard: CsrfGuard<T> = createCsrfGuard(manager, options.csrf ?? {})
  const maxBodyBytes = guard.options?.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const onCsrfError = options.onCsrfError ?? sendCsrfFailure
  /** The handler, after the CSRF check when the request needs one (synchronously when it does not). */
  const run = (req: Req, res: ServerResponse, session: Session<T>): unknown => {
    if (guard.options === null) return handler(req, res, session)
    const request = new NodeCsrfRequest(req, maxBodyBytes)
    if (!guard.applies(request)) return handler(req, res, session)
    return guard.check(session, request).then(
      () => handler(req, res, session),
      (error: unknown) => {
        if (!isCsrfError(error)) throw error
        // The rest of an oversized body is left unread: the connection cannot carry another request.
        if (error.status === 413) res.setHeader('Connection', 'close')
        return onCsrfError(error, req, res, session)
      },
    )
  }
  const fail = (res: ServerResponse, error: unknown): void => {
    onError(error)
    sendFailure(res, error)
  }
  const serve = (req: Req, res: ServerResponse, session: Session<T>): Promise<void> => {
    const held = holdUntilCommitted(
      res,
      () => manager.commitSync(session) ?? manager.commit(session),
      (error) => fail(res, error),
    )
    const failed = async (error: unknown): Promise<void> => {
      onError(error)
      if (held.phase === 'waiting') {
        // Nothing has left yet: drop the request's session changes and answer 500.
        held.phase = 'open'
        sendFailure(res, error)
        return
      }
      // The response started: let the commit and the held output finish, then end what is left open.
      await held.settled
      if (!res.writableEnded && !res.destroyed) sendFailure(res, error)
    }
    let outcome: unknown
    try {
      outcome = run(req, res, session)
    } catch (error) {
      return failed(error)
    }
    return isThenable(outcome) ? Promise.resolve(outcome).then(noop, failed) : DONE
  }
  return (req, res) => {
    const facts = { cookie: req.headers.cookie, userAgent: req.headers['user-agent'] }
    let session: Session<T> | null
    try {
      session = manager.loadSync(facts)
    } catch (error) {
      fail(res, error)
      return DONE
    }
    if (session !== null) return serve(req, res, session)
    return manager.load(facts).then(
      (loaded) => serve(req, res, loaded),
      (error: unknown) => fail(res, error),
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

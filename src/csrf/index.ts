/**
 * CSRF protection: the check every adapter runs before the application sees an unsafe request.
 *
 * Two layers, both required:
 * 1. Where the request comes from. `Sec-Fetch-Site` first: `same-origin` and `none` pass; any other
 *    value (`same-site`, `cross-site`) passes only with an `Origin` in `trustedOrigins`. Without it,
 *    `Origin` must equal the app's own origin or a trusted one, exactly (scheme, host, port; `null`
 *    fails). Without `Origin`, over HTTPS, `Referer` must name such an origin. A request with none of
 *    these headers (a non-browser client) is decided by the token alone.
 * 2. The token: `session.csrfToken()`, sent back in the `x-csrf-token` header or the `_csrf` field of
 *    a urlencoded or multipart form (never the query string), bound to the session's CSRF secret, or,
 *    before there is a stored session, to the secret of the sealed pre-session cookie.
 *
 * The body is read last, and only when it can change the answer: never when the first layer refuses,
 * never when the token is in the header, never when the session has no secret (no session cookie and
 * no usable pre-session cookie: no token could pass). A form is then read and parsed as it arrives,
 * up to its `_csrf` field and no further, at most `maxFields` fields and 64 KiB deep: a hostile body
 * costs little more than an honest one. A refusal that leaves part of the body unread is marked so
 * (see {@link leftBodyUnread}): the adapters then close the connection rather than read the rest.
 *
 * Unsafe means anything but GET, HEAD and OPTIONS, and a safe request that a framework would route as
 * another method (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, or a `_method`
 * query parameter) is checked too. The Content-Type never decides whether a request is checked.
 *
 * A WebSocket handshake (a GET with `Upgrade: websocket`) that reaches the middleware, as it does
 * through Hono's `upgradeWebSocket` on @hono/node-server, @fastify/websocket or express-ws, gets the
 * origin check and no token check: browsers send cookies on a cross-site handshake and no CORS applies
 * to it (cross-site WebSocket hijacking), and a page cannot add a header to one.
 */
import { ConfigError, CsrfError } from '../core/errors.js'
import { refuseUnknownOptions } from '../core/known-options.js'
import type { SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { FormLimits } from './form.js'
import { formKind } from './form.js'
import { lastForwarded, normalizeOrigin, ownOrigin, refererOrigin } from './origin.js'

export type { FormKind, FormLimits, FormScan } from './form.js'
export { formKind, formScan, parseFormFields } from './form.js'

/** The header a token is read from (lower-case). */
export const CSRF_HEADER = 'x-csrf-token'
/** The form field a token is read from. */
export const CSRF_FIELD = '_csrf'
/** The default of {@link CsrfOptions.maxBodyBytes}: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1_048_576
/** The default of {@link CsrfOptions.maxFields}: 100 fields before `_csrf`. */
export const DEFAULT_MAX_FIELDS = 100
/**
 * Form values are cut to this many bytes while looking for the token: a token has 86, so a longer
 * `_csrf` is invalid whatever it is cut to, and no other value is kept longer.
 */
const MAX_TOKEN_FIELD_BYTES = 128
/**
 * The most form bytes parsed without finding `_csrf` (one huge field before it): past them the form
 * is refused with `too-many-fields`, as past `maxFields`.
 */
export const MAX_BYTES_BEFORE_TOKEN = 65_536

/**
 * What the check needs from a request. Each adapter builds one from its framework's request; the
 * check reads nothing else.
 */
export interface CsrfRequest {
  /** The method as received (`POST`). */
  readonly method: string
  /** The request target as received: path and query (`/login?next=%2F`). */
  readonly url: string
  /** A request header by its lower-case name; repeated headers joined with `, `. */
  header(name: string): string | undefined
  /** The request arrived over TLS (or a proxy the framework trusts says so). */
  readonly secure: boolean
  /** The `Host` header (for HTTP/2, `:authority`). */
  readonly host: string | undefined
  /**
   * The string fields of the body when it is a form (urlencoded or multipart, by essence,
   * case-insensitively: see {@link formKind}), read once and left usable by the application; `null`
   * for any other body. May reject with a `CsrfError` `body-too-large` past `maxBodyBytes`. With
   * `limits` (the check always passes them), parsing stops as they say and may reject with a
   * `CsrfError` `too-many-fields` (see {@link parseFormFields}); a body a framework parsed already is
   * taken as it is. Called only when the token is not in the header.
   */
  form(limits?: FormLimits): Promise<Readonly<Record<string, string>> | null>
  /**
   * Whether part of the body has not reached the server yet (it is still on its way, or was left
   * in the stream unread). Asked only when the check refuses: such a refusal is marked (see
   * {@link leftBodyUnread}) for the answer to close the connection instead of reading the rest.
   * Without it, a request that declares a body (a `Content-Length` other than 0, or a
   * `Transfer-Encoding`) counts as pending.
   */
  bodyPending?(): boolean
}

/** Options of the CSRF check (`csrf` of every adapter). */
export interface CsrfOptions {
  /**
   * The app's own origin, exactly as browsers send it in `Origin`: `https://app.example`. Default:
   * taken from each request, the `Host` header with the scheme the request arrived with (see
   * `trustProxy`). Set it when the app runs behind a proxy that does not forward the host.
   */
  origin?: string
  /**
   * Other origins allowed to send unsafe requests, each `scheme://host[:port]`, compared exactly (no
   * wildcards). They pass whatever `Sec-Fetch-Site` says (`same-site` or `cross-site`): listing an
   * origin is the app's own decision, and it must work the same in browsers with and without fetch
   * metadata. They still need a token. Default none.
   */
  trustedOrigins?: readonly string[]
  /**
   * One reverse proxy in front of the app sets `X-Forwarded-Proto` and `X-Forwarded-Host`: the own
   * origin is taken from their last values (the ones that proxy wrote) instead of the connection and
   * `Host`. Never set it when clients can reach the app without passing the proxy. Ignored when
   * `origin` is set. Default `false`.
   */
  trustProxy?: boolean
  /**
   * Requests that skip the check altogether (webhooks, which authenticate by signature): a predicate,
   * or a list of paths, each exact (`/hooks/stripe`) or a prefix ending in `/*` (`/hooks/*`). Paths are
   * compared with the request's path as received; one holding `%`, `\` or a `.`/`..` segment is
   * never exempt. Default none.
   */
  exempt?: readonly string[] | ((request: CsrfRequest) => boolean)
  /**
   * The largest form body read to find the `_csrf` field, in bytes; a larger one is refused with a
   * `CsrfError` `body-too-large` (status 413) without being buffered. Send big uploads with the token
   * in the `x-csrf-token` header: then the body is not read at all. Default 1 048 576 (1 MiB).
   */
  maxBodyBytes?: number
  /**
   * The most form fields read to find the `_csrf` field (for multipart, parts, files included). The
   * form is parsed only up to `_csrf`; one that has more fields than this before it is refused with a
   * `CsrfError` `too-many-fields` (403). Render `_csrf` first in the form, or send the token in the
   * `x-csrf-token` header. Default 100.
   */
  maxFields?: number
}

/** {@link CsrfOptions} after defaults and validation. */
export interface ResolvedCsrfOptions {
  readonly origin: string | null
  readonly trustedOrigins: ReadonlySet<string>
  readonly trustProxy: boolean
  readonly exempt: ((request: CsrfRequest) => boolean) | null
  readonly maxBodyBytes: number
  readonly maxFields: number
}

/** The CSRF check, built once per app by {@link createCsrfGuard}. */
export interface CsrfGuard<T extends SessionData = SessionData> {
  /** The options in force, or `null` when the check is off (`csrf: false`). */
  readonly options: ResolvedCsrfOptions | null
  /**
   * Whether `request` must be checked: an unsafe method or a tunnel to one, not exempt, the check on.
   * Synchronous and cheap: adapters may skip {@link check} when it is `false`.
   */
  applies(request: CsrfRequest): boolean
  /**
   * Checks `request` against `session` (loaded for it). Resolves when it passes or is not checked;
   * rejects with a `CsrfError` (its `status` is the answer: 403, or 413 for `body-too-large`), or with
   * whatever `request.form()` rejects with.
   */
  check(session: Session<T>, request: CsrfRequest): Promise<void>
}

const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/** Whether `request` asks to become a WebSocket (`Upgrade: websocket`, in any case, among other protocols). */
function isWebSocketHandshake(request: CsrfRequest): boolean {
  const upgrade = request.header('upgrade')
  return upgrade !== undefined && /(^|[\s,])websocket($|[\s,/])/i.test(upgrade)
}
const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const
/** A path that routers may read differently from its bytes: never matched against an exempt prefix. */
const AMBIGUOUS_PATH = /%|\\|\/\.\.?(?:\/|$)/

function isSafe(method: string): boolean {
  return SAFE_METHODS.has(method) || SAFE_METHODS.has(method.trim().toUpperCase())
}

/**
 * Whether a request with a safe method is routed as an unsafe one by a method-override tunnel: a
 * header, or a `_method` query parameter. Unsafe methods need no look: they are checked anyway, so a
 * tunnel is always checked as the stronger of its two methods.
 */
function tunnelled(request: CsrfRequest): boolean {
  for (const name of OVERRIDE_HEADERS) {
    const value = request.header(name)
    if (value !== undefined && !isSafe(value)) return true
  }
  const url = request.url
  if (!mayNameMethod(url)) return false
  const query = url.indexOf('?')
  for (const value of new URLSearchParams(url.slice(query + 1)).getAll('_method')) {
    if (!isSafe(value)) return true
  }
  return false
}

/** Whether `url` has a query that could name `_method`: only one holding `_` (or `%5F`) can. */
function mayNameMethod(url: string): boolean {
  const query = url.indexOf('?')
  return query !== -1 && (url.indexOf('_', query) !== -1 || url.indexOf('%', query) !== -1)
}

/**
 * True when {@link CsrfGuard.applies} says no to a request with this method, these headers (node's
 * lower-case object) and this target, whatever else it holds: a safe method as clients send it, no
 * method-override header, no `Upgrade` header, no query that could name `_method`. For adapters to skip building a
 * `CsrfRequest` for the common GET; `false` means only that the full test must run.
 */
export function isPlainlySafe(
  method: string | undefined,
  headers: Readonly<Record<string, unknown>>,
  url: string,
): boolean {
  return (
    (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') &&
    headers['x-http-method-override'] === undefined &&
    headers['x-http-method'] === undefined &&
    headers['x-method-override'] === undefined &&
    headers.upgrade === undefined &&
    !mayNameMethod(url)
  )
}

function pathOf(url: string): string {
  const end = url.search(/[?#]/)
  return end === -1 ? url : url.slice(0, end)
}

function exemptPaths(paths: readonly string[]): (request: CsrfRequest) => boolean {
  const exact = new Set<string>()
  const prefixes: string[] = []
  paths.forEach((path, index) => {
    if (typeof path !== 'string' || !path.startsWith('/') || AMBIGUOUS_PATH.test(path)) {
      throw new ConfigError(
        `csrf.exempt[${index}]`,
        `must be a path starting with /, got ${JSON.stringify(path)}`,
      )
    }
    if (path.endsWith('/*')) prefixes.push(path.slice(0, -1))
    else exact.add(path)
  })
  return (request) => {
    const path = pathOf(request.url)
    if (exact.has(path)) return true
    if (prefixes.length === 0 || AMBIGUOUS_PATH.test(path)) return false
    return prefixes.some((prefix) => path.startsWith(prefix) && path.length > prefix.length)
  }
}

/** Every option of the CSRF check, for {@link refuseUnknownOptions}. */
const CSRF_OPTIONS: readonly (keyof CsrfOptions)[] = [
  'origin',
  'trustedOrigins',
  'trustProxy',
  'exempt',
  'maxBodyBytes',
  'maxFields',
]

/** What latchkey does instead of csurf's (and its peers') options. */
const CSRF_HINTS = {
  cookie:
    'the CSRF secret lives in the session (or, before one is stored, in the pre-session cookie: the manager option csrfCookie)',
  ignoreMethods:
    'GET, HEAD and OPTIONS are never checked; use exempt for other routes that must skip the check',
  value: 'the token is read from the x-csrf-token header or the _csrf form field',
  sessionKey: 'the CSRF secret lives in the session, where latchkey keeps it',
}

/** Applies defaults and validates. Throws `ConfigError` naming the first bad option (`csrf.origin`...). */
export function resolveCsrfOptions(options: CsrfOptions = {}): ResolvedCsrfOptions {
  if (!options || typeof options !== 'object') throw new ConfigError('csrf', 'must be an object or false')
  refuseUnknownOptions(options, CSRF_OPTIONS, { path: 'csrf', owner: 'the CSRF check', hints: CSRF_HINTS })
  const origin = options.origin === undefined ? null : normalizeOrigin(options.origin, 'csrf.origin')
  const list = options.trustedOrigins ?? []
  if (!Array.isArray(list)) throw new ConfigError('csrf.trustedOrigins', 'must be an array of origins')
  const trustedOrigins = new Set(list.map((entry, i) => normalizeOrigin(entry, `csrf.trustedOrigins[${i}]`)))
  const trustProxy = options.trustProxy ?? false
  if (typeof trustProxy !== 'boolean') throw new ConfigError('csrf.trustProxy', 'must be a boolean')
  const exempt = options.exempt
  let predicate: ((request: CsrfRequest) => boolean) | null = null
  if (typeof exempt === 'function') predicate = exempt
  else if (Array.isArray(exempt)) predicate = exempt.length > 0 ? exemptPaths(exempt) : null
  else if (exempt !== undefined) {
    throw new ConfigError('csrf.exempt', 'must be a list of paths or a function of the request')
  }
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  if (typeof maxBodyBytes !== 'number' || !Number.isSafeInteger(maxBodyBytes) || maxBodyBytes <= 0) {
    throw new ConfigError(
      'csrf.maxBodyBytes',
      `must be a positive integer number of bytes, got ${String(maxBodyBytes)}`,
    )
  }
  const maxFields = options.maxFields ?? DEFAULT_MAX_FIELDS
  if (typeof maxFields !== 'number' || !Number.isSafeInteger(maxFields) || maxFields <= 0) {
    throw new ConfigError(
      'csrf.maxFields',
      `must be a positive integer number of fields, got ${String(maxFields)}`,
    )
  }
  return Object.freeze({ origin, trustedOrigins, trustProxy, exempt: predicate, maxBodyBytes, maxFields })
}

function isHttps(options: ResolvedCsrfOptions, request: CsrfRequest): boolean {
  if (options.origin !== null) return options.origin.startsWith('https:')
  if (options.trustProxy) {
    const proto = lastForwarded(request.header('x-forwarded-proto'))?.toLowerCase()
    if (proto === 'https' || proto === 'http') return proto === 'https'
  }
  return request.secure
}

const CROSS_SITE_MESSAGE =
  'CSRF check failed: cross-site (Sec-Fetch-Site says the request came from another site or origin, and its Origin is not trusted)'
const ORIGIN_MESSAGE =
  "CSRF check failed: origin-mismatch (Origin or Referer is neither this app's origin nor trusted; behind a proxy, set csrf.origin or csrf.trustProxy)"
const MISSING_MESSAGE = 'CSRF check failed: missing-token (no x-csrf-token header and no _csrf form field)'
const BAD_MESSAGE = 'CSRF check failed: bad-token (the token is malformed or was not made for this session)'
const NO_SECRET_MESSAGE =
  'CSRF check failed: bad-token (the request has no session cookie and no usable pre-session cookie, so no token can be valid; the form was not read. Load the page with the form first, with cookies on)'

/** Layer 1: throws a `CsrfError` unless the request may come from where it says it comes from. */
function checkSource(options: ResolvedCsrfOptions, request: CsrfRequest): void {
  const site = request.header('sec-fetch-site')
  const origin = request.header('origin')
  if (site !== undefined) {
    if (site === 'same-origin' || site === 'none') return
    if (origin !== undefined && options.trustedOrigins.has(origin)) return
    throw new CsrfError('cross-site', CROSS_SITE_MESSAGE)
  }
  if (origin !== undefined) {
    // `null` (a sandboxed frame, a data: URL, a redirect across origins) is never an origin of ours.
    if (origin !== 'null' && (options.trustedOrigins.has(origin) || origin === ownOrigin(options, request)))
      return
    throw new CsrfError('origin-mismatch', ORIGIN_MESSAGE)
  }
  if (!isHttps(options, request)) return
  const referer = request.header('referer')
  if (referer === undefined) return
  const from = refererOrigin(referer)
  if (from !== null && (options.trustedOrigins.has(from) || from === ownOrigin(options, request))) return
  throw new CsrfError('origin-mismatch', ORIGIN_MESSAGE)
}

/** Refusals whose request still had part of its body unread. */
const UNREAD = new WeakSet<object>()

/**
 * Whether `error` is a refusal of the check that left part of the request's body unread (not yet
 * received, or not read past the token or the limits). Answer it with `Connection: close`: the
 * server then stops reading instead of receiving the rest of a body it refused.
 */
export function leftBodyUnread(error: unknown): boolean {
  return typeof error === 'object' && error !== null && UNREAD.has(error)
}

function bodyPending(request: CsrfRequest): boolean {
  if (request.bodyPending !== undefined) return request.bodyPending()
  const length = request.header('content-length')
  return (length !== undefined && length.trim() !== '0') || request.header('transfer-encoding') !== undefined
}

/** The token in the request's form body, read as far as `limits` allow. */
async function formToken(request: CsrfRequest, limits: FormLimits): Promise<string | undefined> {
  const form = await request.form(limits)
  if (form === null) return undefined
  // A framework's parser may hand a repeated field over as an array: its first value counts.
  const value: unknown = Object.hasOwn(form, CSRF_FIELD) ? form[CSRF_FIELD] : undefined
  const first: unknown = Array.isArray(value) ? value[0] : value
  return typeof first === 'string' ? first : first === undefined ? undefined : ''
}

class Guard<T extends SessionData> implements CsrfGuard<T> {
  private readonly limits: FormLimits

  constructor(
    private readonly manager: SessionManager<T>,
    readonly options: ResolvedCsrfOptions,
  ) {
    this.limits = Object.freeze({
      maxFields: options.maxFields,
      stopAt: CSRF_FIELD,
      maxValueBytes: MAX_TOKEN_FIELD_BYTES,
      maxBytesBeforeStop: MAX_BYTES_BEFORE_TOKEN,
    })
  }

  applies(request: CsrfRequest): boolean {
    if (isSafe(request.method) && !tunnelled(request) && !isWebSocketHandshake(request)) return false
    return this.options.exempt === null || !this.options.exempt(request)
  }

  async check(session: Session<T>, request: CsrfRequest): Promise<void> {
    if (!this.applies(request)) return
    try {
      await this.verify(session, request)
    } catch (error) {
      if (error instanceof CsrfError) {
        if (bodyPending(request)) UNREAD.add(error)
        this.manager.options.metrics.csrfRefusal(error.reason)
      }
      throw error
    }
  }

  private async verify(session: Session<T>, request: CsrfRequest): Promise<void> {
    checkSource(this.options, request)
    // A handshake carries no token (a page cannot add a header to one): where it comes from decides.
    if (isSafe(request.method) && !tunnelled(request) && isWebSocketHandshake(request)) return
    let token = request.header(CSRF_HEADER)
    if (token === undefined) {
      // The body is worth reading only if some token could pass.
      if (this.manager.hasCsrfSecret(session)) token = await formToken(request, this.limits)
      else if (formKind(request.header('content-type')) !== null)
        throw new CsrfError('bad-token', NO_SECRET_MESSAGE)
    }
    if (token === undefined || token === '') throw new CsrfError('missing-token', MISSING_MESSAGE)
    if (!this.manager.verifyCsrfToken(session, token)) throw new CsrfError('bad-token', BAD_MESSAGE)
  }
}

const OFF: CsrfGuard<never> = Object.freeze({
  options: null,
  applies: () => false,
  check: () => Promise.resolve(),
})

/**
 * The CSRF check for `manager`'s sessions, with `options`; `false` turns it off (every request
 * passes). Throws `ConfigError` for bad options. Adapters build one and call
 * `check(session, request)` before the application runs.
 */
export function createCsrfGuard<T extends SessionData = SessionData>(
  manager: SessionManager<T>,
  options: CsrfOptions | false = {},
): CsrfGuard<T> {
  if (options === false) return OFF as CsrfGuard<T>
  return new Guard(manager, resolveCsrfOptions(options))
}

/** True for a `CsrfError`, also one from another installed copy of latchkey (decided by its `code`). */
export function isCsrfError(error: unknown): error is CsrfError {
  if (error instanceof CsrfError) return true
  try {
    return (
      typeof error === 'object' &&
      error !== null &&
      (error as { code?: unknown }).code === 'ERR_LATCHKEY_CSRF'
    )
  } catch {
    return false
  }
}

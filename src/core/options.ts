import type { Clock } from './clock.js'
import { systemClock } from './clock.js'
import type { SessionCookieSettings } from './cookie.js'
import type { NodeBytes } from './crypto.js'
import { decodeKey, MIN_KEY_BYTES } from './crypto.js'
import { ConfigError } from './errors.js'
import type { SessionEvent } from './events.js'
import { type OptionHints, refuseUnknownOptions } from './known-options.js'
import { type MeterLike, resolveMetrics, type SessionMetrics } from './metrics.js'
import type { SessionStore } from './store.js'
import { isUserIndexedStore } from './store.js'

/** Cookie settings. Every field is optional; the defaults are the hardened ones. */
export interface CookieOptions {
  /** Cookie name. Default `__Host-sid`, or `sid` when `secure` is false. */
  name?: string
  /** Send the cookie over HTTPS only. Default `true`; `false` only for plain-HTTP development. */
  secure?: boolean
  /** SameSite attribute. Default `'lax'`. `'none'` requires `secure`. */
  sameSite?: 'lax' | 'strict' | 'none'
  /** Domain attribute. Default none (host-only); not allowed with the `__Host-` prefix. */
  domain?: string
  /** Path attribute. Default `/`; must be `/` with the `__Host-` prefix. */
  path?: string
  /**
   * Persistent cookie: `Max-Age` set to the time left until the absolute timeout. Default `false`
   * (the cookie dies with the browser). The default of every session: a sign-in may choose otherwise
   * for its own session ("remember me") with `session.login(userId, { persistent })`.
   */
  persistent?: boolean
}

/**
 * The CSRF pre-session cookie: it carries the CSRF secret of a visitor who has no stored session yet
 * (the login form), sealed, so that the forms shown before sign-in are protected without storing a
 * session for every visitor. HttpOnly, `Path=/`, no Domain, `Secure` and `SameSite` as the session
 * cookie's. Sent only when `csrfToken()` is called on a session that is not stored.
 */
export interface CsrfCookieOptions {
  /** Cookie name. Default `__Host-csrf`, or `csrf` when `cookie.secure` is false. */
  name?: string
  /** How long a pre-session secret lasts (and the cookie's `Max-Age`). Default 7 200 000 ms (2 h). */
  maxAgeMs?: number
}

/** Options of {@link createSessionManager}. Times are milliseconds. */
export interface SessionManagerOptions {
  /** Where sessions are kept: `MemoryStore`, `SqliteStore`, or any {@link SessionStore}. Required. */
  store: SessionStore
  /**
   * Master keys, base64url (or base64) of at least 32 random bytes, newest first: the first seals,
   * all open. Default: `LATCHKEY_KEYS`, comma-separated.
   */
  keys?: readonly string[]
  /** Cookie settings; see {@link CookieOptions}. */
  cookie?: CookieOptions
  /** A session unused this long expires. Default 1 800 000 ms (30 min). */
  idleTimeoutMs?: number
  /** A session expires this long after it was created, whatever its activity. Default 43 200 000 ms (12 h). */
  absoluteTimeoutMs?: number
  /** The session ID is rotated (data kept) once it is this old. Default 3 600 000 ms (1 h). */
  renewalIntervalMs?: number
  /** After a renewal the old ID still answers this long, for requests already in flight. Default 10 000 ms. */
  renewalGraceMs?: number
  /** An unchanged session is written back (touched) at most this often. Default idle timeout / 10 (180 000 ms). */
  touchIntervalMs?: number
  /** How long a commit keeps retrying compare-and-set conflicts before `ConflictError`. Default 10 000 ms. */
  commitTimeoutMs?: number
  /**
   * The largest sealed payload a session may be stored with, in bytes (the data as JSON, encrypted and
   * base64url-encoded: about 4/3 of the JSON plus 40 bytes). A commit of a larger session fails with a
   * `SessionError` (`ERR_LATCHKEY_SESSION_TOO_LARGE`) and the stored session is left as it was. Default
   * 65 536 (64 KiB), within every bundled store's defaults; at least 1 024.
   */
  maxPayloadBytes?: number
  /**
   * The deadline of every store call, in ms: a call that has not answered by then fails the request
   * with a `StoreError` (503 with `Retry-After`), so a store that stops answering without closing its
   * connections never holds requests for minutes. Default 5 000; 1 to 60 000.
   */
  storeTimeoutMs?: number
  /** Where time comes from. Default the system clock. */
  clock?: Clock
  /**
   * Receives lifecycle events (login, logout, renewal, rejected cookies...) for audit logs. They name
   * sessions by a short keyed hash, never by ID. Errors it throws are ignored. Default: none.
   */
  onEvent?: (event: SessionEvent) => void
  /**
   * `Clear-Site-Data` types sent with the response that destroys a session (logout), e.g.
   * `['cache', 'storage']`. `'cookies'` clears every cookie of the site, not only latchkey's. Default `[]`
   * (no header).
   */
  clearSiteDataOnLogout?: readonly ClearSiteDataType[]
  /** The CSRF pre-session cookie; see {@link CsrfCookieOptions}. */
  csrfCookie?: CsrfCookieOptions
  /**
   * Metrics (see docs/metrics.md): an OpenTelemetry `Meter` to record into, or `false` for none.
   * Default: the global meter provider of `@opentelemetry/api`, when that package is installed and an
   * SDK registered a provider before the manager was created; else none.
   */
  metrics?: MeterLike | false
  /**
   * The most sessions one user may have signed in at once (ASVS V7.1), checked through the store's
   * user index at every sign-in; what happens past it is {@link sessionCapPolicy}. An integer from 1
   * to 1000; needs a store with a user index. Default: no cap.
   */
  maxSessionsPerUser?: number
  /**
   * What a sign-in past {@link maxSessionsPerUser} does: `'end-least-recent'` ends the user's sessions
   * used least recently (by their last request) until the cap holds, and the sign-in stands;
   * `'refuse'` ends the new session and fails the sign-in with a `SessionError`
   * (`ERR_LATCHKEY_SESSION_CAP`, answered 403), the others untouched. Default `'end-least-recent'`.
   */
  sessionCapPolicy?: SessionCapPolicy
}

/** What a sign-in past `maxSessionsPerUser` does; see {@link SessionManagerOptions.sessionCapPolicy}. */
export type SessionCapPolicy = 'end-least-recent' | 'refuse'

/** The largest `maxSessionsPerUser`: a cap is a handful of devices, and each sign-in lists them all. */
const MAX_SESSION_CAP = 1000

/** A directive of the `Clear-Site-Data` response header. */
export type ClearSiteDataType = 'cache' | 'cookies' | 'storage' | 'executionContexts' | '*'

const CLEAR_SITE_DATA_TYPES: readonly string[] = ['cache', 'cookies', 'storage', 'executionContexts', '*']

/** The default values, frozen. `touchIntervalMs` defaults to a tenth of the idle timeout. */
export const DEFAULTS = Object.freeze({
  cookieName: '__Host-sid',
  insecureCookieName: 'sid',
  sameSite: 'lax' as const,
  path: '/',
  idleTimeoutMs: 1_800_000,
  absoluteTimeoutMs: 43_200_000,
  renewalIntervalMs: 3_600_000,
  renewalGraceMs: 10_000,
  commitTimeoutMs: 10_000,
  maxPayloadBytes: 65_536,
  storeTimeoutMs: 5_000,
  csrfCookieName: '__Host-csrf',
  insecureCsrfCookieName: 'csrf',
  csrfCookieMaxAgeMs: 7_200_000,
  sessionCapPolicy: 'end-least-recent' as const,
})

/** The resolved settings of the CSRF pre-session cookie. */
export interface CsrfCookieSettings {
  readonly name: string
  readonly secure: boolean
  readonly sameSite: 'lax' | 'strict' | 'none'
  readonly maxAgeMs: number
}

/** Environment variables, as `process.env` holds them (named without node's types: see `NodeBytes`). */
export type Environment = Readonly<Record<string, string | undefined>>

/** Options after defaults and validation. */
export interface ResolvedOptions {
  readonly store: SessionStore
  readonly keys: readonly NodeBytes[]
  readonly cookie: SessionCookieSettings
  readonly idleTimeoutMs: number
  readonly absoluteTimeoutMs: number
  readonly renewalIntervalMs: number
  readonly renewalGraceMs: number
  readonly touchIntervalMs: number
  readonly commitTimeoutMs: number
  readonly maxPayloadBytes: number
  readonly storeTimeoutMs: number
  /** Where the manager counts what it does (records nothing when metrics are off). */
  readonly metrics: SessionMetrics
  readonly clock: Clock
  /** The `Clear-Site-Data` header value for logout responses, or `null`. */
  readonly clearSiteData: string | null
  /** The CSRF pre-session cookie. */
  readonly csrfCookie: CsrfCookieSettings
  /** The most sessions a user may have at once, or `null` for no cap. */
  readonly maxSessionsPerUser: number | null
  readonly sessionCapPolicy: SessionCapPolicy
}

// RFC 6265 token for names; attribute values may not hold separators, spaces or controls either.
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const ATTRIBUTE_VALUE = /^[\u0021-\u003a\u003c\u003e-\u007e]+$/

/** Every option of `createSessionManager`, for {@link refuseUnknownOptions}. */
const MANAGER_OPTIONS: readonly (keyof SessionManagerOptions)[] = [
  'store',
  'keys',
  'cookie',
  'idleTimeoutMs',
  'absoluteTimeoutMs',
  'renewalIntervalMs',
  'renewalGraceMs',
  'touchIntervalMs',
  'commitTimeoutMs',
  'storeTimeoutMs',
  'maxPayloadBytes',
  'clock',
  'onEvent',
  'clearSiteDataOnLogout',
  'csrfCookie',
  'metrics',
  'maxSessionsPerUser',
  'sessionCapPolicy',
]

const COOKIE_OPTIONS: readonly (keyof CookieOptions)[] = [
  'name',
  'secure',
  'sameSite',
  'domain',
  'path',
  'persistent',
]
const CSRF_COOKIE_OPTIONS: readonly (keyof CsrfCookieOptions)[] = ['name', 'maxAgeMs']

/** What latchkey does instead of express-session's (and its peers') options. */
const MANAGER_HINTS: OptionHints = {
  secret:
    'latchkey seals each session with `keys` (make one with `npx latchkey keygen`); the cookie holds a random ID and needs no signing secret',
  name: 'the cookie is named by cookie.name',
  rolling:
    'idle expiry always rolls with activity (see idleTimeoutMs); the cookie is re-sent when the ID renews',
  resave: 'latchkey writes a session only when it changed, by compare-and-set, so no write is lost',
  saveUninitialized:
    'latchkey stores a new session only once it holds something (data, a sign-in or a CSRF secret)',
  genid: 'session IDs are always 256 random bits from the operating system and cannot be chosen',
  unset: 'a destroyed session is always ended in the store (session.destroy() or logout())',
  proxy: "the adapters take the framework's trust-proxy setting; the CSRF check has csrf.trustProxy",
  ttl: 'use idleTimeoutMs and absoluteTimeoutMs',
  maxAge:
    'use idleTimeoutMs and absoluteTimeoutMs (and cookie.persistent for a cookie that outlives the browser)',
  timeout: 'use idleTimeoutMs and absoluteTimeoutMs',
  csrf: "the CSRF check is an option of the adapter, not of the manager: sessions(manager, { csrf }) (Express, Hono, Koa), app.register(latchkey, { manager, csrf }) (Fastify), withSessions(manager, handler, { csrf }) (node:http); the manager's csrfCookie is the cookie of forms before sign-in",
}

const COOKIE_HINTS: OptionHints = {
  maxAge:
    'the session cookie lives as long as the session: see cookie.persistent, idleTimeoutMs and absoluteTimeoutMs',
  expires:
    'the session cookie lives as long as the session: see cookie.persistent, idleTimeoutMs and absoluteTimeoutMs',
  httpOnly: 'the session cookie is always HttpOnly',
  signed:
    'the cookie holds a random 256-bit ID and needs no signature; the session itself is sealed with `keys`',
  partitioned: 'not supported for the session cookie',
  priority: 'not supported for the session cookie',
}

function duration(
  options: SessionManagerOptions,
  name: keyof SessionManagerOptions,
  fallback: number,
): number {
  const value = options[name] ?? fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(name, `must be a positive integer number of milliseconds, got ${String(value)}`)
  }
  return value
}

/**
 * The master keys from `keys`, else from `LATCHKEY_KEYS` in `env`: decoded, each checked (base64url or
 * base64, at least 32 bytes, none twice); `ConfigError` naming the key otherwise. Also the check of
 * `latchkey/express-session`'s `keys`.
 */
export function resolveKeys(keys: readonly string[] | undefined, env: Environment): NodeBytes[] {
  const source = keys ?? env.LATCHKEY_KEYS?.split(',').map((key) => key.trim())
  const option = keys ? 'keys' : 'LATCHKEY_KEYS'
  if (!source || source.length === 0 || (source.length === 1 && source[0] === '')) {
    throw new ConfigError(
      'keys',
      'at least one key is required (pass keys or set LATCHKEY_KEYS); `latchkey keygen` makes one',
    )
  }
  const seen = new Set<string>()
  return source.map((text, index) => {
    const key = typeof text === 'string' ? decodeKey(text) : null
    if (!key) throw new ConfigError(`${option}[${index}]`, 'must be base64url (or base64) text')
    if (key.length < MIN_KEY_BYTES) {
      throw new ConfigError(
        `${option}[${index}]`,
        `must be at least ${MIN_KEY_BYTES} bytes, got ${key.length}`,
      )
    }
    const hex = key.toString('hex')
    if (seen.has(hex)) throw new ConfigError(`${option}[${index}]`, 'is listed twice')
    seen.add(hex)
    return key
  })
}

function resolveCookie(cookie: CookieOptions): SessionCookieSettings {
  if (!cookie || typeof cookie !== 'object') throw new ConfigError('cookie', 'must be an object')
  refuseUnknownOptions(cookie, COOKIE_OPTIONS, {
    path: 'cookie',
    owner: 'the session cookie',
    hints: COOKIE_HINTS,
  })
  const secure = cookie.secure ?? true
  if (typeof secure !== 'boolean') throw new ConfigError('cookie.secure', 'must be a boolean')
  const name = cookie.name ?? (secure ? DEFAULTS.cookieName : DEFAULTS.insecureCookieName)
  if (typeof name !== 'string' || !COOKIE_NAME.test(name)) {
    throw new ConfigError(
      'cookie.name',
      `must be a cookie token (no ; = spaces or control characters), got ${JSON.stringify(name)}`,
    )
  }
  const sameSite = cookie.sameSite ?? DEFAULTS.sameSite
  if (sameSite !== 'lax' && sameSite !== 'strict' && sameSite !== 'none') {
    throw new ConfigError(
      'cookie.sameSite',
      `must be 'lax', 'strict' or 'none', got ${JSON.stringify(sameSite)}`,
    )
  }
  if (sameSite === 'none' && !secure)
    throw new ConfigError('cookie.sameSite', "'none' requires cookie.secure")
  const path = cookie.path ?? DEFAULTS.path
  if (typeof path !== 'string' || !path.startsWith('/') || !ATTRIBUTE_VALUE.test(path)) {
    throw new ConfigError(
      'cookie.path',
      `must start with / and hold no ; = spaces or control characters, got ${JSON.stringify(path)}`,
    )
  }
  const domain = cookie.domain
  if (domain !== undefined && (typeof domain !== 'string' || !ATTRIBUTE_VALUE.test(domain))) {
    throw new ConfigError(
      'cookie.domain',
      `must hold no ; = spaces or control characters, got ${JSON.stringify(domain)}`,
    )
  }
  if (name.startsWith('__Host-')) {
    if (!secure) throw new ConfigError('cookie.name', 'the __Host- prefix requires cookie.secure')
    if (domain !== undefined) throw new ConfigError('cookie.domain', 'not allowed with the __Host- prefix')
    if (path !== '/') throw new ConfigError('cookie.path', "must be '/' with the __Host- prefix")
  }
  if (name.startsWith('__Secure-') && !secure) {
    throw new ConfigError('cookie.name', 'the __Secure- prefix requires cookie.secure')
  }
  const persistent = cookie.persistent ?? false
  if (typeof persistent !== 'boolean') throw new ConfigError('cookie.persistent', 'must be a boolean')
  return Object.freeze({ name, secure, sameSite, httpOnly: true as const, path, domain, persistent })
}

function resolveCsrfCookie(options: CsrfCookieOptions, session: SessionCookieSettings): CsrfCookieSettings {
  if (!options || typeof options !== 'object') throw new ConfigError('csrfCookie', 'must be an object')
  refuseUnknownOptions(options, CSRF_COOKIE_OPTIONS, {
    path: 'csrfCookie',
    owner: 'the CSRF pre-session cookie',
  })
  const secure = session.secure
  const name = options.name ?? (secure ? DEFAULTS.csrfCookieName : DEFAULTS.insecureCsrfCookieName)
  if (typeof name !== 'string' || !COOKIE_NAME.test(name)) {
    throw new ConfigError(
      'csrfCookie.name',
      `must be a cookie token (no ; = spaces or control characters), got ${JSON.stringify(name)}`,
    )
  }
  if (name === session.name) throw new ConfigError('csrfCookie.name', 'must differ from cookie.name')
  if ((name.startsWith('__Host-') || name.startsWith('__Secure-')) && !secure) {
    throw new ConfigError('csrfCookie.name', 'the __Host- and __Secure- prefixes require cookie.secure')
  }
  const maxAgeMs = options.maxAgeMs ?? DEFAULTS.csrfCookieMaxAgeMs
  if (typeof maxAgeMs !== 'number' || !Number.isSafeInteger(maxAgeMs) || maxAgeMs < 1000) {
    throw new ConfigError(
      'csrfCookie.maxAgeMs',
      `must be an integer number of milliseconds, at least 1000, got ${String(maxAgeMs)}`,
    )
  }
  return Object.freeze({ name, secure, sameSite: session.sameSite, maxAgeMs })
}

function resolveSessionCap(
  options: SessionManagerOptions,
): Pick<ResolvedOptions, 'maxSessionsPerUser' | 'sessionCapPolicy'> {
  const cap = options.maxSessionsPerUser ?? null
  if (
    cap !== null &&
    (typeof cap !== 'number' || !Number.isSafeInteger(cap) || cap < 1 || cap > MAX_SESSION_CAP)
  ) {
    throw new ConfigError(
      'maxSessionsPerUser',
      `must be an integer from 1 to ${MAX_SESSION_CAP} (leave it out for no cap), got ${String(cap)}`,
    )
  }
  if (cap !== null && !isUserIndexedStore(options.store)) {
    throw new ConfigError(
      'maxSessionsPerUser',
      'needs a store with a user index (listByUser): every bundled store has one, the cap counts through it',
    )
  }
  const policy = options.sessionCapPolicy ?? DEFAULTS.sessionCapPolicy
  if (policy !== 'end-least-recent' && policy !== 'refuse') {
    throw new ConfigError(
      'sessionCapPolicy',
      `must be 'end-least-recent' or 'refuse', got ${JSON.stringify(policy)}`,
    )
  }
  return { maxSessionsPerUser: cap, sessionCapPolicy: policy }
}

/** Applies defaults and validates. Throws {@link ConfigError} naming the first bad option. */
export function resolveOptions(
  options: SessionManagerOptions,
  env: Environment = process.env,
): ResolvedOptions {
  if (!options || typeof options !== 'object') throw new ConfigError('options', 'must be an object')
  refuseUnknownOptions(options, MANAGER_OPTIONS, { owner: 'createSessionManager', hints: MANAGER_HINTS })
  const store = options.store
  const methods = ['get', 'create', 'update', 'touch', 'destroy'] as const
  if (!store || methods.some((method) => typeof store[method] !== 'function')) {
    throw new ConfigError('store', `must implement ${methods.join(', ')}`)
  }
  const idleTimeoutMs = duration(options, 'idleTimeoutMs', DEFAULTS.idleTimeoutMs)
  const absoluteTimeoutMs = duration(options, 'absoluteTimeoutMs', DEFAULTS.absoluteTimeoutMs)
  if (idleTimeoutMs > absoluteTimeoutMs) {
    throw new ConfigError('idleTimeoutMs', `must not exceed absoluteTimeoutMs (${absoluteTimeoutMs})`)
  }
  const renewalIntervalMs = duration(options, 'renewalIntervalMs', DEFAULTS.renewalIntervalMs)
  const renewalGraceMs = duration(options, 'renewalGraceMs', DEFAULTS.renewalGraceMs)
  if (renewalGraceMs >= idleTimeoutMs)
    throw new ConfigError('renewalGraceMs', 'must be shorter than idleTimeoutMs')
  const touchIntervalMs = duration(options, 'touchIntervalMs', Math.max(1, Math.floor(idleTimeoutMs / 10)))
  if (touchIntervalMs >= idleTimeoutMs)
    throw new ConfigError('touchIntervalMs', 'must be shorter than idleTimeoutMs')
  const commitTimeoutMs = duration(options, 'commitTimeoutMs', DEFAULTS.commitTimeoutMs)
  const maxPayloadBytes = options.maxPayloadBytes ?? DEFAULTS.maxPayloadBytes
  if (
    typeof maxPayloadBytes !== 'number' ||
    !Number.isSafeInteger(maxPayloadBytes) ||
    maxPayloadBytes < 1024
  ) {
    throw new ConfigError(
      'maxPayloadBytes',
      `must be an integer number of bytes, at least 1024, got ${String(maxPayloadBytes)}`,
    )
  }
  const storeTimeoutMs = duration(options, 'storeTimeoutMs', DEFAULTS.storeTimeoutMs)
  if (storeTimeoutMs > 60_000) {
    throw new ConfigError('storeTimeoutMs', `must be at most 60000 ms, got ${storeTimeoutMs}`)
  }
  const clock = options.clock ?? systemClock
  if (typeof clock.now !== 'function') throw new ConfigError('clock', 'must have a now() method')
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function') {
    throw new ConfigError('onEvent', 'must be a function')
  }
  const clearSiteData = options.clearSiteDataOnLogout ?? []
  if (!Array.isArray(clearSiteData) || clearSiteData.some((type) => !CLEAR_SITE_DATA_TYPES.includes(type))) {
    throw new ConfigError('clearSiteDataOnLogout', `must list some of ${CLEAR_SITE_DATA_TYPES.join(', ')}`)
  }
  const keys = resolveKeys(options.keys, env)
  const cookie = resolveCookie(options.cookie ?? {})
  const { maxSessionsPerUser, sessionCapPolicy } = resolveSessionCap(options)
  return Object.freeze({
    maxSessionsPerUser,
    sessionCapPolicy,
    clearSiteData: clearSiteData.length > 0 ? clearSiteData.map((type) => `"${type}"`).join(', ') : null,
    store,
    keys,
    cookie,
    csrfCookie: resolveCsrfCookie(options.csrfCookie ?? {}, cookie),
    idleTimeoutMs,
    absoluteTimeoutMs,
    renewalIntervalMs,
    renewalGraceMs,
    touchIntervalMs,
    commitTimeoutMs,
    maxPayloadBytes,
    storeTimeoutMs,
    metrics: resolveMetrics(options.metrics),
    clock,
  })
}

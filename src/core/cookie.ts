import { parseCookie, stringifySetCookie } from 'cookie'
import type { Clock } from './clock.js'
import { isWellFormedId } from './id.js'
import type { CsrfCookieSettings } from './options.js'
import type { CookieFacts, SessionCookie, SessionMeta, SessionState } from './session.js'
import type { SessionRecord } from './store.js'

/** The resolved cookie settings the core writes with. */
export interface SessionCookieSettings {
  readonly name: string
  readonly secure: boolean
  readonly sameSite: 'lax' | 'strict' | 'none'
  readonly httpOnly: true
  readonly path: string
  readonly domain: string | undefined
  /** The default of every session: a persistent cookie, or one that dies with the browser. `login` may choose otherwise. */
  readonly persistent: boolean
}

/** What the Cookie header said about the session (or another cookie of latchkey's). */
export interface CookieReading {
  /** A well-formed ID (or value), or null. Still to be looked up: well-formed is not the same as issued. */
  readonly id: string | null
  /** True when a session cookie was sent that cannot be used (malformed, or more than one). */
  readonly rejected: boolean
}

const NONE: CookieReading = Object.freeze({ id: null, rejected: false })
const REJECTED: CookieReading = Object.freeze({ id: null, rejected: true })

/**
 * Reads the session ID from a Cookie header. Two cookies of the session's name (cookie shadowing
 * with a longer Path or a parent Domain) count as none, and so does any value that is not an ID
 * latchkey could have issued. Never throws.
 */
export function readSessionCookie(header: string | undefined, name: string): CookieReading {
  return readCookie(header, name, isWellFormedId)
}

/**
 * Reads the cookie `name` from a Cookie header: its value when it is there once and `wellFormed`
 * accepts it; rejected when it is there but malformed or more than once. Never throws.
 */
export function readCookie(
  header: string | undefined,
  name: string,
  wellFormed: (value: string) => boolean,
): CookieReading {
  if (typeof header !== 'string' || header.length === 0 || !header.includes(name)) return NONE
  const value = parseCookie(header, { decode: identity })[name]
  if (value === undefined) return NONE
  // Only a header naming the cookie more than once needs the pair-by-pair count.
  const single = header.indexOf(name) === header.lastIndexOf(name)
  if (!wellFormed(value) || (!single && countCookies(header, name) !== 1)) return REJECTED
  return { id: value, rejected: false }
}

function identity(value: string): string {
  return value
}

/** How many pairs of the header carry `name`; each pair is parsed by the `cookie` package. */
function countCookies(header: string, name: string): number {
  let count = 0
  for (const pair of header.split(';')) {
    if (pair.includes(name) && parseCookie(pair, { decode: identity })[name] !== undefined) count++
  }
  return count
}

const suffixes = new WeakMap<SessionCookieSettings, string>()

/** The Set-Cookie value that hands `id` to the browser: persistent with `maxAgeSeconds`, a browser-session cookie with `null`. */
export function serializeSessionCookie(
  settings: SessionCookieSettings,
  id: string,
  maxAgeSeconds: number | null,
): string {
  const attributes = {
    httpOnly: true,
    secure: settings.secure,
    sameSite: settings.sameSite,
    path: settings.path,
    domain: settings.domain,
  } as const
  if (maxAgeSeconds !== null) {
    const maxAge = Math.max(0, Math.floor(maxAgeSeconds))
    return stringifySetCookie(settings.name, id, { ...attributes, maxAge, encode: identity })
  }
  // The attributes never change: the cookie package builds (and checks) them once per settings, and
  // only the ID, always 43 characters of base64url, is put in front.
  let suffix = suffixes.get(settings)
  if (suffix === undefined) {
    suffix = stringifySetCookie(settings.name, '', attributes).slice(settings.name.length + 1)
    suffixes.set(settings, suffix)
  }
  return `${settings.name}=${id}${suffix}`
}

/**
 * The kind and lifetime of each session's cookie: persistent (Max-Age = the time left until the
 * session's absolute deadline) or a browser-session cookie, as the session chose at `login` ("remember
 * me", kept in its sealed metadata so every renewal sends the same kind), else as the settings say.
 */
export class CookieLifetime implements CookieFacts {
  constructor(
    private readonly settings: SessionCookieSettings,
    private readonly absoluteTimeoutMs: number,
    private readonly clock: Clock,
  ) {}

  /** Whether a session with this metadata gets a persistent cookie. */
  persistent(meta: SessionMeta): boolean {
    return meta.p ?? this.settings.persistent
  }

  /** The Set-Cookie value that hands a stored session's ID to the browser at `now`. */
  issue(state: SessionState, now: number): string {
    const expiresAt = (state.record as SessionRecord).absoluteExpiresAt
    const maxAgeSeconds = this.persistent(state.meta) ? (expiresAt - now) / 1000 : null
    return serializeSessionCookie(this.settings, state.id, maxAgeSeconds)
  }

  /** The session's cookie as it would be sent now, for `session.cookie`. */
  describe(state: SessionState): SessionCookie {
    const persistent = this.persistent(state.meta)
    const now = this.clock.now()
    // A session stored at this commit (a new one, or a sign-in) gets a new record and the full lifetime.
    const expiresAt =
      state.record === null || state.rotation === 'login'
        ? now + this.absoluteTimeoutMs
        : state.record.absoluteExpiresAt
    const { secure, httpOnly, sameSite, path, domain } = this.settings
    return {
      persistent,
      maxAge: persistent ? Math.max(0, expiresAt - now) : null,
      expires: persistent ? new Date(expiresAt) : null,
      secure,
      httpOnly,
      sameSite,
      path,
      domain,
    }
  }
}

/** The Set-Cookie value that removes the session cookie: same name, Path, Domain and flags, expired. */
export function serializeClearingCookie(settings: SessionCookieSettings): string {
  return stringifySetCookie(settings.name, '', {
    httpOnly: true,
    secure: settings.secure,
    sameSite: settings.sameSite,
    path: settings.path,
    domain: settings.domain,
    maxAge: 0,
    expires: new Date(0),
  })
}

/** The Set-Cookie value that hands the sealed CSRF pre-session secret to the browser. */
export function serializeCsrfCookie(settings: CsrfCookieSettings, value: string): string {
  return stringifySetCookie(settings.name, value, {
    httpOnly: true,
    secure: settings.secure,
    sameSite: settings.sameSite,
    path: '/',
    maxAge: Math.floor(settings.maxAgeMs / 1000),
    encode: identity,
  })
}

/** The Set-Cookie value that removes the CSRF pre-session cookie. */
export function serializeClearingCsrfCookie(settings: CsrfCookieSettings): string {
  return stringifySetCookie(settings.name, '', {
    httpOnly: true,
    secure: settings.secure,
    sameSite: settings.sameSite,
    path: '/',
    maxAge: 0,
    expires: new Date(0),
  })
}

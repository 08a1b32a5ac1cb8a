/**
 * Origins for the CSRF check's first layer and the WebSocket upgrade guard: configured origins checked
 * and normalised once, the app's own origin of a request, and the origin of a `Referer`.
 */
import { ConfigError } from '../core/errors.js'

/**
 * A Host header (or `X-Forwarded-Host` value) latchkey accepts: a DNS name or IPv4 address, or an
 * IPv6 literal in brackets, with an optional port. Anything else gives no own origin at all.
 */
const HOST = /^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/

/**
 * An origin given in the options, as browsers serialise it: `https://app.example`,
 * `http://localhost:3000`. Throws `ConfigError` for anything else (a path, a query, credentials, a
 * wildcard, another scheme), so that no list entry silently matches nothing or too much.
 */
export function normalizeOrigin(value: unknown, option: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new ConfigError(
      option,
      `must be an origin such as 'https://app.example', got ${JSON.stringify(value)}`,
    )
  }
  if (value.includes('*')) {
    throw new ConfigError(
      option,
      `wildcards are not supported: list each origin, got ${JSON.stringify(value)}`,
    )
  }
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(
      option,
      `must be an origin such as 'https://app.example', got ${JSON.stringify(value)}`,
    )
  }
  if (
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    url.username !== '' ||
    url.password !== '' ||
    url.pathname !== '/' ||
    url.search !== '' ||
    url.hash !== '' ||
    value.endsWith('?') ||
    value.endsWith('#')
  ) {
    throw new ConfigError(
      option,
      `must be scheme://host[:port] only (http or https, no path, query or credentials), got ${JSON.stringify(value)}`,
    )
  }
  return url.origin
}

/**
 * The origin `scheme://host[:port]` as a browser would write it in `Origin`: host lower-cased, the
 * scheme's default port left out. `null` when `host` is missing or not a plain host and port.
 */
export function originOf(scheme: 'http' | 'https', host: string | undefined): string | null {
  if (host === undefined) return null
  const match = HOST.exec(host)
  if (!match) return null
  const port = match[1]
  let name = host.toLowerCase()
  if (port !== undefined) {
    name = name.slice(0, name.length - port.length - 1)
    const number = Number(port)
    if (number > 65535) return null
    if (number !== (scheme === 'https' ? 443 : 80)) name = `${name}:${number}`
  }
  return `${scheme}://${name}`
}

/** The origin of a `Referer` URL, or `null` when it is not an http(s) URL. */
export function refererOrigin(referer: string): string | null {
  try {
    const url = new URL(referer)
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.origin : null
  } catch {
    return null
  }
}

/**
 * The value a trusted proxy added to a comma-separated forwarding header: the last one (the
 * proxy in front of the app appends, or replaces the header with, what it saw). Trimmed; `undefined`
 * when empty.
 */
export function lastForwarded(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const last = value.slice(value.lastIndexOf(',') + 1).trim()
  return last === '' ? undefined : last
}

/** Where the app's own origin is decided: {@link ownOrigin}'s options (the CSRF check's, the upgrade guard's). */
export interface OwnOriginOptions {
  /** The configured origin, normalised, or `null` to take it from each request. */
  readonly origin: string | null
  /** One reverse proxy in front sets `X-Forwarded-Proto` and `X-Forwarded-Host`. */
  readonly trustProxy: boolean
}

/** What {@link ownOrigin} reads off a request. */
export interface OriginFacts {
  /** The request arrived over TLS (or a proxy the framework trusts says so). */
  readonly secure: boolean
  /** The `Host` header (for HTTP/2, `:authority`). */
  readonly host: string | undefined
  /** A request header by its lower-case name. */
  header(name: string): string | undefined
}

/**
 * The app's own origin for `request`: the configured one; else, behind a trusted proxy, the one its
 * forwarding headers name; else the `Host` header with the scheme of the connection. Taking `Host` is
 * safe for this check: a browser always sends the host it is talking to, so a forged page cannot make
 * it claim the app's host while sending its own origin, and a request that names another host in both
 * `Host` and `Origin` (DNS rebinding) carries none of the app's cookies. `null` when `Host` is unusable.
 */
export function ownOrigin(options: OwnOriginOptions, request: OriginFacts): string | null {
  if (options.origin !== null) return options.origin
  let secure = request.secure
  let host = request.host
  if (options.trustProxy) {
    const proto = lastForwarded(request.header('x-forwarded-proto'))?.toLowerCase()
    if (proto === 'https' || proto === 'http') secure = proto === 'https'
    host = lastForwarded(request.header('x-forwarded-host')) ?? host
  }
  return originOf(secure ? 'https' : 'http', host)
}

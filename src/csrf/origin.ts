/**
 * Origins for the CSRF check's first layer: configured origins checked and normalised once, the
 * app's own origin of a request, and the origin of a `Referer`.
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

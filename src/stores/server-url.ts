/**
 * The URL of a server store (`postgres://`, `mysql://`, `redis://`...) checked before a driver sees
 * it. A malformed URL reaches the drivers as a host that does not exist (`postgres:/bad` is localhost,
 * `u:pa/ss@host` is the host `u`), and the operator is told the server "does not answer" when the URL
 * is at fault: here it is a `ConfigError` that names what is wrong. Parsed as the drivers parse it
 * (WHATWG `URL`; for PostgreSQL also with pg's fallback for an empty host, `postgres://user@/db?host=/socket`),
 * so that no URL a driver accepts is refused.
 */
import { ConfigError } from '../core/errors.js'

/** The fix for a user or password holding a character that ends that part of a URL. */
const ENCODE = 'a user or password holding /, @, # or ? must be percent-encoded: encodeURIComponent(password)'

/** Throws a `ConfigError` naming the problem when `url` (of `scheme`, shown as `masked`) is malformed. */
export function checkServerUrl(url: string, scheme: string, masked: string): void {
  const rest = url.slice(scheme.length + 1)
  if (!rest.startsWith('//')) {
    throw new ConfigError(
      'store',
      `${masked}: expected ${scheme}://[user[:password]@]host[:port][/database], with two slashes`,
    )
  }
  const parsed = parse(url, scheme)
  if (parsed === undefined) {
    const at = rest.lastIndexOf('@')
    const userinfo = at < 0 ? '' : rest.slice(2, at)
    const advice = /[/@#?]/.test(userinfo)
      ? ENCODE
      : 'check the host and the port (an IPv6 address in [brackets])'
    throw new ConfigError('store', `${masked} is not a valid URL: ${advice}`)
  }
  // `u:12/pa@host` parses as the host `u`, port 12, path `/pa@host`: a raw `/` in a password.
  if (parsed.pathname.includes('@')) throw new ConfigError('store', `${masked}: ${ENCODE}`)
}

/** `url` as the scheme's driver parses it, or `undefined` when it cannot. */
function parse(url: string, scheme: string): URL | undefined {
  try {
    return new URL(url)
  } catch {
    if (scheme !== 'postgres' && scheme !== 'postgresql') return undefined
  }
  try {
    // pg-connection-string encodes spaces and retries an empty host with a dummy one.
    const encoded = / |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url)
      ? encodeURI(url).replace(/%25(\d\d)/g, '%$1')
      : url
    return new URL(encoded.replace('@/', '@___DUMMY___/'))
  } catch {
    return undefined
  }
}

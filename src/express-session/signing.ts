/**
 * The session cookie as express-session writes it: `s:<id>.<signature>` (cookie-signature, HMAC-SHA256
 * with the first secret), URI-encoded; read back with any of the secrets, so a secret can be rotated
 * by putting the new one first. The Cookie header is read, else `req.cookies` (cookie-parser, which an
 * app may have given a changed header); `req.signedCookies` is not, as cookie-parser checked those with
 * its own secret. An unsigned value, or one signed by another secret, is no session ID.
 */
import type { ServerResponse } from 'node:http'
import { parse } from 'cookie'
import { sign, unsign } from 'cookie-signature'
import { type CookieData, serializeCookie } from './cookie.js'
import type { SessionRequest } from './session.js'

/** A signing secret: a string or a Buffer. */
export type Secret = string | Buffer

/** The session ID in the request's `name` cookie, if it carries a valid signature by one of `secrets`. */
export function readSessionId(
  req: SessionRequest,
  name: string,
  secrets: readonly Secret[],
): string | undefined {
  const header = req.headers.cookie
  const raw =
    (header ? parse(header)[name] : undefined) ||
    (req as { cookies?: Record<string, unknown> }).cookies?.[name]
  if (typeof raw !== 'string' || !raw.startsWith('s:')) return undefined
  const signed = raw.slice(2)
  for (const secret of secrets) {
    const id = unsign(signed, secret as string)
    if (id !== false) return id
  }
  return undefined
}

/** Adds the signed session cookie to the response's Set-Cookie headers. */
export function writeSessionCookie(
  res: ServerResponse,
  name: string,
  id: string,
  secret: Secret,
  data: CookieData,
): void {
  const header = serializeCookie(name, `s:${sign(id, secret as string)}`, data)
  const previous = res.getHeader('Set-Cookie')
  const list = previous === undefined ? [] : Array.isArray(previous) ? previous : [String(previous)]
  res.setHeader('Set-Cookie', [...list, header])
}

/**
 * Whether the request came over TLS: the socket says so; or, with `proxy: true`, the first
 * X-Forwarded-Proto is https; or, with `proxy` unset, Express's `req.secure` (its "trust proxy").
 */
export function isSecure(req: SessionRequest, proxy: boolean | undefined): boolean {
  if ((req.socket as { encrypted?: boolean } | null)?.encrypted) return true
  if (proxy === false) return false
  if (proxy !== true) return (req as { secure?: unknown }).secure === true
  const header = req.headers['x-forwarded-proto']
  const first = (Array.isArray(header) ? header[0] : header)?.split(',')[0]?.trim().toLowerCase()
  return first === 'https'
}

/**
 * What the framework adapters share: the headers a commit puts on a response, and the HTTP face of
 * latchkey's errors, so each framework's own error handling answers them (503 for a store that is
 * down, the `CsrfError`'s status for a forged request). No session logic lives here.
 */
import { isUnavailableError } from '../core/errors.js'
import type { CommitResult } from '../core/manager.js'

/** The commit of a request whose handler failed: nothing saved, nothing set but the private headers. */
export const DISCARDED: CommitResult = Object.freeze({ setCookie: null, private: true })

/** The cookies a commit sends, in order: the session's, then the CSRF pre-session cookie's. */
export function commitCookies(result: CommitResult): string[] {
  const csrfCookie = (result as { readonly csrfCookie?: string | undefined }).csrfCookie
  if (result.setCookie === null) return csrfCookie === undefined ? [] : [csrfCookie]
  return csrfCookie === undefined ? [result.setCookie] : [result.setCookie, csrfCookie]
}

/** A `Vary` value that includes `Cookie`: the same value when it already names it (or is `*`). */
export function varyWithCookie(vary: string | null | undefined): string {
  if (!vary) return 'Cookie'
  return /(^|,)\s*(cookie|\*)\s*(,|$)/i.test(vary) ? vary : `${vary}, Cookie`
}

/** The headers of a commit other than cookies, as `[name, value]` pairs; `vary` is the response's current `Vary`. */
export function commitHeaders(result: CommitResult, vary: string | null | undefined): [string, string][] {
  const headers: [string, string][] = []
  if (result.private) headers.push(['Cache-Control', 'no-store'], ['Vary', varyWithCookie(vary)])
  if (result.clearSiteData !== undefined) headers.push(['Clear-Site-Data', result.clearSiteData])
  return headers
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

const UNAVAILABLE_MESSAGE =
  'Service unavailable: the session store is not answering. Please try again shortly.\n'

/**
 * Gives a latchkey error the fields Express, Fastify, Koa and Hono read to answer it: a store failure
 * or a lasting conflict becomes 503 with `Retry-After: 1`, a `CsrfError` its own `status` (403, or
 * 413). The error keeps its class and identity, so the app's error handler can still test
 * `instanceof CsrfError`. Fields the error already has are kept; any other error is returned as it is.
 */
export function asHttpError<E>(error: E): E {
  if (typeof error !== 'object' || error === null || !Object.isExtensible(error)) return error
  const code = (error as { code?: unknown }).code
  let status: number
  let headers: Record<string, string>
  let message: string
  if (isUnavailableError(error)) {
    status = 503
    headers = { 'Retry-After': '1', 'Cache-Control': 'no-store' }
    message = UNAVAILABLE_MESSAGE
  } else if (code === 'ERR_LATCHKEY_CSRF') {
    const own = (error as { status?: unknown }).status
    status = typeof own === 'number' ? own : 403
    // The rest of an oversized body is left unread: the connection cannot carry another request.
    headers = status === 413 ? { Connection: 'close' } : {}
    const reason = (error as { reason?: unknown }).reason
    message = `${status === 413 ? 'Payload too large' : 'Forbidden'}: the request failed the CSRF check (${String(reason)}).\n`
  } else {
    return error
  }
  const fields: Omit<HttpErrorFields, 'getResponse'> & { getResponse(): Response } = {
    status,
    statusCode: status,
    expose: status < 500,
    headers,
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

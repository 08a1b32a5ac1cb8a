/**
 * Every error latchkey throws is a `SessionError` with a stable `code`.
 * Network input (cookies, headers, forms) never produces one: bad input gets a fresh
 * anonymous session or a 403 instead.
 */
export class SessionError extends Error {
  /** Stable machine-readable code, e.g. `ERR_LATCHKEY_CONFIG`. */
  readonly code: string

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** Bad configuration, refused when the manager or a store is built. `option` names the culprit. */
export class ConfigError extends SessionError {
  /** The option at fault, as a dotted path (`cookie.sameSite`, `keys[1]`). */
  readonly option: string

  constructor(option: string, message: string) {
    super('ERR_LATCHKEY_CONFIG', `${option}: ${message}`)
    this.option = option
  }
}

/** A store backend failed (not "not found": that is `null`). Requests fail closed with a 503. */
export class StoreError extends SessionError {
  /** Store class name, e.g. `SqliteStore`. */
  readonly store: string
  /** The contract method that failed: `get`, `create`, `update`, `touch`, `destroy`, ... */
  readonly operation: string

  constructor(store: string, operation: string, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause)
    super('ERR_LATCHKEY_STORE', `${store}.${operation} failed: ${reason}`, { cause })
    this.store = store
    this.operation = operation
  }
}

/**
 * Why a request failed the CSRF check:
 * - `cross-site`: `Sec-Fetch-Site` says the request came from another site, or from another origin
 *   of this site that is not trusted;
 * - `origin-mismatch`: without fetch metadata, `Origin` (or, over HTTPS, `Referer`) names an origin
 *   that is neither the app's nor trusted, or is `null`;
 * - `missing-token`: no token in the `x-csrf-token` header or the `_csrf` form field;
 * - `bad-token`: a token that is malformed, or not made for this session (or this browser's
 *   pre-session secret);
 * - `body-too-large`: the token had to be read from a form body larger than `maxBodyBytes` (413);
 * - `too-many-fields`: the form had more than `maxFields` fields (or multipart parts) before `_csrf`.
 */
export type CsrfReason =
  | 'cross-site'
  | 'origin-mismatch'
  | 'missing-token'
  | 'bad-token'
  | 'body-too-large'
  | 'too-many-fields'

/**
 * A request failed the CSRF check. Adapters answer `status` (403, or 413 for `body-too-large`);
 * applications may catch it to render a page. Its message never holds a token or a secret.
 */
export class CsrfError extends SessionError {
  /** Why the check failed; see {@link CsrfReason}. */
  readonly reason: CsrfReason
  /** The HTTP status to answer: 413 for `body-too-large`, 403 otherwise. */
  readonly status: 403 | 413

  constructor(reason: CsrfReason, message = `CSRF check failed: ${reason}`) {
    super('ERR_LATCHKEY_CSRF', message)
    this.reason = reason
    this.status = reason === 'body-too-large' ? 413 : 403
  }
}

/**
 * Why a route behind the fresh-authentication guard (`requireFreshAuth(maxAgeMs)`) was refused:
 * - `not-signed-in`: no user is signed in to the session;
 * - `reauthentication-required`: a user is signed in, but proved who they are longer than `maxAgeMs`
 *   ago (or before latchkey kept the time): ask for the password again, then `session.reauthenticate()`.
 */
export type FreshAuthReason = 'not-signed-in' | 'reauthentication-required'

/**
 * A route needs the user to have proved who they are recently (OWASP ASVS V7.5), and they have not.
 * The adapters' `requireFreshAuth(maxAgeMs)` raises it with `status` 403; catch it by its `code`
 * (`ERR_LATCHKEY_FRESH_AUTH`) or class to render a "confirm your password" page.
 */
export class FreshAuthError extends SessionError {
  /** Why the route was refused; see {@link FreshAuthReason}. */
  readonly reason: FreshAuthReason
  /** The HTTP status to answer: 403. */
  readonly status: 403 = 403
  /** The age the route asked for, in milliseconds. */
  readonly maxAgeMs: number

  constructor(reason: FreshAuthReason, maxAgeMs: number) {
    super(
      'ERR_LATCHKEY_FRESH_AUTH',
      reason === 'not-signed-in'
        ? 'this action needs a signed-in user (not-signed-in)'
        : `this action needs the user to have proved who they are within ${maxAgeMs} ms (reauthentication-required): ask for the password again, then call session.reauthenticate()`,
    )
    this.reason = reason
    this.maxAgeMs = maxAgeMs
  }
}

/**
 * A session write kept losing compare-and-set races past `commitTimeoutMs`.
 * Rare by design: in one process commits on a session queue, across processes they retry with jitter.
 */
export class ConflictError extends SessionError {
  constructor(message = 'session write kept conflicting with concurrent writes') {
    super('ERR_LATCHKEY_CONFLICT', message)
  }
}

/** The codes of errors that mean "try again shortly" (503), not "the application is broken" (500). */
const UNAVAILABLE_CODES: ReadonlySet<unknown> = new Set(['ERR_LATCHKEY_STORE', 'ERR_LATCHKEY_CONFLICT'])

/** The `code` of an error-like value, or `undefined`. Never throws, whatever it is handed. */
function codeOf(error: unknown): unknown {
  try {
    return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
  } catch {
    return undefined
  }
}

/**
 * True for a store failure or a lasting write conflict: the request should be answered 503. Decided
 * by the error's `code`, so an error from another installed copy of latchkey counts the same.
 */
export function isUnavailableError(error: unknown): boolean {
  return UNAVAILABLE_CODES.has(codeOf(error))
}

/** Wraps any backend failure as a `StoreError`, leaving one that already is (by class or by code) untouched. */
export function toStoreError(store: string, operation: string, cause: unknown): StoreError {
  if (cause instanceof StoreError) return cause
  if (codeOf(cause) === 'ERR_LATCHKEY_STORE') return cause as StoreError
  return new StoreError(store, operation, cause)
}

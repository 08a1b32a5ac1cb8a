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

/** A request failed the CSRF check. Adapters answer 403; applications may catch it to render a page. */
export class CsrfError extends SessionError {
  /** Why the check failed, e.g. `cross-site`, `origin-mismatch`, `token-missing`, `token-invalid`. */
  readonly reason: string

  constructor(reason: string, message = `CSRF check failed: ${reason}`) {
    super('ERR_LATCHKEY_CSRF', message)
    this.reason = reason
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

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

/** Wraps any backend failure as a `StoreError`, leaving one that already is untouched. */
export function toStoreError(store: string, operation: string, cause: unknown): StoreError {
  return cause instanceof StoreError ? cause : new StoreError(store, operation, cause)
}

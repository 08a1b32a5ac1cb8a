import { ConfigError, SessionError, StoreError, toStoreError } from './errors.js'
import { NO_METRICS, type SessionMetrics } from './metrics.js'
import type { SessionRecord, SessionStore, SyncSessionStore, UserIndexedStore } from './store.js'
import { isClosableStore, isPromise, isSyncStore, isUserIndexedStore } from './store.js'

/**
 * The code of a store's refusal of a record too large for it (past MariaDB's `max_allowed_packet`,
 * say): the same as the manager's own `maxPayloadBytes` refusal, because it is the same fault, the
 * request's own. Never a store outage: it passes every guard as it is and is answered 500, not 503.
 */
export const TOO_LARGE = 'ERR_LATCHKEY_SESSION_TOO_LARGE'

/** A store's refusal of the request itself (see {@link TOO_LARGE}), for a store to reject with. */
export function storeRefusal(message: string, cause?: unknown): SessionError {
  return new SessionError(TOO_LARGE, message, { cause })
}

/** True for a {@link storeRefusal} (by code, so one from another copy of latchkey counts too). */
export function isStoreRefusal(error: unknown): error is SessionError {
  return error instanceof Error && (error as { code?: unknown }).code === TOO_LARGE
}

/**
 * True for a `ConfigError` (by code): a store whose server refused its connection (a role, database or
 * password it does not accept) rejects with one. Retrying never helps, so it is not a store outage.
 */
function isConfigError(error: unknown): error is SessionError {
  return error instanceof Error && (error as { code?: unknown }).code === 'ERR_LATCHKEY_CONFIG'
}

/**
 * What a failed store call rejects with: a refusal of the record, or a configuration error (a server
 * that refused the connection), as it is; anything else as a `StoreError`.
 */
export function toGuardedError(store: string, operation: string, error: unknown): Error {
  return isStoreRefusal(error) || isConfigError(error) ? error : toStoreError(store, operation, error)
}

/**
 * The store as the manager uses it: any rejection (or synchronous throw) of a store call, whatever
 * the store rejects with, becomes a `StoreError` naming the store and the operation with the original
 * error as `cause`. Adapters answer those 503, so a third-party store that rejects with a plain `Error`
 * fails closed exactly as a bundled one does. The exceptions, passed on as they are and answered 500:
 * a store's refusal of a record too large for it ({@link storeRefusal}), the request's own fault; and a
 * `ConfigError`, which a bundled store rejects with when its server refuses the connection (a wrong
 * password, a role or database that does not exist): the configuration is wrong, and retrying never helps.
 *
 * Every promise call has a deadline, `storeTimeoutMs`: a call that has not settled by then rejects
 * with a `StoreError` (503 with `Retry-After`), so a store that stops answering without closing its
 * connections (a partition, a database frozen by a lock) never holds requests for as long as TCP takes
 * to give up. What the call does later is ignored; the store's own timeouts free its connection. The
 * `*Sync` face needs no timer: it cannot hang without blocking the whole process anyway.
 *
 * One guard serves both faces: the promise methods here, and {@link sync}, the same guard over the
 * store's `*Sync` methods, present only when the store has that capability (one dispatch, made here,
 * on what the store can do).
 */
export class GuardedStore implements SessionStore {
  /** The store's class name, for error messages. */
  readonly name: string
  /** The store's user index, when it has one. */
  readonly indexed: boolean
  /** The store's synchronous methods, guarded the same way, when it has them; else `null`. */
  readonly sync: SyncSessionStore | null

  /**
   * `timeoutMs` is the manager's `storeTimeoutMs`, already validated: a whole number of ms that
   * `setTimeout` honours.
   */
  constructor(
    readonly inner: SessionStore,
    private readonly timeoutMs: number,
    private readonly metrics: SessionMetrics = NO_METRICS,
  ) {
    this.name = (inner.constructor as { name?: unknown } | undefined)?.name
      ? String(inner.constructor.name)
      : 'store'
    this.indexed = isUserIndexedStore(inner)
    this.sync = isSyncStore(inner) ? timedSync(this.guardSync(inner), metrics) : null
  }

  get(key: string): Promise<SessionRecord | null> {
    return this.call('get', () => this.inner.get(key))
  }

  create(record: SessionRecord): Promise<boolean> {
    return this.call('create', () => this.inner.create(record))
  }

  update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    return this.call('update', () => this.inner.update(record, expectedVersion))
  }

  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    return this.call('touch', () => this.inner.touch(key, lastSeenAt, idleExpiresAt))
  }

  destroy(key: string): Promise<void> {
    return this.call('destroy', () => this.inner.destroy(key))
  }

  /** {@link UserIndexedStore.listByUser}; only call it when {@link indexed}. */
  listByUser(userId: string): Promise<SessionRecord[]> {
    return this.call('listByUser', () => (this.inner as unknown as UserIndexedStore).listByUser(userId))
  }

  /** Closes the store if it holds resources. */
  close(): Promise<void> {
    const inner = this.inner
    return this.call('close', async () => {
      if (isClosableStore(inner)) await inner.close()
    })
  }

  /**
   * The synchronous face: each method the store's own, through the same guard as the promise face. A
   * `*Sync` method that answers with a promise (a tracing `Proxy` that made every method async, say)
   * is a `ConfigError` naming it: taken for a record, the promise would turn every request into a new
   * anonymous session without a word.
   */
  private guardSync(inner: SyncSessionStore): SyncSessionStore {
    // Written out per method: these run on every request, and a closure per call (for
    // guardStoreCall to run) is garbage the promise face can afford and this one need not make.
    const name = this.name
    return {
      getSync: (key) => {
        let result: ReturnType<SyncSessionStore['getSync']>
        try {
          result = inner.getSync(key)
        } catch (error) {
          throw toGuardedError(name, 'get', error)
        }
        return answeredSynchronously(name, 'getSync', result)
      },
      createSync: (record) => {
        let result: boolean
        try {
          result = inner.createSync(record)
        } catch (error) {
          throw toGuardedError(name, 'create', error)
        }
        return answeredSynchronously(name, 'createSync', result)
      },
      updateSync: (record, expectedVersion) => {
        let result: boolean
        try {
          result = inner.updateSync(record, expectedVersion)
        } catch (error) {
          throw toGuardedError(name, 'update', error)
        }
        return answeredSynchronously(name, 'updateSync', result)
      },
      touchSync: (key, lastSeenAt, idleExpiresAt) => {
        try {
          answeredSynchronously(name, 'touchSync', inner.touchSync(key, lastSeenAt, idleExpiresAt) as unknown)
        } catch (error) {
          if (error instanceof ConfigError) throw error
          throw toGuardedError(name, 'touch', error)
        }
      },
    }
  }

  /**
   * A promise method: a synchronous throw (or a non-promise answer) turned into a promise, a failure
   * into what {@link toGuardedError} makes of it, and the deadline.
   */
  private call<R>(operation: string, run: () => Promise<R>): Promise<R> {
    let pending: Promise<R>
    try {
      const answer: unknown = run()
      if (!isPromise(answer)) return Promise.resolve(answer as R)
      pending = answer as Promise<R>
    } catch (error) {
      return Promise.reject(toGuardedError(this.name, operation, error))
    }
    const metrics = this.metrics
    const started = metrics.enabled ? performance.now() : 0
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (metrics.enabled) metrics.storeCall(operation, false, performance.now() - started)
        reject(this.timedOut(operation))
      }, this.timeoutMs)
      Promise.resolve(pending).then(
        (value) => {
          clearTimeout(timer)
          if (metrics.enabled) metrics.storeCall(operation, true, performance.now() - started)
          resolve(value)
        },
        (error: unknown) => {
          clearTimeout(timer)
          if (metrics.enabled) metrics.storeCall(operation, false, performance.now() - started)
          reject(toGuardedError(this.name, operation, error))
        },
      )
    })
  }

  /** The `StoreError` of a call that did not settle within the deadline. */
  private timedOut(operation: string): StoreError {
    return new StoreError(
      this.name,
      operation,
      new Error(
        `no answer within storeTimeoutMs (${this.timeoutMs} ms): the store is not answering (a network partition, a database waiting on a lock or a full disk?)`,
      ),
    )
  }
}

/**
 * The synchronous face with each call's duration recorded, when metrics are on; the face itself when
 * they are off, so the fast path pays nothing for them.
 */
function timedSync(sync: SyncSessionStore, metrics: SessionMetrics): SyncSessionStore {
  if (!metrics.enabled) return sync
  const timed = <A extends unknown[], R>(operation: string, method: (...args: A) => R) => {
    return (...args: A): R => {
      const started = performance.now()
      let ok = false
      try {
        const result = method(...args)
        ok = true
        return result
      } finally {
        metrics.storeCall(operation, ok, performance.now() - started)
      }
    }
  }
  return {
    getSync: timed('get', sync.getSync),
    createSync: timed('create', sync.createSync),
    updateSync: timed('update', sync.updateSync),
    touchSync: timed('touch', sync.touchSync),
  }
}

/** A `*Sync` method's answer, or a `ConfigError` naming the method when it answered with a promise. */
function answeredSynchronously<T>(store: string, method: keyof SyncSessionStore, result: T): T {
  if (!isPromise(result)) return result
  // Whatever it settles to, nothing waits for it: keep its rejection from going unhandled.
  Promise.resolve(result).catch(() => {})
  throw new ConfigError(
    'store',
    `${store}.${method}() answered with a promise, but a *Sync method must answer synchronously (is the store wrapped in something that makes every method async?): give the manager the store itself, or a wrapper without the *Sync methods`,
  )
}

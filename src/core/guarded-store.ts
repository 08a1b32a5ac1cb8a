import { ConfigError, toStoreError } from './errors.js'
import type { SessionRecord, SessionStore, SyncSessionStore, UserIndexedStore } from './store.js'
import { guardStoreCall, isClosableStore, isPromise, isSyncStore, isUserIndexedStore } from './store.js'

/**
 * The store as the manager uses it: any rejection (or synchronous throw) of a store call, whatever
 * the store rejects with, becomes a `StoreError` naming the store and the operation with the original
 * error as `cause`. Adapters answer those 503, so a third-party store that rejects with a plain `Error`
 * fails closed exactly as a bundled one does.
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

  constructor(readonly inner: SessionStore) {
    this.name = (inner.constructor as { name?: unknown } | undefined)?.name
      ? String(inner.constructor.name)
      : 'store'
    this.indexed = isUserIndexedStore(inner)
    this.sync = isSyncStore(inner) ? this.guardSync(inner) : null
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
          throw toStoreError(name, 'get', error)
        }
        return answeredSynchronously(name, 'getSync', result)
      },
      createSync: (record) => {
        let result: boolean
        try {
          result = inner.createSync(record)
        } catch (error) {
          throw toStoreError(name, 'create', error)
        }
        return answeredSynchronously(name, 'createSync', result)
      },
      updateSync: (record, expectedVersion) => {
        let result: boolean
        try {
          result = inner.updateSync(record, expectedVersion)
        } catch (error) {
          throw toStoreError(name, 'update', error)
        }
        return answeredSynchronously(name, 'updateSync', result)
      },
      touchSync: (key, lastSeenAt, idleExpiresAt) => {
        try {
          answeredSynchronously(name, 'touchSync', inner.touchSync(key, lastSeenAt, idleExpiresAt) as unknown)
        } catch (error) {
          if (error instanceof ConfigError) throw error
          throw toStoreError(name, 'touch', error)
        }
      },
    }
  }

  /** A promise method: the guard, with a synchronous throw (or a non-promise answer) turned into a promise. */
  private call<R>(operation: string, run: () => Promise<R>): Promise<R> {
    try {
      return Promise.resolve(guardStoreCall(this.name, operation, run))
    } catch (error) {
      return Promise.reject(error)
    }
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

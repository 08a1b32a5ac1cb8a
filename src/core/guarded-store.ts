import { toStoreError } from './errors.js'
import type { SessionRecord, SessionStore, SyncSessionStore, UserIndexedStore } from './store.js'
import { guardedResult, guardStoreCall, isClosableStore, isSyncStore, isUserIndexedStore } from './store.js'

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

  /** The synchronous face: each method the store's own, through the same guard as the promise face. */
  private guardSync(inner: SyncSessionStore): SyncSessionStore {
    // guardStoreCall written out per method: these run on every request, and a closure per call
    // (for guardStoreCall to run) is garbage the promise face can afford and this one need not make.
    const name = this.name
    return {
      getSync: (key) => {
        try {
          return guardedResult(name, 'get', inner.getSync(key))
        } catch (error) {
          throw toStoreError(name, 'get', error)
        }
      },
      createSync: (record) => {
        try {
          return guardedResult(name, 'create', inner.createSync(record))
        } catch (error) {
          throw toStoreError(name, 'create', error)
        }
      },
      updateSync: (record, expectedVersion) => {
        try {
          return guardedResult(name, 'update', inner.updateSync(record, expectedVersion))
        } catch (error) {
          throw toStoreError(name, 'update', error)
        }
      },
      touchSync: (key, lastSeenAt, idleExpiresAt) => {
        try {
          return guardedResult(name, 'touch', inner.touchSync(key, lastSeenAt, idleExpiresAt))
        } catch (error) {
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

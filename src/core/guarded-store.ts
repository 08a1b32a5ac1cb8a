import { toStoreError } from './errors.js'
import type { SessionRecord, SessionStore, SyncSessionStore, UserIndexedStore } from './store.js'
import { isClosableStore, isSyncStore, isUserIndexedStore } from './store.js'

/**
 * The store as the manager uses it: any rejection (or synchronous throw) of a store call, whatever
 * the store rejects with, becomes a `StoreError` naming the store and the operation with the original
 * error as `cause`. Adapters answer those 503, so a third-party store that rejects with a plain `Error`
 * fails closed exactly as a bundled one does.
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
    this.sync = isSyncStore(inner) ? new GuardedSyncStore(inner, this.name) : null
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

  private call<R>(operation: string, run: () => Promise<R>): Promise<R> {
    try {
      return Promise.resolve(run()).catch((error: unknown) => {
        throw toStoreError(this.name, operation, error)
      })
    } catch (error) {
      return Promise.reject(toStoreError(this.name, operation, error))
    }
  }
}

/** The synchronous methods of a store, each throwing a `StoreError` for whatever the store throws. */
class GuardedSyncStore implements SyncSessionStore {
  constructor(
    private readonly inner: SyncSessionStore,
    private readonly name: string,
  ) {}

  getSync(key: string): SessionRecord | null {
    try {
      return this.inner.getSync(key)
    } catch (error) {
      throw toStoreError(this.name, 'get', error)
    }
  }

  createSync(record: SessionRecord): boolean {
    try {
      return this.inner.createSync(record)
    } catch (error) {
      throw toStoreError(this.name, 'create', error)
    }
  }

  updateSync(record: SessionRecord, expectedVersion: number): boolean {
    try {
      return this.inner.updateSync(record, expectedVersion)
    } catch (error) {
      throw toStoreError(this.name, 'update', error)
    }
  }

  touchSync(key: string, lastSeenAt: number, idleExpiresAt: number): void {
    try {
      this.inner.touchSync(key, lastSeenAt, idleExpiresAt)
    } catch (error) {
      throw toStoreError(this.name, 'touch', error)
    }
  }
}

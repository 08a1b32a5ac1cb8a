/**
 * The store contract: what latchkey asks of every backend (memory, files, SQLite, PostgreSQL,
 * MySQL/MariaDB, Redis, or yours).
 *
 * A store never sees a session ID. It keeps {@link SessionRecord}s under `key`, the SHA-256 of the
 * ID in base64url, so a dump of the store cannot be replayed as cookies. The payload is an opaque,
 * already encrypted string: a store stores and returns it byte for byte and never looks inside.
 *
 * The rules, exactly:
 *
 * - **Not found is `null`, never an error.** A key that was never written, a record whose expiry
 *   has passed, and a tombstone all read as `null`. Keys come from the core and are always 43
 *   characters of base64url; a store may treat anything else as not found.
 * - **Expiry.** A record is live while `now < min(idleExpiresAt, absoluteExpiresAt)`, with `now`
 *   taken from the store's {@link Clock}. The moment that is false the record is gone for every
 *   method (get, update, touch, listByUser, count, list), whether or not it has been physically
 *   removed yet. Removal is lazy or by {@link PrunableStore.prune}; it is never a visible event.
 *   Nor is it ever early: the core's notices of why a session ended (`session.endedBecause`, among
 *   them the pending notice of a timeout that must outlive its session's record) are ordinary records
 *   the core writes with these methods, and a store keeps them to their own deadlines like any other.
 *   A store keeps nothing of an expired record to tell a timeout (`lifecycle/notice.ts`).
 * - **Errors.** A failing backend (connection refused, disk full, closed store) rejects with a
 *   {@link StoreError} naming the store and the operation, with the driver's error as `cause`.
 *   Nothing is ever half-written: a write that rejects has not happened, a write that resolves has.
 * - **`create` is insert-only.** It writes the record only if no live record or live tombstone holds
 *   the key, and resolves `false` otherwise (the core then draws a new ID). It never overwrites.
 *   Of two racing creates on one key exactly one resolves `true`.
 * - **`update` is compare-and-set.** It replaces the record only if a live, non-tombstoned record
 *   holds the key with `version === expectedVersion`, and resolves `false` otherwise (the version
 *   moved, the record expired, was destroyed, or never existed). The caller passes
 *   `record.version === expectedVersion + 1`; the store writes the record as given. Of N racing
 *   updates from the same version exactly one resolves `true`.
 * - **`touch` moves expiry only.** It sets `lastSeenAt` and `idleExpiresAt` of a live record and
 *   leaves `version`, `payload`, `userId` and `absoluteExpiresAt` alone. Touching a missing,
 *   expired or tombstoned key does nothing and does not reject.
 * - **`destroy` leaves a tombstone.** After `destroy(key)`, `get` is `null`, `update` and `create`
 *   on the key resolve `false`, and `touch` does nothing, until the record's own expiry time; only
 *   then may the tombstone be removed. This is what stops a slow request that loaded the session
 *   before a logout from writing it back. Destroying a missing key is fine and resolves.
 *
 * Optional capabilities live in their own small interfaces, each with a type guard, so a caller
 * (the manager, the CLI) asks at run time what a store can do.
 */
import type { Clock } from './clock.js'
import { toStoreError } from './errors.js'

/** One session as a store keeps it. All times are epoch milliseconds. */
export interface SessionRecord {
  /** SHA-256 of the session ID, base64url (43 chars). Never the ID itself. */
  readonly key: string
  /** +1 on every payload write; the basis of compare-and-set. Starts at 1. */
  readonly version: number
  /** The signed-in user, in clear and indexed, or `null` for an anonymous session. */
  readonly userId: string | null
  /** When the session was created. */
  readonly createdAt: number
  /** Last request that used the session (updated by `touch` and `update`). */
  readonly lastSeenAt: number
  /** The idle deadline: last activity plus the idle timeout. */
  readonly idleExpiresAt: number
  /**
   * The absolute deadline: creation plus the absolute timeout. `touch` never moves it; an `update`
   * writes it as given (the core only ever brings it closer, e.g. for a renewed ID's short grace window).
   */
  readonly absoluteExpiresAt: number
  /** Opaque, AEAD-encrypted string produced by the core. Stored byte for byte. */
  readonly payload: string
}

/** The five methods every store implements. See the module comment for the exact contract. */
export interface SessionStore {
  /** The live record under `key`, or `null` (missing, expired or tombstoned). */
  get(key: string): Promise<SessionRecord | null>
  /** Inserts `record` if its key is free; `false` on collision. Never overwrites. */
  create(record: SessionRecord): Promise<boolean>
  /** Replaces the record if its stored version is `expectedVersion`; `false` otherwise. */
  update(record: SessionRecord, expectedVersion: number): Promise<boolean>
  /** Moves `lastSeenAt` and `idleExpiresAt` of a live record; never the payload. */
  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void>
  /** Removes the record, leaving a tombstone until its expiry. Idempotent. */
  destroy(key: string): Promise<void>
}

/**
 * A store that indexes records by user: "your devices" lists and "sign out everywhere" (which the
 * core does by destroying each listed record, so that every ending follows the same rule).
 */
export interface UserIndexedStore {
  /** Every live, non-tombstoned record of `userId`, in no particular order. */
  listByUser(userId: string): Promise<SessionRecord[]>
}

/** A store that can remove expired records and tombstones on demand. */
export interface PrunableStore {
  /** Physically removes records and tombstones whose expiry has passed; resolves how many. Never a live one. */
  prune(): Promise<number>
}

/** A store that can count its live sessions. */
export interface CountableStore {
  /** Number of live, non-tombstoned records. */
  count(): Promise<number>
}

/** A store that can enumerate its live sessions (for the CLI: list, rekey). */
export interface ListableStore {
  /** Every live, non-tombstoned record, streamed. */
  list(): AsyncIterable<SessionRecord>
}

/** A store with a schema it can create and upgrade. */
export interface MigratableStore {
  /** Creates or upgrades the schema. Safe to run any number of times, also concurrently. */
  migrate(): Promise<void>
  /** The DDL `migrate` would run, for operators who apply schema changes by hand. */
  schemaSql(): string
}

/**
 * A store that can also answer synchronously (MemoryStore; SqliteStore, whose driver is synchronous).
 * The methods mean exactly what their asynchronous namesakes mean and throw a `StoreError` where those
 * reject. The manager uses them for its fast path: a request whose session is read and written with
 * no other commit on it in flight is loaded, committed and answered without waiting for a promise.
 */
export interface SyncSessionStore {
  /** {@link SessionStore.get}, answered synchronously. */
  getSync(key: string): SessionRecord | null
  /** {@link SessionStore.create}, answered synchronously. */
  createSync(record: SessionRecord): boolean
  /** {@link SessionStore.update}, answered synchronously. */
  updateSync(record: SessionRecord, expectedVersion: number): boolean
  /** {@link SessionStore.touch}, answered synchronously. */
  touchSync(key: string, lastSeenAt: number, idleExpiresAt: number): void
}

/** A store holding resources (connections, file handles, timers) that must be released. */
export interface ClosableStore {
  /** Releases everything; afterwards the process can exit and every method rejects with `StoreError`. */
  close(): Promise<void>
}

/** Options every bundled store accepts. */
export interface StoreOptions {
  /** Where expiry decisions take their time from. Default: the system clock. */
  clock?: Clock
}

function hasMethods(store: object, names: readonly string[]): boolean {
  return names.every((name) => typeof (store as Record<string, unknown>)[name] === 'function')
}

/** True if `store` implements {@link UserIndexedStore}. */
export function isUserIndexedStore(store: object): store is UserIndexedStore {
  return hasMethods(store, ['listByUser'])
}

/** True if `store` implements {@link PrunableStore}. */
export function isPrunableStore(store: object): store is PrunableStore {
  return hasMethods(store, ['prune'])
}

/** True if `store` implements {@link CountableStore}. */
export function isCountableStore(store: object): store is CountableStore {
  return hasMethods(store, ['count'])
}

/** True if `store` implements {@link ListableStore}. */
export function isListableStore(store: object): store is ListableStore {
  return hasMethods(store, ['list'])
}

/** True if `store` implements {@link MigratableStore}. */
export function isMigratableStore(store: object): store is MigratableStore {
  return hasMethods(store, ['migrate', 'schemaSql'])
}

/** True if `store` implements {@link SyncSessionStore}. */
export function isSyncStore(store: object): store is SyncSessionStore {
  return hasMethods(store, ['getSync', 'createSync', 'updateSync', 'touchSync'])
}

/** True if `store` implements {@link ClosableStore}. */
export function isClosableStore(store: object): store is ClosableStore {
  return hasMethods(store, ['close'])
}

/** A store key as the core makes it: SHA-256, base64url, 43 characters. */
const STORE_KEY = /^[A-Za-z0-9_-]{43}$/

/**
 * True if `value` is a key the core could have made. A store may read anything else as not found and
 * refuse to write it, so that a foreign value never becomes a path, a Redis key or a row.
 */
export function isStoreKey(value: unknown): boolean {
  return typeof value === 'string' && STORE_KEY.test(value)
}

/** The instant a record stops being live: the earlier of its two deadlines. */
export function expiresAt(record: Pick<SessionRecord, 'idleExpiresAt' | 'absoluteExpiresAt'>): number {
  return Math.min(record.idleExpiresAt, record.absoluteExpiresAt)
}

/** A value now, or a promise of it: what a call returns that answers synchronously when it can. */
export type MaybePromise<T> = T | Promise<T>

/** True if `value` is a promise (any thenable), i.e. the answer is not there yet. */
export function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

/**
 * Runs one call of `store`'s `operation` the way it answers: a synchronous throw is thrown again, a
 * rejection rejects again, each as a `StoreError` naming the store and the operation with the original
 * error as `cause` (one that already is a `StoreError` passes unchanged). The one wrapper behind both
 * the promise and the `*Sync` face of every store call, in the core's guard and in the stores.
 */
export function guardStoreCall<T>(store: string, operation: string, call: () => T): T {
  try {
    return guardedResult(store, operation, call())
  } catch (error) {
    throw toStoreError(store, operation, error)
  }
}

/**
 * The answer half of {@link guardStoreCall}, for a hot path that runs the call inline in its own
 * `try` (and throws `toStoreError` from its `catch`) rather than build a closure per call: a value
 * is returned as it is, a promise rejects as a `StoreError`. Call it inside that `try`.
 */
export function guardedResult<T>(store: string, operation: string, result: T): T {
  if (!isPromise(result)) return result
  return Promise.resolve(result).catch((error: unknown) => {
    throw toStoreError(store, operation, error)
  }) as T
}

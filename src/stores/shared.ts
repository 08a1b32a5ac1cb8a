/**
 * What every bundled store would otherwise write for itself: the timer cap and the checks of delay
 * and clock options, the operation guard (closed, else any failure as a `StoreError`), the warning
 * hook, and the record copied off the caller's object.
 */
import type { Clock } from '../core/clock.js'
import { ConfigError } from '../core/errors.js'
import { toGuardedError } from '../core/guarded-store.js'
import {
  type ClosableStore,
  type CountableStore,
  isPromise,
  type ListableStore,
  type MaybePromise,
  type PrunableStore,
  type SessionRecord,
  type SessionStore,
  type UserIndexedStore,
} from '../core/store.js'
import { asRefusal, isServerRefusal } from './refusal.js'

/**
 * The contract plus the capabilities every bundled store has: a user index, prune, count, list and
 * close. What only some have (`*Sync`, migrations) each store adds itself.
 */
export interface BundledStore
  extends SessionStore,
    UserIndexedStore,
    PrunableStore,
    CountableStore,
    ListableStore,
    ClosableStore {}

/** The largest delay `setTimeout` and `setInterval` honour, in ms; larger values silently become 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647

/**
 * Returns `value` if it is a whole number of ms from `min` to {@link MAX_TIMER_MS}, else throws
 * `ConfigError` naming `option`. With `off`, `min` is 0 and the message says that 0 turns it off.
 */
export function validateDelay(value: unknown, option: string, min: 0 | 1, off = false): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMER_MS) {
    throw new ConfigError(
      option,
      `must be an integer from ${min}${off ? ' (off)' : ''} to ${MAX_TIMER_MS} ms, got ${String(value)}`,
    )
  }
  return value
}

/** Returns `clock` if it can tell the time, else throws `ConfigError('clock')`. */
export function validateClock(clock: Clock | undefined): Clock {
  if (typeof clock?.now !== 'function') throw new ConfigError('clock', 'must have a now() method')
  return clock
}

/**
 * Runs one operation of a store: with `closed`, fails at once; otherwise runs `call`. Either way a
 * failure comes out as a `StoreError` naming `store` and `operation` (a refusal of a record too large
 * for the store, `storeRefusal`, as it is), thrown when `call` answers synchronously and rejected when
 * it answers with a promise. A server that refused the connection (see `isServerRefusal`) is a
 * `ConfigError` with its reason instead: not an outage, so not answered 503 and retried.
 */
export function storeOperation<T>(store: string, operation: string, closed: boolean, call: () => T): T {
  try {
    if (closed) throw new Error('the store is closed')
    const result = call()
    if (!isPromise(result)) return result
    return Promise.resolve(result).catch((error: unknown) => {
      throw operationError(store, operation, error)
    }) as T
  } catch (error) {
    throw operationError(store, operation, error)
  }
}

/** What a failed operation rejects with: a server's refusal as a `ConfigError`, else {@link toGuardedError}'s. */
function operationError(store: string, operation: string, error: unknown): Error {
  if (!(error instanceof ConfigError) && isServerRefusal(error)) return asRefusal(store, error) as ConfigError
  return toGuardedError(store, operation, error)
}

/**
 * What a store tells its `onWarning` hook: something that went wrong where no caller can hear it (a
 * scheduled prune, a dropped idle connection, an unreadable file, a risky server setting). An `Error`,
 * so that a `StoreError`'s store, operation and cause reach the hook whole.
 */
export type WarningHook = (warning: Error) => void

/** The default {@link WarningHook}: one line on `console.warn`. */
export function warnOnConsole(warning: Error): void {
  console.warn(`latchkey: ${warning.message}`)
}

/**
 * `onWarning` checked (`ConfigError` when it is not a function), wrapped so that what it throws or
 * rejects with never reaches the store; a string becomes an `Error` with that message.
 */
export function warningHook(onWarning: unknown = warnOnConsole): (warning: Error | string) => void {
  if (typeof onWarning !== 'function') throw new ConfigError('onWarning', 'must be a function')
  return (warning) => {
    try {
      const returned: unknown = onWarning(typeof warning === 'string' ? new Error(warning) : warning)
      if (returned instanceof Promise) returned.catch(() => {})
    } catch {
      // A failing hook must neither fail the operation that had something to report, nor stop a schedule.
    }
  }
}

/**
 * A copy of the record's own fields (an absent user as `null`), so a store never keeps or writes the
 * caller's object, nor any extra property it carries.
 */
export function copyRecord(record: SessionRecord): SessionRecord {
  return {
    key: record?.key,
    version: record?.version,
    userId: record?.userId ?? null,
    createdAt: record?.createdAt,
    lastSeenAt: record?.lastSeenAt,
    idleExpiresAt: record?.idleExpiresAt,
    absoluteExpiresAt: record?.absoluteExpiresAt,
    payload: record?.payload,
  }
}

/**
 * `next(value)`: at once when `value` is there, else once it resolves. A chain of these stays
 * synchronous over a synchronous driver and becomes a promise over an asynchronous one, so the same
 * code serves a store's `*Sync` methods and its promise methods.
 */
export function andThen<T, R>(value: MaybePromise<T>, next: (value: T) => MaybePromise<R>): MaybePromise<R> {
  return isPromise(value) ? value.then(next) : next(value)
}

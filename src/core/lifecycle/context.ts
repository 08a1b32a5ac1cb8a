/**
 * What every room of the lifecycle works with: the options, the guarded store, the payloads (sealed
 * and opened through the keyring and the cache), the per-key queue and the audit hook. The manager
 * builds one and hands it to each room.
 */
import type { Keyring } from '../crypto.js'
import type { SessionEvent, SessionEventReason, SessionEventReasons } from '../events.js'
import type { GuardedStore } from '../guarded-store.js'
import type { SessionMetrics } from '../metrics.js'
import type { ResolvedOptions } from '../options.js'
import type { PayloadCache } from '../payload.js'
import type { KeyedQueue } from './queue.js'

/** The shared parts of one manager, for its rooms. */
export interface Lifecycle {
  readonly options: ResolvedOptions
  readonly keyring: Keyring
  /** The store; every failure of it, whatever it rejects with, surfaces as a `StoreError`. */
  readonly store: GuardedStore
  readonly payloads: PayloadCache
  /** Commits on one session queue behind each other within this process, so they never conflict here. */
  readonly queue: KeyedQueue
  /** Where loads, commits, conflicts, events and store latency are counted (nothing when off). */
  readonly metrics: SessionMetrics
  /**
   * Reports a lifecycle event to the application's `onEvent` hook, if any, and counts it; never throws.
   * An event of a type with reasons takes one of its fixed set (a metric attribute: never free text),
   * and a revocation how many sessions it ended.
   */
  emit<T extends SessionEvent['type']>(
    type: T,
    key: string | null,
    userId: string | null,
    ...detail: EventDetail<T>
  ): void
}

/** What an event of type `T` takes after its user: its reason, and for `revoked` how many sessions ended. */
export type EventDetail<T extends SessionEvent['type']> = T extends 'revoked'
  ? [reason: SessionEventReasons['revoked'], ended: number]
  : T extends keyof SessionEventReasons
    ? [reason: SessionEventReasons[T]]
    : []

/** The `emit` of a {@link Lifecycle}: events name sessions by a keyed digest of the store key, never by ID or key. */
export function emitter(
  keyring: Keyring,
  options: ResolvedOptions,
  onEvent: ((event: SessionEvent) => void) | undefined,
  metrics: SessionMetrics,
): Lifecycle['emit'] {
  if (!onEvent)
    return metrics.enabled
      ? (type, _key, _userId, ...[reason]: [SessionEventReason?, number?]) => metrics.event(type, reason)
      : () => {}
  return (type, key, userId, ...[reason, ended]: [SessionEventReason?, number?]) => {
    metrics.event(type, reason)
    const event: SessionEvent = {
      type,
      session: key === null ? null : keyring.digest(key),
      userId,
      at: options.clock.now(),
      ...(reason === undefined ? {} : { reason }),
      ...(ended === undefined ? {} : { ended }),
    }
    try {
      onEvent(event)
    } catch {
      // An audit hook must never break a request.
    }
  }
}

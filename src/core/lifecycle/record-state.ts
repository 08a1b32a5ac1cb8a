/**
 * What a stored record is, in the words of the rule at the top of `manager.ts`, and how each kind is
 * built. This is the only module that reads `meta.next`, `meta.retired` or the ended payload: the
 * manager, the CLI and the tests ask it.
 *
 * - **live**: the payload holds the session.
 * - **forwarder**: a renewal's old record; it answers for its successor until its grace window closes.
 * - **retired**: a `regenerate`'s old record; it opens nothing, but requests that loaded the session
 *   before the change still land their writes on the successor, and ends follow it there.
 * - **ended**: missing, expired, tombstoned, or holding the ended payload.
 */
import type { SessionMeta } from '../session.js'
import type { SessionRecord } from '../store.js'
import { expiresAt } from '../store.js'

/**
 * The payload of a record whose session was ended (logout, revoke, expiry, the old ID of a login).
 * Written by compare-and-set before the store's own tombstone, so the end wins every race; it opens to
 * nothing, and the core reads it as "no session".
 */
export const ENDED_PAYLOAD = ''

/** The four states of a record. */
export type RecordKind = 'live' | 'forwarder' | 'retired' | 'ended'

/** A record whose payload opened: its data and metadata, and whether a retired key sealed it. */
export interface OpenedRecord {
  readonly record: SessionRecord
  readonly data: Map<string, unknown>
  readonly meta: SessionMeta
  readonly stale: boolean
}

/** True for a record that is missing or holds the ended payload (it opens nothing, ever again). */
export function isEnded(record: SessionRecord | null): boolean {
  return record === null || record.payload === ENDED_PAYLOAD
}

/** The kind of an opened record; `ended` for none. */
export function kindOf(opened: { readonly meta: SessionMeta } | null): RecordKind {
  if (opened === null) return 'ended'
  if (opened.meta.next === undefined) return 'live'
  return opened.meta.retired ? 'retired' : 'forwarder'
}

/** The ID a forwarder or a retired record points to; `undefined` for a live record. */
export function successorOf(meta: SessionMeta): string | undefined {
  return meta.next
}

/** Timeouts that decide whether a record is still live, by this process's options. */
export interface Timeouts {
  readonly idleTimeoutMs: number
  readonly absoluteTimeoutMs: number
}

/**
 * Past its idle or absolute timeout by `timeouts` (the store may keep it longer, and a manager may be
 * configured shorter than the one that stored it: both deadlines are checked again here).
 */
export function isExpired(record: SessionRecord, now: number, timeouts: Timeouts): boolean {
  return (
    now >= expiresAt(record) ||
    now >= record.lastSeenAt + timeouts.idleTimeoutMs ||
    now >= record.createdAt + timeouts.absoluteTimeoutMs
  )
}

/** Seals a pointer's metadata (no data) for a store key. */
export type SealPointer = (meta: SessionMeta, key: string) => string

/** The record as an end writes it: next version, no user (out of the user index), the ended payload. */
export function endedRecord(record: SessionRecord): SessionRecord {
  return { ...record, version: record.version + 1, userId: null, payload: ENDED_PAYLOAD }
}

/**
 * A renewal's old record as a forwarder to `successorId`: it answers until `graceEndsAt` and not a
 * moment longer (both deadlines end there, and stores never move the absolute one on a touch).
 */
export function forwarderRecord(
  old: SessionRecord,
  to: { readonly successorId: string; readonly lineage: string },
  now: number,
  graceEndsAt: number,
  seal: SealPointer,
): SessionRecord {
  return {
    ...old,
    version: old.version + 1,
    lastSeenAt: now,
    idleExpiresAt: graceEndsAt,
    absoluteExpiresAt: graceEndsAt,
    payload: seal({ csrf: '', iat: now, lid: to.lineage, next: to.successorId }, old.key),
  }
}

/** A `regenerate`'s old record, retired: it points to its successor, opens nothing itself, and leaves the user index. */
export function retiredRecord(
  old: SessionRecord,
  to: { readonly successorId: string; readonly lineage: string },
  seal: SealPointer,
): SessionRecord {
  const meta: SessionMeta = { csrf: '', iat: 0, lid: to.lineage, next: to.successorId, retired: true }
  return { ...old, version: old.version + 1, userId: null, payload: seal(meta, old.key) }
}

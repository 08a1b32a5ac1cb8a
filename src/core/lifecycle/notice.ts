/**
 * "Why was I signed out?": when a session ends without its user asking (revoked from another device,
 * "sign out everywhere", a timeout found on load, a key no longer configured), a small **notice** is
 * left for the holder of its cookie, and the first load that brings that cookie learns the reason,
 * once, as `session.endedBecause`.
 *
 * The ended record cannot carry the reason (after `destroy` the store reads it as `null`), so the
 * notice is a record of its own, made with the ordinary store contract:
 *
 * - **Key**: SHA-256 of a fixed label and the session's store key, base64url (43 characters). Only
 *   the cookie's ID leads to it (ID -> store key -> notice key); it is never the ID or the store key.
 * - **Payload**: {@link NOTICE_PREFIX}, then `{"notice":<reason>}` sealed with the keyring, bound to
 *   the notice key. It holds the reason only: no user, no handle, no device. The prefix, which no
 *   sealed payload starts with, lets the CLI tell a notice from a session without keys (`count`),
 *   and leave it alone (`rekey`, `revoke --all`); a notice never opens as a session.
 * - **User**: `null`, so it is never in the user index.
 * - **Deadlines**: both at {@link NOTICE_TTL_MS} from the end, or the session's own absolute deadline
 *   when that comes sooner (after it the cookie would name an ended session anyway).
 * - **Told once**: the load that tells it turns it to the ended payload by compare-and-set, then
 *   destroys it. Of racing loads with the same cookie exactly one compare-and-set succeeds, and only
 *   that one tells; the tombstone keeps the key taken until the notice's deadline, so no second
 *   notice can be left there meanwhile.
 *
 * Leaving a notice is best effort: the end has happened when it is left, and a store failure while
 * leaving it loses the notice, never the end.
 */
import { createHash } from 'node:crypto'
import type { SessionRecord } from '../store.js'
import type { Lifecycle } from './context.js'
import type { Timeouts } from './record-state.js'
import { endedRecord } from './record-state.js'

/** Why a session ended without its user asking, as `session.endedBecause` tells it. */
export type EndReason =
  | 'revoked'
  | 'signed-out-everywhere'
  | 'idle-timeout'
  | 'absolute-timeout'
  | 'key-retired'

const REASONS: ReadonlySet<string> = new Set<EndReason>([
  'revoked',
  'signed-out-everywhere',
  'idle-timeout',
  'absolute-timeout',
  'key-retired',
])

/** The longest a notice waits for its cookie: 7 days. */
export const NOTICE_TTL_MS = 7 * 24 * 3_600_000

/** Domain separation of notice keys from session keys (which are SHA-256 of an ID alone). */
const NOTICE_LABEL = 'latchkey/notice/v1\0'

/** What every notice's payload starts with, in clear: no sealed payload (`<key id>.…`) or ended one does. */
export const NOTICE_PREFIX = '~notice:'

/** True for a notice record, without opening it (no key needed). */
export function isNoticeRecord(record: SessionRecord): boolean {
  return record.payload.startsWith(NOTICE_PREFIX)
}

/** The store key of the notice for the session stored under `sessionKey`. */
export function noticeKeyOf(sessionKey: string): string {
  return createHash('sha256').update(NOTICE_LABEL).update(sessionKey).digest('base64url')
}

/** Which timeout ended `record` at `now`: the absolute deadline when it has passed, else the idle one. */
export function timeoutOf(record: SessionRecord, now: number, timeouts: Timeouts): EndReason {
  const absolute = now >= record.absoluteExpiresAt || now >= record.createdAt + timeouts.absoluteTimeoutMs
  return absolute ? 'absolute-timeout' : 'idle-timeout'
}

/** Leaves and takes notices for one manager. */
export class Notices {
  constructor(private readonly life: Lifecycle) {}

  /**
   * Leaves a notice of `reason` for the holder of the session that was stored as `record`. Insert-only:
   * a notice already there (or the tombstone of one already told) is left alone.
   */
  async leave(record: SessionRecord, reason: EndReason): Promise<void> {
    const now = this.life.options.clock.now()
    const key = noticeKeyOf(record.key)
    const cap = now + NOTICE_TTL_MS
    const until = record.absoluteExpiresAt > now ? Math.min(cap, record.absoluteExpiresAt) : cap
    try {
      await this.life.store.create({
        key,
        version: 1,
        userId: null,
        createdAt: now,
        lastSeenAt: now,
        idleExpiresAt: until,
        absoluteExpiresAt: until,
        payload: NOTICE_PREFIX + this.life.keyring.seal(JSON.stringify({ notice: reason }), key),
      })
    } catch {
      // Best effort: the end stands without its notice.
    }
  }

  /**
   * The reason left for the session stored under `sessionKey`, told once: `null` when there is none,
   * or another request told it first. One store `get` when there is none.
   */
  async take(sessionKey: string): Promise<EndReason | null> {
    const { store } = this.life
    const key = noticeKeyOf(sessionKey)
    const record = await store.get(key)
    const reason = record === null ? null : this.reasonOf(record)
    if (reason === null) return null
    // The compare-and-set is the proof of telling: of racing loads, one wins.
    if (!(await store.update(endedRecord(record as SessionRecord), (record as SessionRecord).version)))
      return null
    await store.destroy(key)
    return reason
  }

  /**
   * Whether `record` (one that did not open) was sealed with a key the ring lacks, rather than damaged
   * under a key it has: its payload is in the sealed format, headed by a key id the ring does not know.
   * A store writer could forge that head too; it could as well destroy the record.
   */
  keyRetired(record: SessionRecord): boolean {
    const payload = record.payload
    return /^[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]+$/.test(payload) && !this.life.keyring.hasKeyOf(payload)
  }

  /** Whether a notice may be waiting for the session stored under `sessionKey` (a synchronous store only). */
  waitingSync(sessionKey: string): boolean {
    const record = this.life.store.sync?.getSync(noticeKeyOf(sessionKey)) ?? null
    return record !== null && isNoticeRecord(record)
  }

  /** The reason a notice record holds; `null` for anything else (a session, an ended or damaged record). */
  private reasonOf(record: SessionRecord): EndReason | null {
    if (!isNoticeRecord(record)) return null
    const opened = this.life.keyring.open(record.payload.slice(NOTICE_PREFIX.length), record.key)
    if (opened === null) return null
    let parsed: unknown
    try {
      parsed = JSON.parse(opened.plaintext)
    } catch {
      return null
    }
    const reason = (parsed as { notice?: unknown } | null)?.notice
    return typeof reason === 'string' && REASONS.has(reason) ? (reason as EndReason) : null
  }
}

/**
 * "Why was I signed out?": when a session ends without its user asking (revoked from another device,
 * "sign out everywhere", an idle or absolute timeout, a key no longer configured, a sign-in elsewhere
 * past the cap on sessions per user), a small **notice**
 * is left for the holder of its cookie, and the first load that brings that cookie learns the reason,
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
 * **Timeouts are left in advance.** A store forgets a record at its deadline (Redis by its TTL, every
 * store by `prune`), and nothing runs at that moment, so nothing could leave a notice then. Instead,
 * every signed-in session gets a *pending* notice when its record is created (sign-in, renewal,
 * `regenerate`): the same kind of record, its payload `~notice:timeout:<absolute deadline>` (unsealed:
 * see {@link PENDING_PREFIX}), version 1, with the session's `createdAt` and both deadlines at the
 * session's absolute deadline plus {@link NOTICE_TTL_MS}. It holds no session data (no user, no payload
 * of the session, nothing a store keeps that the session record did not show in clear), so the
 * session's data still leaves the store at its deadline exactly as before, on every store alike; and no
 * store does anything new.
 *
 * - A load whose cookie's record is **missing** (expired, pruned, freed by a TTL) tells a pending
 *   notice as `absolute-timeout` when its absolute deadline (or the absolute timeout of this manager)
 *   has passed, else `idle-timeout`. A record still there (ended payload, a pointer, one that does not
 *   open) never tells a pending notice: an end in progress writes its own reason first.
 * - An **end with a reason** turns the pending notice into that reason (compare-and-set from version 1),
 *   between its compare-and-set of the ended payload and its tombstone, so no load sees the session
 *   missing while the notice still says "timeout".
 * - An **end without one** (logout, a sign-in replacing the session, the CLI's `revoke`) and a
 *   rotation's old record (renewal, `regenerate`) **discard** it the same way: version 2, the ended
 *   payload, deadlines now, so it is gone at once (no tombstone kept for a week) and prune frees it.
 *
 * Anonymous sessions get no pending notice (nobody was signed out); sessions stored before this
 * version have none, and their timeouts are not told. The cost: one more store write when a
 * signed-in session is created (sign-in) or ended (logout), two per renewal, and one small record per
 * signed-in session until a week after its absolute deadline (or at once, on a logout).
 *
 * Leaving, preparing and discarding a notice are best effort: the end (or the write) has happened
 * when they run, and a store failure meanwhile loses the notice, never the end.
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
  | 'session-cap'

const REASONS: ReadonlySet<string> = new Set<EndReason>([
  'revoked',
  'signed-out-everywhere',
  'idle-timeout',
  'absolute-timeout',
  'key-retired',
  'session-cap',
])

/** The longest a notice waits for its cookie: 7 days. */
export const NOTICE_TTL_MS = 7 * 24 * 3_600_000

/** Domain separation of notice keys from session keys (which are SHA-256 of an ID alone). */
const NOTICE_LABEL = 'latchkey/notice/v1\0'

/** What every notice's payload starts with, in clear: no sealed payload (`<key id>.…`) or ended one does. */
export const NOTICE_PREFIX = '~notice:'

/**
 * What a pending notice's payload is, followed by the session's absolute deadline in decimal: unsealed,
 * since it says nothing the session's own record did not show in clear, and so no key is needed to tell
 * it (a key retired by `rekey` loses no timeout).
 */
const PENDING_PREFIX = `${NOTICE_PREFIX}timeout:`

/** True for a pending notice (a timeout not yet known to have happened), which no key seals. */
export function isPendingNotice(record: SessionRecord): boolean {
  return record.payload.startsWith(PENDING_PREFIX)
}

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

/** What a notice holds: a reason, or (pending) the absolute deadline of a session that may time out. */
type Content = { readonly reason: EndReason } | { readonly until: number }

/** Leaves, prepares, discards and takes notices for one manager. */
export class Notices {
  constructor(private readonly life: Lifecycle) {}

  /**
   * Leaves a notice of `reason` for the holder of the session that was stored as `record`: a new one,
   * or the session's pending notice turned to it. A notice of a reason already there (or the tombstone
   * of one already told) is left alone.
   */
  async leave(record: SessionRecord, reason: EndReason): Promise<void> {
    const now = this.life.options.clock.now()
    const key = noticeKeyOf(record.key)
    const cap = now + NOTICE_TTL_MS
    const until = record.absoluteExpiresAt > now ? Math.min(cap, record.absoluteExpiresAt) : cap
    const notice: SessionRecord = {
      key,
      version: 1,
      userId: null,
      createdAt: now,
      lastSeenAt: now,
      idleExpiresAt: until,
      absoluteExpiresAt: until,
      payload: this.seal({ notice: reason }, key),
    }
    try {
      if (await this.life.store.create(notice)) return
      // Taken: by the session's pending notice (version 1), which now says why.
      await this.life.store.update({ ...notice, version: 2 }, 1)
    } catch {
      // Best effort: the end stands without its notice.
    }
  }

  /**
   * Leaves the pending notice of a signed-in session just stored as `record` (see the module comment):
   * told as a timeout if the store forgets the record before anything ends it. Nothing for an
   * anonymous session.
   */
  async prepare(record: SessionRecord): Promise<void> {
    if (record.userId === null) return
    try {
      await this.life.store.create(this.pending(record))
    } catch {
      // Best effort: the session stands; its timeout will not be told.
    }
  }

  /** {@link prepare} on a synchronous store. */
  prepareSync(record: SessionRecord): void {
    if (record.userId === null || this.life.store.sync === null) return
    try {
      this.life.store.sync.createSync(this.pending(record))
    } catch {
      // Best effort, as prepare.
    }
  }

  /**
   * Discards the pending notice of the signed-in session stored as `record`, which ended without a
   * reason to tell or moved to a new ID: gone at once, with no tombstone kept. A notice that says a
   * reason already (version 2) stays.
   */
  async discard(record: SessionRecord): Promise<void> {
    if (record.userId === null) return
    const now = this.life.options.clock.now()
    // The pending notice (version 1) ended, its times all now: gone at once.
    const gone = endedRecord({
      ...this.pending(record, now),
      createdAt: now,
      idleExpiresAt: now,
      absoluteExpiresAt: now,
    })
    try {
      await this.life.store.update(gone, 1)
    } catch {
      // Best effort: a pending notice left behind is told only once the record is gone from the store.
    }
  }

  /**
   * The reason left for the session stored under `sessionKey`, told once: `null` when there is none,
   * or another request told it first. One store `get` when there is none; a pending notice is told
   * (as a timeout) only when the session's record is missing from the store, which one more `get` checks.
   */
  async take(sessionKey: string): Promise<EndReason | null> {
    const { store, options } = this.life
    const key = noticeKeyOf(sessionKey)
    const record = await store.get(key)
    const content = record === null ? null : this.contentOf(record)
    if (content === null) return null
    const notice = record as SessionRecord
    let reason: EndReason
    if ('reason' in content) {
      reason = content.reason
    } else {
      // Still there (an end in progress, a pointer, a record that does not open): no timeout to tell.
      if ((await store.get(sessionKey)) !== null) return null
      reason = timeoutOf({ ...notice, absoluteExpiresAt: content.until }, options.clock.now(), options)
    }
    // The compare-and-set is the proof of telling: of racing loads, one wins.
    if (!(await store.update(endedRecord(notice), notice.version))) return null
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

  /** The pending notice of the signed-in session stored as `record`. */
  private pending(record: SessionRecord, now = this.life.options.clock.now()): SessionRecord {
    const key = noticeKeyOf(record.key)
    const until = record.absoluteExpiresAt + NOTICE_TTL_MS
    return {
      key,
      version: 1,
      userId: null,
      createdAt: record.createdAt,
      lastSeenAt: now,
      idleExpiresAt: until,
      absoluteExpiresAt: until,
      payload: PENDING_PREFIX + String(record.absoluteExpiresAt),
    }
  }

  private seal(content: { notice: EndReason }, key: string): string {
    return NOTICE_PREFIX + this.life.keyring.seal(JSON.stringify(content), key)
  }

  /** What a notice record holds; `null` for anything else (a session, an ended or damaged record). */
  private contentOf(record: SessionRecord): Content | null {
    if (!isNoticeRecord(record)) return null
    if (isPendingNotice(record)) {
      const until = Number(record.payload.slice(PENDING_PREFIX.length))
      return Number.isSafeInteger(until) ? { until } : null
    }
    const opened = this.life.keyring.open(record.payload.slice(NOTICE_PREFIX.length), record.key)
    if (opened === null) return null
    let parsed: unknown
    try {
      parsed = JSON.parse(opened.plaintext)
    } catch {
      return null
    }
    const notice = (parsed as { notice?: unknown } | null)?.notice
    return typeof notice === 'string' && REASONS.has(notice) ? { reason: notice as EndReason } : null
  }
}

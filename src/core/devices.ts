/**
 * "Your devices": a user's live sessions, named by handles, and their revocation. A handle names a
 * session to its owner: its user and lineage (kept through renewal and `regenerate`), sealed with the
 * keyring's handle subkey. Neither the ID nor the store key is in it, it cannot be forged, it cannot be
 * used for another user's session, and it needs no index of its own.
 *
 * The cap on sessions per user (`maxSessionsPerUser`) counts through the same list, after a sign-in
 * has stored its session: past the cap it ends the least recently used sessions, or the new one
 * (`sessionCapPolicy: 'refuse'`), through the ending path. Every process ranks a user's sessions in the
 * same order (last request, then creation, then lineage), so sign-ins racing in several processes end
 * the same sessions, and each lists again after its ends until the cap holds.
 */
import { SessionError } from './errors.js'
import type { Lifecycle } from './lifecycle/context.js'
import type { Ending } from './lifecycle/ending.js'
import { MAX_HOPS } from './lifecycle/ending.js'
import { isExpired, kindOf } from './lifecycle/record-state.js'
import { MAX_USER_ID_LENGTH } from './session.js'

const HANDLE_CONTEXT = 'latchkey/handle/v2'
/**
 * The longest handle a user ID of {@link MAX_USER_ID_LENGTH} can give: JSON escapes a code unit into
 * at most 6 bytes; the lineage, brackets, quotes, nonce, tag, base64url and key id add the rest.
 */
const MAX_HANDLE_LENGTH = 9 + Math.ceil(((12 + 16 + 6 * MAX_USER_ID_LENGTH + 64) * 4) / 3)

/** One entry of `SessionManager.listUserSessions`. */
export interface UserSessionInfo {
  /** Opaque, unforgeable name of the session for `SessionManager.revoke`. Neither the ID nor its store key. */
  readonly handle: string
  /** When the session began (epoch ms). */
  readonly createdAt: number
  /** Its last request (epoch ms, to within the touch interval). */
  readonly lastSeenAt: number
  /** User agent at creation or sign-in, or `null`. */
  readonly userAgent: string | null
  /** True for the session passed as `current`. */
  readonly current: boolean
}

/** What a revocation of every session of a user did. */
export interface RevokeCount {
  /** Sessions this call ended, openable or not. */
  readonly ended: number
  /** Of those, records that no key of the ring opens (sealed with a key this process was not given). */
  readonly unopenable: number
}

/** One live session of a user, by lineage, as the cap ranks it. */
interface Ranked {
  readonly lineage: string
  readonly lastSeenAt: number
  readonly createdAt: number
}

/** Most recently used first; ties broken the same way in every process. */
function byRecency(a: Ranked, b: Ranked): number {
  return (
    b.lastSeenAt - a.lastSeenAt ||
    b.createdAt - a.createdAt ||
    (a.lineage < b.lineage ? 1 : a.lineage > b.lineage ? -1 : 0)
  )
}

/** A session named by a handle: its user and lineage. */
interface Named {
  readonly userId: string
  readonly lineage: string
}

/** Lists and revokes users' sessions for one manager. */
export class Devices {
  constructor(
    private readonly life: Lifecycle,
    private readonly ending: Ending,
  ) {}

  /** The live sessions of `userId`, most recent first; `currentLineage` marks the request's own. */
  async list(userId: string, currentLineage: string | undefined): Promise<UserSessionInfo[]> {
    return (await this.live(userId)).map(({ lineage, createdAt, lastSeenAt, userAgent }) => ({
      handle: this.handle(userId, lineage),
      createdAt,
      lastSeenAt,
      userAgent,
      current: lineage === currentLineage,
    }))
  }

  /**
   * Holds `maxSessionsPerUser` after `userId` signed in with the session of lineage `lineage` (stored
   * already): while the user has more live sessions, ends those past the cap in recency order (policy
   * `end-least-recent`), or this new one (`refuse`), and lists again. Throws `SessionError`
   * (`ERR_LATCHKEY_SESSION_CAP`) when the new session did not survive: refused, or outranked by
   * sign-ins of the same user that raced it. Without a cap, does nothing.
   */
  async holdCap(userId: string, lineage: string): Promise<void> {
    const { maxSessionsPerUser: cap, sessionCapPolicy } = this.life.options
    if (cap === null) return
    for (let round = 0; round < MAX_HOPS; round++) {
      const live = await this.live(userId)
      if (!live.some((session) => session.lineage === lineage)) break
      if (live.length <= cap) return
      if (sessionCapPolicy === 'refuse') {
        const refused = await this.ending.endUserSessions(userId, (lid) => lid === lineage)
        this.life.emit('revoked', null, userId, 'session-cap', refused.size)
        throw capError(cap, 'this sign-in was refused')
      }
      const past = new Set(live.slice(cap).map((session) => session.lineage))
      const ended = await this.ending.endUserSessions(
        userId,
        (lid) => past.has(lid),
        undefined,
        'session-cap',
      )
      if (ended.size > 0) this.life.emit('revoked', null, userId, 'session-cap', ended.size)
    }
    throw capError(cap, 'sign-ins of the same user at the same moment took the places first')
  }

  /** The live sessions of `userId`, one per lineage (mid-rotation one can show under two keys), most recent first. */
  private async live(userId: string): Promise<(Ranked & { userAgent: string | null })[]> {
    const now = this.life.options.clock.now()
    const byLineage = new Map<string, Ranked & { userAgent: string | null }>()
    for (const { record, meta } of await this.ending.userSessions(userId)) {
      if (kindOf({ meta }) !== 'live' || isExpired(record, now, this.life.options)) continue
      const known = byLineage.get(meta.lid)
      // List it once, by its latest activity.
      if (known && known.lastSeenAt >= record.lastSeenAt) continue
      byLineage.set(meta.lid, {
        lineage: meta.lid,
        createdAt: record.createdAt,
        lastSeenAt: record.lastSeenAt,
        userAgent: meta.ua ?? null,
      })
    }
    return [...byLineage.values()].sort(byRecency)
  }

  /** Ends the session `handle` names (only `userId`'s, when given); `true` only when this call ended a live session. */
  async revoke(handle: string, userId: string | undefined): Promise<boolean> {
    const target = this.open(handle)
    if (!target || (userId !== undefined && userId !== target.userId)) return false
    const ended =
      (
        await this.ending.endUserSessions(
          target.userId,
          (lineage) => lineage === target.lineage,
          undefined,
          'revoked',
        )
      ).size > 0
    if (ended) this.life.emit('revoked', null, target.userId, 'revoked', 1)
    return ended
  }

  /**
   * Ends every session of `userId` but the one `except` names, including records no key of the ring
   * opens (sealed with a key this process lacks: a rollback to that key must not bring them back).
   * Resolves how many this call ended, and how many of those it could not open.
   */
  async revokeAll(userId: string, except: string | undefined): Promise<RevokeCount> {
    const kept = except === undefined ? null : this.open(except)
    const keep = kept?.userId === userId ? kept.lineage : null
    const unopenable = { count: 0 }
    const lineages = await this.ending.endUserSessions(
      userId,
      (lineage) => lineage !== keep,
      unopenable,
      'signed-out-everywhere',
    )
    const ended = lineages.size + unopenable.count
    this.life.emit('revoked', null, userId, 'signed-out-everywhere', ended)
    return { ended, unopenable: unopenable.count }
  }

  /** The handle of the session of `userId` with this lineage. */
  handle(userId: string, lineage: string): string {
    return this.life.keyring.sealHandle(JSON.stringify([userId, lineage]), HANDLE_CONTEXT)
  }

  private open(handle: string): Named | null {
    if (typeof handle !== 'string' || handle.length > MAX_HANDLE_LENGTH) return null
    const text = this.life.keyring.openHandle(handle, HANDLE_CONTEXT)
    if (text === null) return null
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      return null
    }
    if (!Array.isArray(parsed) || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') return null
    if (parsed[1] === '') return null
    return { userId: parsed[0], lineage: parsed[1] }
  }
}

/** The sign-in failed the cap on sessions per user: `why` says how. */
function capError(cap: number, why: string): SessionError {
  return new SessionError(
    'ERR_LATCHKEY_SESSION_CAP',
    `this user has ${cap} sessions signed in already (maxSessionsPerUser): ${why}; sign out of another device (listUserSessions, revoke) and sign in again`,
  )
}

/**
 * The session lifecycle: load, commit, rotate, end.
 *
 * ## The rule for rotations and ends
 *
 * A session is a **lineage**: a random name given when it is first stored and at every login, kept
 * through renewals and `regenerate`. Its records are found by their store keys; to the core each key
 * is in one of four states, and every change of state is one compare-and-set (CAS) on the record,
 * from the version last seen:
 *
 * - **live**: the payload holds the session. live -> live is a write.
 * - **forwarder** (renewal): the successor is created first; the CAS that turns the old record into a
 *   forwarder is the moment of the renewal (if it fails, the successor, whose ID nobody has seen, is
 *   destroyed). The forwarder's absolute deadline is the moment it was written plus `renewalGraceMs`:
 *   stores expire a record at the earlier of its deadlines and never move the absolute one on a
 *   touch, so nothing keeps the old ID answering longer.
 * - **retired** (`regenerate`): as a renewal, but the old record becomes a pointer that opens nothing
 *   (the old ID is dead at once). It lives to its own deadline so that requests which loaded the
 *   session before the change still land their writes on the successor, and ends follow it there.
 *   A `login` does not leave a pointer: the old session ends outright, and nothing written from it
 *   reaches the signed-in one.
 * - **ended**: missing, expired, tombstoned, or holding the empty ended payload. Logout, revoke,
 *   expiry and the old record of a login are ended by a CAS to the ended payload (the user cleared,
 *   so it leaves the user index), then the store's tombstone.
 *
 * When an end's or a retirement's CAS fails, the record is read again: a newer live version is ended
 * in its turn (a rotation first replays its own changes on it into its new record, so a write
 * acknowledged meanwhile is carried over, never lost); a pointer is followed to its successor, which
 * is ended in its turn; an ended record means someone else got there first. When the trail runs out
 * (a forwarder's window closed), a logout of a signed-in session and the revocations find the
 * lineage's remaining records through the user index, and list again until none is left.
 *
 * Therefore an end is never undone: once the ended payload or the tombstone is written no CAS from an
 * older version succeeds and no create takes the key, and every rotation that began from the old
 * record learns of the end through its own CAS. A `login` whose old session ended meanwhile still
 * stands (the user proved who they are in that request, and it starts a new lineage); a renewal or a
 * `regenerate` of an ended session is discarded.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { CookieReading } from './cookie.js'
import {
  readCookie,
  readSessionCookie,
  serializeClearingCookie,
  serializeClearingCsrfCookie,
  serializeCsrfCookie,
  serializeSessionCookie,
} from './cookie.js'
import { Keyring, randomToken } from './crypto.js'
import { ConfigError, ConflictError, SessionError } from './errors.js'
import type { SessionEvent } from './events.js'
import { GuardedStore } from './guarded-store.js'
import { generateId, storeKeyOf } from './id.js'
import type { ResolvedOptions, SessionManagerOptions } from './options.js'
import { resolveOptions } from './options.js'
import type { MetaJson, SharedContents } from './payload.js'
import { ENDED_PAYLOAD, metaJson, parsePayload, serializePayload, shareable, unshare } from './payload.js'
import type { CsrfCookieState, SessionData, SessionMeta, SessionState } from './session.js'
import { applyChange, MAX_USER_ID_LENGTH, Session, STATE } from './session.js'
import type { SessionRecord } from './store.js'
import { expiresAt } from './store.js'

/** What an adapter reads off the request for the core. */
export interface RequestFacts {
  /** The raw `Cookie` header, if any. */
  readonly cookie?: string | undefined
  /** The `User-Agent` header, kept for the "your devices" list. */
  readonly userAgent?: string | undefined
}

/** What an adapter must put on the response, before any byte of it leaves. */
export interface CommitResult {
  /** A `Set-Cookie` value to append, or `null`. */
  readonly setCookie: string | null
  /** The response carries session state: send `Cache-Control: no-store` and `Vary: Cookie`. */
  readonly private: boolean
  /** A `Clear-Site-Data` value to send (a logout, with `clearSiteDataOnLogout` set), or absent. */
  readonly clearSiteData?: string
  /**
   * One more `Set-Cookie` value to append: the CSRF pre-session cookie, issued (a session not stored
   * made a token) or cleared (the session is stored now, or the cookie was unusable). Absent when
   * there is nothing to send; `private` is then true whenever the response holds a CSRF token.
   */
  readonly csrfCookie?: string
}

/** One entry of {@link SessionManager.listUserSessions}. */
export interface UserSessionInfo {
  /** Opaque, unforgeable name of the session for {@link SessionManager.revoke}. Neither the ID nor its store key. */
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

interface Loaded {
  readonly record: SessionRecord
  readonly data: Map<string, unknown>
  readonly meta: SessionMeta
  readonly stale: boolean
}

/** What a process remembers of a session's payload, by ID: see {@link SessionManager.openRecord}. */
interface Opened {
  readonly key: string
  /** The sealed payload this entry describes; any other payload under the key is opened afresh. */
  readonly payload: string
  readonly plaintext: string
  readonly stale: boolean
  /** The parsed contents, when they can be handed to every request as copies. */
  shared: SharedContents | null | undefined
  /** The metadata's JSON, for the next write. */
  meta: MetaJson | undefined
}

/** How {@link SessionManager.end} proceeds when the record it ends has moved on. */
interface EndOptions {
  /** Follow a forwarder to its successor and end that too (logout, revoke, rotation); not for expiry. */
  readonly follow: boolean
  /** The record is known not to be a forwarder (it was loaded as a live session). */
  readonly live: boolean
  /**
   * A rotation's retirement of its old record: called with each newer live version found before it is
   * retired, to replay into the new record; resolving `false` abandons the retirement. Pointers passed
   * on the way are left to expire, so requests in flight can still follow them.
   */
  readonly replay?: (fresh: Loaded) => Promise<boolean>
  /**
   * The signed-in session's user and lineage (logout): when the trail of records ends before a live
   * one (a `regenerate` retired it, or a forwarder's grace window passed), the session's other records
   * are found through the user index.
   */
  readonly lineage?: { readonly userId: string; readonly lid: string } | undefined
  /**
   * `regenerate`: the record is not ended but retired, pointing to this new ID, until its own deadline
   * (see {@link SessionMeta.retired}). A login ends its old record outright: nothing follows it there.
   */
  readonly successor?: { readonly id: string; readonly lid: string } | undefined
}

const NO_CSRF = Object.freeze({ csrf: '', cookie: 'none' as CsrfCookieState })
const CLEAR_CSRF = Object.freeze({ csrf: '', cookie: 'clear' as CsrfCookieState })
const NOTHING: CommitResult = Object.freeze({ setCookie: null, private: false })
const PRIVATE: CommitResult = Object.freeze({ setCookie: null, private: true })
const MAX_USER_AGENT = 256
const CREATE_ATTEMPTS = 4
const HANDLE_CONTEXT = 'latchkey/handle/v2'
const LINEAGE_BYTES = 16
/** Pointers (forwarders, retired records) a request follows from the ID it loaded before giving up. */
const MAX_HOPS = 8
/**
 * The longest handle a user ID of {@link MAX_USER_ID_LENGTH} can give: JSON escapes a code unit into
 * at most 6 bytes; the lineage, brackets, quotes, nonce, tag, base64url and key id add the rest.
 */
const MAX_HANDLE_LENGTH = 9 + Math.ceil(((12 + 16 + 6 * MAX_USER_ID_LENGTH + 64) * 4) / 3)
/** A sealed CSRF pre-session cookie: key id, dot, base64url (nonce, `<expiry>:<secret>`, tag). */
const SEALED_CSRF_COOKIE = /^[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{40,400}$/
/** The plaintext of a CSRF pre-session cookie: when it expires (epoch ms), and the secret. */
const CSRF_COOKIE_CONTENTS = /^(\d{1,16}):([A-Za-z0-9_-]{43})$/

function isSealedCsrfCookie(value: string): boolean {
  return SEALED_CSRF_COOKIE.test(value)
}

function anyValue(): boolean {
  return true
}

/** Sessions a process keeps small facts about (decrypted payloads, last touch): enough for those active at once. */
const RECENT_SESSIONS = 4096

/** Sets `key` in an insertion-ordered map kept to {@link RECENT_SESSIONS} entries, dropping the oldest. */
function keepRecent<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > RECENT_SESSIONS) map.delete(map.keys().next().value as string)
}

/** The payload must be written: data changed, the user changed, a retired key sealed it, or it lacks a CSRF secret. */
function hasChanges(state: SessionState): boolean {
  return state.changes.length > 0 || state.userChanged || state.reseal || state.meta.csrf === ''
}

/** The record as an end writes it: next version, no user (out of the user index), the ended payload. */
function endedRecord(record: SessionRecord): SessionRecord {
  return { ...record, version: record.version + 1, userId: null, payload: ENDED_PAYLOAD }
}

/**
 * The session lifecycle, independent of any framework: `load` a session from request facts, let the
 * application use it, `commit` it to get the headers to send. Adapters are thin translators around these two.
 */
export class SessionManager<T extends SessionData = SessionData> {
  /** The options after defaults and validation. */
  readonly options: ResolvedOptions
  private readonly keyring: Keyring
  /** The store; every failure of it, whatever it rejects with, surfaces as a `StoreError`. */
  private readonly store: GuardedStore
  private readonly cleared: CommitResult
  private readonly clearedCsrfCookie: string
  private readonly makeCsrfToken: (secret: string) => string
  private readonly queues = new Map<string, Promise<unknown>>()
  private readonly opened = new Map<string, Opened>()
  /** When this process last touched each recently touched store key. */
  private readonly touched = new Map<string, number>()

  private readonly onEvent: ((event: SessionEvent) => void) | undefined

  constructor(options: SessionManagerOptions) {
    this.options = resolveOptions(options)
    this.keyring = new Keyring(this.options.keys)
    this.store = new GuardedStore(this.options.store)
    this.cleared = Object.freeze({ setCookie: serializeClearingCookie(this.options.cookie), private: true })
    this.clearedCsrfCookie = serializeClearingCsrfCookie(this.options.csrfCookie)
    this.makeCsrfToken = (secret) => this.keyring.csrfToken(secret)
    this.onEvent = options.onEvent
  }

  private emit(type: SessionEvent['type'], key: string | null, userId: string | null, reason?: string): void {
    if (!this.onEvent) return
    const event: SessionEvent = {
      type,
      session: key === null ? null : this.keyring.digest(key),
      userId,
      at: this.options.clock.now(),
      ...(reason === undefined ? {} : { reason }),
    }
    try {
      this.onEvent(event)
    } catch {
      // An audit hook must never break a request.
    }
  }

  /**
   * The session for a request. Never throws for anything the client sent: a missing, malformed,
   * duplicated, unknown, expired or tampered cookie gives a fresh anonymous session. Rejects with
   * `StoreError` only when the store fails.
   */
  async load(facts: RequestFacts): Promise<Session<T>> {
    const reading: CookieReading = readSessionCookie(facts.cookie, this.options.cookie.name)
    if (reading.id === null) {
      if (reading.rejected) this.emit('rejected', null, null, 'malformed')
      return this.fresh(reading.rejected, facts)
    }
    const loaded = await this.read(reading.id)
    if (!loaded) return this.fresh(true, facts)
    if (loaded.meta.next === undefined) return this.restore(reading.id, loaded, false, facts)
    // The old ID of a regenerate died at once.
    if (loaded.meta.retired) return this.fresh(true, facts)
    // An ID renewed moments ago, still in its grace window: carry on with its successor.
    const successor = await this.read(loaded.meta.next)
    if (!successor || successor.meta.next !== undefined) return this.fresh(true, facts)
    return this.restore(loaded.meta.next, successor, true, facts)
  }

  /**
   * {@link load}, answered synchronously when the store can answer synchronously and the cookie names
   * a live session or none (the common request); `null` when {@link load} must run instead (an expired
   * session to end, a renewed ID to follow, an asynchronous store). Throws `StoreError` when the store fails.
   */
  loadSync(facts: RequestFacts): Session<T> | null {
    const sync = this.store.sync
    if (sync === null) return null
    const reading: CookieReading = readSessionCookie(facts.cookie, this.options.cookie.name)
    if (reading.id === null) {
      if (reading.rejected) this.emit('rejected', null, null, 'malformed')
      return this.fresh(reading.rejected, facts)
    }
    const id = reading.id
    const key = this.opened.get(id)?.key ?? storeKeyOf(id)
    const record = sync.getSync(key)
    if (!record || record.payload === ENDED_PAYLOAD) {
      this.emit('rejected', key, null, 'unknown')
      return this.fresh(true, facts)
    }
    if (this.isExpired(record, this.options.clock.now())) return null
    const loaded = this.openRecord(record, id)
    if (!loaded) {
      this.emit('rejected', key, record.userId, 'tampered')
      return this.fresh(true, facts)
    }
    return loaded.meta.next === undefined ? this.restore(id, loaded, false, facts) : null
  }

  /**
   * Saves what the request did to the session and returns the headers to send. Call it once, before
   * the response's headers leave. Rejects with `StoreError` (store down) or `ConflictError`.
   */
  async commit(session: Session<T>): Promise<CommitResult> {
    const state = session[STATE]
    const now = this.options.clock.now()
    const destroyed = state.destroyed
    if (destroyed !== null) {
      state.destroyed = null
      const { record, lineage } = destroyed
      const userId = record.userId
      const options: EndOptions = {
        follow: true,
        live: true,
        lineage: userId === null ? undefined : { userId, lid: lineage },
      }
      if (await this.serial(record.key, () => this.end(record, options))) {
        this.emit('destroyed', record.key, userId)
      }
    }
    if (state.record === null) {
      const result = await this.commitNew(state, now)
      const clearSiteData = this.options.clearSiteData
      return this.withCsrfCookie(
        state,
        state.loggedOut && clearSiteData !== null ? { ...result, clearSiteData } : result,
        now,
      )
    }
    const key = state.record.key
    return this.withCsrfCookie(
      state,
      this.quiet(state, now) ?? (await this.serial(key, () => this.commitStored(state, now))),
      now,
    )
  }

  /**
   * The commit of a request with nothing to write (the common read-only request), answered
   * synchronously; `null` when there is something to write and {@link commit} must run.
   */
  commitIfQuiet(session: Session<T>, now = this.options.clock.now()): CommitResult | null {
    const state = session[STATE]
    const result = this.quiet(state, now)
    return result === null ? null : this.withCsrfCookie(state, result, now)
  }

  /** {@link commitIfQuiet} without the CSRF pre-session cookie. */
  private quiet(state: SessionState, now: number): CommitResult | null {
    const record = state.record
    if (record === null || state.destroyed !== null || !this.isQuiet(state, record, now)) return null
    return state.reissueCookie ? this.issued(state, now) : PRIVATE
  }

  /**
   * {@link commit}, done synchronously when it can be: nothing to write, or a store that answers
   * synchronously, no other commit on the session in flight in this process, and a plain write, touch
   * or new session whose compare-and-set succeeds at once. `null` when {@link commit} must run instead
   * (a rotation, a logout, a renewal due, a conflict); nothing has been written then. Throws
   * `StoreError` when the store fails.
   */
  commitSync(session: Session<T>): CommitResult | null {
    const now = this.options.clock.now()
    const state = session[STATE]
    const result = this.commitSyncWithoutCsrf(state, now)
    return result === null ? null : this.withCsrfCookie(state, result, now)
  }

  private commitSyncWithoutCsrf(state: SessionState, now: number): CommitResult | null {
    const quiet = this.quiet(state, now)
    if (quiet !== null) return quiet
    const sync = this.store.sync
    if (sync === null || state.destroyed !== null || state.loggedOut || state.rotation !== 'none') return null
    const record = state.record
    if (record === null) {
      if (state.data.size === 0 && state.userId === null) return state.clearCookie ? this.cleared : NOTHING
      this.prepareMeta(state, now)
      const created = this.newRecord(state, now, null)
      if (!sync.createSync(created)) return null
      this.settle(state, created)
      this.emit('created', created.key, state.userId)
      return this.issued(state, now)
    }
    if (this.queues.has(record.key) || now - state.meta.iat >= this.options.renewalIntervalMs) return null
    if (hasChanges(state)) {
      const next = this.nextVersion(state, record, now)
      if (!sync.updateSync(next, record.version)) return null
      this.settle(state, next)
    } else {
      const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, record.absoluteExpiresAt)
      sync.touchSync(record.key, now, idleExpiresAt)
      state.record = { ...record, lastSeenAt: now, idleExpiresAt }
      keepRecent(this.touched, record.key, now)
    }
    return state.reissueCookie ? this.issued(state, now) : PRIVATE
  }

  /**
   * The result with the CSRF pre-session cookie the response must carry, if any: a session stored now
   * has its own secret, so a cookie the browser sent is cleared; a session not stored that made a token
   * has its secret sealed into the cookie when it was created in this request or the cookie is aging;
   * an unusable cookie is cleared. A response that holds a token is private either way.
   */
  private withCsrfCookie(state: SessionState, result: CommitResult, now: number): CommitResult {
    const carried = state.csrfCookie
    const used = state.csrfUsed
    if (carried === 'none' && !used) return result
    state.csrfCookie = 'none'
    state.csrfUsed = false
    let csrfCookie: string | undefined
    if (state.record !== null) {
      if (carried !== 'none') csrfCookie = this.clearedCsrfCookie
    } else if (used && state.meta.csrf !== '' && (state.csrfMinted || carried === 'aging')) {
      const settings = this.options.csrfCookie
      const sealed = this.keyring.sealCsrfCookie(
        `${now + settings.maxAgeMs}:${state.meta.csrf}`,
        settings.name,
      )
      csrfCookie = serializeCsrfCookie(settings, sealed)
    } else if (carried === 'clear') {
      csrfCookie = this.clearedCsrfCookie
    }
    state.csrfMinted = false
    if (csrfCookie !== undefined) return { ...result, private: true, csrfCookie }
    return result.private || !used ? result : { ...result, private: true }
  }

  /**
   * Whether `token` is a CSRF token of this session: made by `csrfToken()` from its current CSRF secret
   * (for a session not stored, the secret of the pre-session cookie it came with), with any key of the
   * ring. Format-checked first, compared in constant time; never throws. The CSRF guard calls it.
   */
  verifyCsrfToken(session: Session<T>, token: string): boolean {
    return this.keyring.verifyCsrfToken(session[STATE].meta.csrf, token)
  }

  /**
   * The CSRF secret a session not stored starts with: the one sealed in the pre-session cookie the
   * browser sent, if it opens and has not expired.
   */
  private preSession(facts: RequestFacts): { csrf: string; cookie: CsrfCookieState } {
    const settings = this.options.csrfCookie
    const reading = readCookie(facts.cookie, settings.name, isSealedCsrfCookie)
    if (reading.id === null) return reading.rejected ? CLEAR_CSRF : NO_CSRF
    const text = this.keyring.openCsrfCookie(reading.id, settings.name)
    const match = text === null ? null : CSRF_COOKIE_CONTENTS.exec(text)
    if (!match) return CLEAR_CSRF
    const left = Number(match[1]) - this.options.clock.now()
    if (left <= 0) return CLEAR_CSRF
    return { csrf: match[2] as string, cookie: left < settings.maxAgeMs / 2 ? 'aging' : 'valid' }
  }

  /** Whether the request brought a CSRF pre-session cookie, usable or not. */
  private carriesCsrfCookie(facts: RequestFacts): boolean {
    const reading = readCookie(facts.cookie, this.options.csrfCookie.name, anyValue)
    return reading.id !== null || reading.rejected
  }

  /** Nothing to write: no change, no rotation, no touch or renewal due. The common read-only request. */
  private isQuiet(state: SessionState, record: SessionRecord, now: number): boolean {
    return (
      state.rotation === 'none' &&
      !hasChanges(state) &&
      now - this.lastSeen(record) < this.options.touchIntervalMs &&
      now - state.meta.iat < this.options.renewalIntervalMs
    )
  }

  /**
   * The record's last activity as far as this process knows: requests that loaded it before another
   * request of theirs touched it still see the older time, and one touch is enough for all of them.
   */
  private lastSeen(record: SessionRecord): number {
    const touched = this.touched.get(record.key)
    return touched === undefined || touched < record.lastSeenAt ? record.lastSeenAt : touched
  }

  /**
   * The live sessions of `userId`, most recent first, for a "your devices" page. Pass the request's
   * session as `current` to have it marked. Needs a store with a user index.
   */
  async listUserSessions(userId: string, options: { current?: Session<T> } = {}): Promise<UserSessionInfo[]> {
    const current = options.current?.[STATE]
    const currentLineage = current?.record ? current.meta.lid : undefined
    const now = this.options.clock.now()
    const byLineage = new Map<string, UserSessionInfo>()
    for (const { record, meta } of await this.userSessions(userId)) {
      if (meta.next !== undefined || this.isExpired(record, now)) continue
      const known = byLineage.get(meta.lid)
      // Mid-rotation a session can briefly show under two keys: list it once, by its latest activity.
      if (known && known.lastSeenAt >= record.lastSeenAt) continue
      byLineage.set(meta.lid, {
        handle: this.handle(userId, meta.lid),
        createdAt: record.createdAt,
        lastSeenAt: record.lastSeenAt,
        userAgent: meta.ua ?? null,
        current: meta.lid === currentLineage,
      })
    }
    return [...byLineage.values()].sort((a, b) => b.lastSeenAt - a.lastSeenAt)
  }

  /**
   * Ends the session named by `handle` (from {@link listUserSessions} or {@link handleOf}), whatever ID
   * rotations happened since the handle was made. With `userId`, only if the session belongs to that
   * user. Resolves `true` only when this call ended a live session; `false` for a forged, garbled or
   * stale handle, or a session already ended. Needs a store with a user index.
   */
  async revoke(handle: string, options: { userId?: string } = {}): Promise<boolean> {
    const target = this.openHandle(handle)
    if (!target || (options.userId !== undefined && options.userId !== target.userId)) return false
    const ended =
      (await this.endUserSessions(target.userId, (lineage) => lineage === target.lineage)).size > 0
    if (ended) this.emit('revoked', null, target.userId)
    return ended
  }

  /**
   * Ends every session of `userId` ("sign out everywhere"), but the one whose handle is `except`.
   * Resolves how many sessions this call ended. Needs a store with a user index.
   */
  async revokeUserSessions(userId: string, options: { except?: string } = {}): Promise<number> {
    const except = options.except === undefined ? null : this.openHandle(options.except)
    const keep = except?.userId === userId ? except.lineage : null
    const ended = await this.endUserSessions(userId, (lineage) => lineage !== keep)
    this.emit('revoked', null, userId, `${ended.size} sessions`)
    return ended.size
  }

  /** The handle of a stored, signed-in session, as {@link listUserSessions} would give it; else `null`. */
  handleOf(session: Session<T>): string | null {
    const state = session[STATE]
    if (!state.record || state.userId === null || state.meta.lid === '') return null
    return this.handle(state.userId, state.meta.lid)
  }

  /** Closes the store (if it holds resources). */
  async close(): Promise<void> {
    await this.store.close()
  }

  /**
   * Ends every session of `userId` whose lineage `select` picks, and resolves the lineages it ended.
   * It lists again until no such record is left: a rotation in flight may have created one meanwhile.
   */
  private async endUserSessions(userId: string, select: (lineage: string) => boolean): Promise<Set<string>> {
    const ended = new Set<string>()
    for (let round = 0; round < MAX_HOPS; round++) {
      const targets = (await this.userSessions(userId)).filter(({ meta }) => select(meta.lid))
      if (targets.length === 0) break
      for (const { record, meta } of targets) {
        if (await this.end(record, { follow: true, live: meta.next === undefined })) ended.add(meta.lid)
      }
    }
    return ended
  }

  /** The records of `userId` that open (live sessions and forwarders), with their metadata. */
  private async userSessions(userId: string): Promise<{ record: SessionRecord; meta: SessionMeta }[]> {
    if (!this.store.indexed) throw new ConfigError('store', 'this store cannot list sessions by user')
    const out: { record: SessionRecord; meta: SessionMeta }[] = []
    for (const record of await this.store.listByUser(userId)) {
      if (record.userId !== userId) continue
      const loaded = this.openRecord(record, null)
      if (loaded) out.push({ record, meta: loaded.meta })
    }
    return out
  }

  /**
   * A handle names a session to its owner: its user and lineage (kept through renewal and
   * `regenerate`), sealed with the handle subkey. Neither the ID nor the store key is in it.
   */
  private handle(userId: string, lineage: string): string {
    return this.keyring.sealHandle(JSON.stringify([userId, lineage]), HANDLE_CONTEXT)
  }

  private openHandle(handle: string): { userId: string; lineage: string } | null {
    if (typeof handle !== 'string' || handle.length > MAX_HANDLE_LENGTH) return null
    const text = this.keyring.openHandle(handle, HANDLE_CONTEXT)
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

  private fresh(clearCookie: boolean, facts: RequestFacts): Session<T> {
    const pre = this.preSession(facts)
    return new Session<T>({
      id: generateId(),
      record: null,
      data: new Map(),
      meta: { csrf: pre.csrf, iat: 0, lid: '' },
      userId: null,
      changes: [],
      rotation: 'none',
      destroyed: null,
      loggedOut: false,
      dropped: false,
      clearCookie,
      reissueCookie: false,
      reseal: false,
      userChanged: false,
      userAgent: facts.userAgent,
      makeCsrfToken: this.makeCsrfToken,
      csrfCookie: pre.cookie,
      csrfUsed: false,
      csrfMinted: false,
    })
  }

  private restore(id: string, loaded: Loaded, reissueCookie: boolean, facts: RequestFacts): Session<T> {
    return new Session<T>({
      id,
      record: loaded.record,
      data: loaded.data,
      meta: loaded.meta,
      userId: loaded.record.userId,
      changes: [],
      rotation: 'none',
      destroyed: null,
      loggedOut: false,
      dropped: false,
      clearCookie: false,
      reissueCookie,
      reseal: loaded.stale,
      userChanged: false,
      userAgent: facts.userAgent,
      makeCsrfToken: this.makeCsrfToken,
      // A stored session has its own secret: a pre-session cookie the browser still sends is cleared.
      csrfCookie: this.carriesCsrfCookie(facts) ? 'clear' : 'none',
      csrfUsed: false,
      csrfMinted: false,
    })
  }

  /** Past its idle or absolute timeout by this manager's options (the store may keep it longer). */
  private isExpired(record: SessionRecord, now: number): boolean {
    return (
      now >= expiresAt(record) ||
      now >= record.lastSeenAt + this.options.idleTimeoutMs ||
      now >= record.createdAt + this.options.absoluteTimeoutMs
    )
  }

  /** The live, intact record of `id`, opened; `null` when missing, ended, expired or tampered with. */
  private async read(id: string): Promise<Loaded | null> {
    const key = this.opened.get(id)?.key ?? storeKeyOf(id)
    const record = await this.store.get(key)
    if (!record || record.payload === ENDED_PAYLOAD) {
      this.emit('rejected', key, null, 'unknown')
      return null
    }
    if (this.isExpired(record, this.options.clock.now())) {
      await this.end(record, { follow: false, live: false })
      this.emit('expired', key, record.userId)
      return null
    }
    const loaded = this.openRecord(record, id)
    if (!loaded) this.emit('rejected', key, record.userId, 'tampered')
    return loaded
  }

  /**
   * Opens a record's payload; `null` when it is ended or does not open (tampered, unknown key). With
   * the session's `id`, what it opened to is remembered, so the next request on the session skips the
   * decryption while the stored payload is still the same string. The store stays the authority: every
   * request still reads the record, and only an identical payload is served from here. No request can
   * see another's in-place changes: the plaintext is parsed afresh for each request, except when every
   * value is an immutable scalar (string, finite number, boolean, null), where each request gets its
   * own copy of the parsed contents.
   */
  private openRecord(record: SessionRecord, id: string | null): Loaded | null {
    if (record.payload === ENDED_PAYLOAD) return null
    const cached = id === null ? undefined : this.opened.get(id)
    if (cached !== undefined && cached.payload === record.payload && cached.key === record.key) {
      if (cached.shared) return { record, ...unshare(cached.shared), stale: cached.stale }
      const contents = parsePayload(cached.plaintext)
      if (!contents) return null
      if (cached.shared === undefined) cached.shared = shareable(contents.data, contents.meta)
      return { record, data: contents.data, meta: contents.meta, stale: cached.stale }
    }
    const opened = this.keyring.open(record.payload, record.key)
    const contents = opened && parsePayload(opened.plaintext)
    if (!opened || !contents) {
      if (id !== null) this.opened.delete(id)
      return null
    }
    if (id !== null) {
      keepRecent(this.opened, id, {
        key: record.key,
        payload: record.payload,
        plaintext: opened.plaintext,
        stale: opened.stale,
        shared: undefined,
        meta: undefined,
      })
    }
    return { record, data: contents.data, meta: contents.meta, stale: opened.stale }
  }

  /** Seals the session's data for `key`, remembering what it holds for the next request. */
  private seal(state: SessionState, key: string): string {
    const previous = this.opened.get(state.id)
    const meta = metaJson(state.meta, previous?.key === key ? previous.meta : undefined)
    const plaintext = serializePayload(state.data, meta)
    const payload = this.keyring.seal(plaintext, key)
    keepRecent(this.opened, state.id, {
      key,
      payload,
      plaintext,
      stale: false,
      shared: shareable(state.data, state.meta),
      meta,
    })
    return payload
  }

  /** A new session: stored only if it holds something; an unusable cookie the browser sent is cleared. */
  private async commitNew(state: SessionState, now: number): Promise<CommitResult> {
    if (state.data.size === 0 && state.userId === null) return state.clearCookie ? this.cleared : NOTHING
    const record = await this.insert(state, now, false, null)
    this.settle(state, record)
    this.emit('created', record.key, state.userId)
    return this.issued(state, now)
  }

  private async commitStored(state: SessionState, now: number): Promise<CommitResult> {
    if (state.rotation === 'kill-old') return this.rotate(state, now)
    if (hasChanges(state)) {
      if (!(await this.write(state, now))) return this.dropped(state)
    } else {
      const record = state.record as SessionRecord
      if (now - this.lastSeen(record) >= this.options.touchIntervalMs) {
        const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, record.absoluteExpiresAt)
        await this.store.touch(record.key, now, idleExpiresAt)
        state.record = { ...record, lastSeenAt: now, idleExpiresAt }
        keepRecent(this.touched, record.key, now)
      }
    }
    if (now - state.meta.iat >= this.options.renewalIntervalMs && (await this.renew(state, now))) {
      return this.issued(state, now)
    }
    return state.reissueCookie ? this.issued(state, now) : PRIVATE
  }

  /**
   * `login` and `regenerate`: the session moves to a new ID and the old one ends at once. The new
   * record is created first, then the old one is ended by compare-and-set; if another request wrote
   * it meanwhile, its data (with this request's changes replayed on it) is carried into the new record.
   */
  private async rotate(state: SessionState, now: number): Promise<CommitResult> {
    const login = state.userChanged
    // A sign-in proved who the user is in this very request, so it stands even if the session it
    // started from ended meanwhile; any other rotation of an ended session is dropped.
    const live = await this.rebase(state, false)
    if (!live && !login) return this.dropped(state)
    const old = state.record as SessionRecord
    // A sign-in starts the session's clock afresh; any other privilege change keeps its deadlines.
    const created = await this.insert(state, now, true, login ? null : old)
    let revoked = false
    const replay = async (fresh: Loaded) => {
      revoked = !(await this.replayInto(state, fresh, login))
      return !revoked
    }
    const successor = login ? undefined : { id: state.id, lid: state.meta.lid }
    const ended = live && (await this.end(old, { follow: true, live: true, replay, successor }))
    // A revocation ended the new record before the old one was retired: the change is off.
    if (revoked) return this.dropped(state)
    if (!ended && !login) {
      await this.store.destroy(created.key)
      return this.dropped(state)
    }
    this.settle(state, state.record as SessionRecord)
    this.emit(login ? 'login' : 'regenerated', created.key, state.userId)
    return this.issued(state, now)
  }

  /** Carries a newer version of a rotation's old record, with this request's changes replayed on it, into its new record. */
  private async replayInto(state: SessionState, fresh: Loaded, login: boolean): Promise<boolean> {
    for (const change of state.changes) applyChange(fresh.data, change)
    state.data = fresh.data
    if (!login) state.userId = fresh.record.userId
    const record = state.record as SessionRecord
    const next: SessionRecord = {
      ...record,
      version: record.version + 1,
      userId: state.userId,
      payload: this.seal(state, record.key),
    }
    // Only a revocation can have touched the new record (it is in the user index already): then it ended.
    if (!(await this.store.update(next, record.version))) return false
    state.record = next
    return true
  }

  /**
   * Ends the session held by `record` (as last seen), following the rule at the top of this file.
   * Resolves whether this call ended a live session; `false` when it was already ended.
   */
  private async end(record: SessionRecord, options: EndOptions): Promise<boolean> {
    const deadline = performance.now() + this.options.commitTimeoutMs
    const forwarders: string[] = []
    let current: SessionRecord | null = record
    let live = options.live
    try {
      for (let attempt = 1; current !== null && current.payload !== ENDED_PAYLOAD; attempt++) {
        const next: string | undefined = live ? undefined : this.openRecord(current, null)?.meta.next
        if (next !== undefined) {
          // Renewed: the session lives on under the successor; the forwarder goes once that has ended.
          forwarders.push(current.key)
          current = options.follow ? await this.store.get(storeKeyOf(next)) : null
        } else {
          const successor = options.successor
          const ended = successor ? this.retiredRecord(current, successor) : endedRecord(current)
          if (await this.store.update(ended, current.version)) {
            if (!successor) await this.store.destroy(current.key)
            return true
          }
          // It moved: written, renewed or ended by another request. Look again.
          current = await this.store.get(current.key)
          if (attempt > 1) await this.pause(attempt, deadline)
        }
        live = false
        if (options.replay && current !== null && current.payload !== ENDED_PAYLOAD) {
          const fresh = this.openRecord(current, null)
          if (fresh && fresh.meta.next === undefined) {
            if (!(await options.replay(fresh))) return false
            live = true
          }
        }
      }
      // The trail ended before a live record: someone else ended the session, or retired this ID.
      const lineage = options.lineage
      return lineage !== undefined && this.store.indexed
        ? (await this.endUserSessions(lineage.userId, (lid) => lid === lineage.lid)).size > 0
        : false
    } finally {
      // A pointer never turns live again, so destroying it needs no compare-and-set.
      if (!options.replay) for (const key of forwarders) await this.store.destroy(key)
    }
  }

  /** The old record of a `regenerate`, retired: it points to its successor and opens nothing itself. */
  private retiredRecord(record: SessionRecord, successor: { id: string; lid: string }): SessionRecord {
    const meta: SessionMeta = { csrf: '', iat: 0, lid: successor.lid, next: successor.id, retired: true }
    const payload = this.keyring.seal(serializePayload(new Map(), meta), record.key)
    return { ...record, version: record.version + 1, userId: null, payload }
  }

  private dropped(state: SessionState): CommitResult {
    state.dropped = true
    this.emit('dropped', state.record?.key ?? null, state.userId)
    return PRIVATE
  }

  private issued(state: SessionState, now: number): CommitResult {
    const record = state.record as SessionRecord
    const maxAgeSeconds = (record.absoluteExpiresAt - now) / 1000
    return { setCookie: serializeSessionCookie(this.options.cookie, state.id, maxAgeSeconds), private: true }
  }

  private prepareMeta(state: SessionState, now: number): void {
    const meta = state.meta
    if (meta.csrf === '') meta.csrf = randomToken()
    if (meta.lid === '') meta.lid = randomToken(LINEAGE_BYTES)
    if (state.userChanged || meta.ua === undefined) {
      const ua = state.userAgent
      if (ua) meta.ua = ua.slice(0, MAX_USER_AGENT)
    }
    meta.iat = now
  }

  /**
   * Stores the session as a new record, under its own fresh ID or under a new one when `rotate`, and
   * makes it the state's record. `previous` lends its creation time and absolute deadline (renewal,
   * regenerate). The request's changes are kept: the caller settles once the whole commit is done.
   */
  private async insert(
    state: SessionState,
    now: number,
    rotate: boolean,
    previous: SessionRecord | null,
  ): Promise<SessionRecord> {
    this.prepareMeta(state, now)
    for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
      if (rotate || attempt > 0) state.id = generateId()
      const record = this.newRecord(state, now, previous)
      if (await this.store.create(record)) {
        state.record = record
        return record
      }
    }
    throw new SessionError(
      'ERR_LATCHKEY_STORE_COLLISION',
      'the store refused every new session ID: is create() insert-only?',
    )
  }

  /** The first record of the session under `state.id`; `previous` lends its creation time and absolute deadline. */
  private newRecord(state: SessionState, now: number, previous: SessionRecord | null): SessionRecord {
    const absoluteExpiresAt = previous?.absoluteExpiresAt ?? now + this.options.absoluteTimeoutMs
    const key = storeKeyOf(state.id)
    return {
      key,
      version: 1,
      userId: state.userId,
      createdAt: previous?.createdAt ?? now,
      lastSeenAt: now,
      idleExpiresAt: Math.min(now + this.options.idleTimeoutMs, absoluteExpiresAt),
      absoluteExpiresAt,
      payload: this.seal(state, key),
    }
  }

  /** The next version of `record` holding the state's data, seen now. */
  private nextVersion(state: SessionState, record: SessionRecord, now: number): SessionRecord {
    if (state.meta.csrf === '') state.meta.csrf = randomToken()
    return {
      ...record,
      version: record.version + 1,
      userId: state.userId,
      lastSeenAt: now,
      idleExpiresAt: Math.min(now + this.options.idleTimeoutMs, record.absoluteExpiresAt),
      payload: this.seal(state, record.key),
    }
  }

  /** Writes the session with compare-and-set; on conflict reloads, replays this request's changes and retries. */
  private async write(state: SessionState, now: number): Promise<boolean> {
    const deadline = performance.now() + this.options.commitTimeoutMs
    for (let attempt = 1; ; attempt++) {
      const record = state.record as SessionRecord
      const next = this.nextVersion(state, record, now)
      if (await this.store.update(next, record.version)) {
        this.settle(state, next)
        return true
      }
      if (!(await this.rebase(state, true))) return false
      // In one process commits are queued, so a retry here means another process is writing too.
      await this.pause(attempt, deadline)
    }
  }

  /** Before retry `attempt` of a compare-and-set loop: `ConflictError` past the deadline, else a jittered back-off. */
  private async pause(attempt: number, deadline: number): Promise<void> {
    if (performance.now() > deadline) throw new ConflictError()
    if (attempt > 1) await sleep(Math.random() * Math.min(100, 2 ** attempt))
  }

  /**
   * Brings the state up to the stored record, replaying this request's changes on it. `false` when
   * the session is gone (destroyed, revoked, expired): the request's changes are dropped.
   */
  private async rebase(state: SessionState, force: boolean): Promise<boolean> {
    const record = state.record as SessionRecord
    let fresh = await this.read(state.id)
    // Renewed meanwhile: follow it and hand the browser the new ID. Regenerated meanwhile: follow it,
    // so this request's changes are not lost, but the browser keeps its old ID, which is dead now.
    let hops = 0
    let renewedOnly = true
    while (fresh?.meta.next !== undefined) {
      if (++hops > MAX_HOPS) return false
      const { next, retired } = fresh.meta
      renewedOnly &&= !retired
      fresh = await this.read(next)
      if (fresh) state.id = next
    }
    if (!fresh) return false
    if (hops > 0 && renewedOnly) state.reissueCookie = true
    if (!force && fresh.record.version === record.version && fresh.record.key === record.key) return true
    for (const change of state.changes) applyChange(fresh.data, change)
    state.data = fresh.data
    state.record = fresh.record
    if (!state.userChanged) state.userId = fresh.record.userId
    const { csrf, lid } = state.meta
    state.meta = state.userChanged ? { ...fresh.meta, csrf, lid } : fresh.meta
    state.reseal ||= fresh.stale
    return true
  }

  /**
   * Rotates the ID of a long-lived session; the old ID forwards to the new one for the grace window,
   * and not a moment longer: the forwarder's absolute deadline is the end of that window.
   */
  private async renew(state: SessionState, now: number): Promise<boolean> {
    const old = state.record as SessionRecord
    const oldId = state.id
    const oldMeta = state.meta
    state.meta = { ...oldMeta }
    const created = await this.insert(state, now, true, old)
    // The window opens when the forwarder is written, which a slow store may make later than `now`.
    const graceEndsAt = Math.min(
      this.options.clock.now() + this.options.renewalGraceMs,
      old.absoluteExpiresAt,
    )
    const forwarder: SessionRecord = {
      ...old,
      version: old.version + 1,
      lastSeenAt: now,
      idleExpiresAt: graceEndsAt,
      absoluteExpiresAt: graceEndsAt,
      payload: this.keyring.seal(
        serializePayload(new Map(), { csrf: '', iat: now, lid: oldMeta.lid, next: state.id }),
        old.key,
      ),
    }
    if (await this.store.update(forwarder, old.version)) {
      this.settle(state, created)
      this.emit('renewed', created.key, state.userId)
      return true
    }
    // The old record moved under us (written, renewed or ended elsewhere): the new ID was never
    // handed out, so drop it and keep the old one until the next request.
    await this.store.destroy(created.key)
    state.record = old
    state.id = oldId
    state.meta = oldMeta
    return false
  }

  private settle(state: SessionState, record: SessionRecord): void {
    state.record = record
    state.changes.length = 0
    state.rotation = 'none'
    state.reseal = false
    state.userChanged = false
    state.clearCookie = false
  }

  /** Runs commits on one session one after another within this process, so they never conflict here. */
  private async serial<R>(key: string, task: () => Promise<R>): Promise<R> {
    const previous = this.queues.get(key)
    const run = previous ? previous.then(task, task) : task()
    const tail = run.then(
      () => undefined,
      () => undefined,
    )
    this.queues.set(key, tail)
    try {
      return await run
    } finally {
      if (this.queues.get(key) === tail) this.queues.delete(key)
    }
  }
}

/** Builds a {@link SessionManager}. Throws `ConfigError` naming the first bad option. */
export function createSessionManager<T extends SessionData = SessionData>(
  options: SessionManagerOptions,
): SessionManager<T> {
  return new SessionManager<T>(options)
}

/**
 * The session lifecycle: load, commit, rotate, end. `SessionManager` is the facade; the rule below is
 * carried out by the rooms in `lifecycle/` (what a record is, writing, rotation, ending) and beside
 * them (`devices.ts`, `payload.ts`, `csrf-secret.ts`).
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
 *
 * A sign-in under `maxSessionsPerUser` is held to the cap once its session is stored (`devices.ts`):
 * the sessions past it are ended by the same rule, never deleted around it.
 */
import type { CookieReading } from './cookie.js'
import { CookieLifetime, readSessionCookie, serializeClearingCookie } from './cookie.js'
import { Keyring } from './crypto.js'
import { CsrfSecrets } from './csrf-secret.js'
import { Devices, type RevokeCount, type UserSessionInfo } from './devices.js'
import type { CommitResult, RequestFacts } from './facts.js'
import { GuardedStore } from './guarded-store.js'
import { generateId } from './id.js'
import { emitter, type Lifecycle } from './lifecycle/context.js'
import { Ending } from './lifecycle/ending.js'
import { type EndReason, isNoticeRecord, Notices } from './lifecycle/notice.js'
import { KeyedQueue } from './lifecycle/queue.js'
import { Reader } from './lifecycle/read.js'
import type { OpenedRecord, RecordKind } from './lifecycle/record-state.js'
import { isEnded, isExpired, kindOf, successorOf } from './lifecycle/record-state.js'
import { Rotation } from './lifecycle/rotation.js'
import { hasChanges, type ResealOutcome, reseal, settle, Writer } from './lifecycle/write.js'
import type { ResolvedOptions, SessionManagerOptions } from './options.js'
import { resolveOptions } from './options.js'
import { PayloadCache, PayloadCodec } from './payload.js'
import type { SessionData, SessionState } from './session.js'
import { blankMeta, newState, Session, STATE } from './session.js'
import type { SessionRecord } from './store.js'

export type { RevokeCount, UserSessionInfo } from './devices.js'
export type { CommitResult, RequestFacts } from './facts.js'
export type { EndReason } from './lifecycle/notice.js'
export type { RecordKind } from './lifecycle/record-state.js'
export type { ResealOutcome } from './lifecycle/write.js'

const NOTHING: CommitResult = Object.freeze({ setCookie: null, private: false })
const PRIVATE: CommitResult = Object.freeze({ setCookie: null, private: true })

/**
 * The session lifecycle, independent of any framework: `load` a session from request facts, let the
 * application use it, `commit` it to get the headers to send. Adapters are thin translators around these two.
 */
export class SessionManager<T extends SessionData = SessionData> {
  /** The options after defaults and validation. */
  readonly options: ResolvedOptions
  private readonly life: Lifecycle
  private readonly csrf: CsrfSecrets
  private readonly codec: PayloadCodec
  private readonly reader: Reader
  private readonly writer: Writer
  private readonly rotation: Rotation
  private readonly ending: Ending
  private readonly notices: Notices
  private readonly devices: Devices
  private readonly cleared: CommitResult
  private readonly lifetime: CookieLifetime

  constructor(options: SessionManagerOptions) {
    this.options = resolveOptions(options)
    const keyring = new Keyring(this.options.keys)
    this.codec = new PayloadCodec(keyring)
    this.life = {
      options: this.options,
      keyring,
      store: new GuardedStore(this.options.store, this.options.storeTimeoutMs, this.options.metrics),
      payloads: new PayloadCache(this.codec),
      queue: new KeyedQueue(),
      metrics: this.options.metrics,
      emit: emitter(keyring, this.options, options.onEvent, this.options.metrics),
    }
    this.csrf = new CsrfSecrets(keyring, this.options)
    this.notices = new Notices(this.life)
    this.ending = new Ending(this.life, this.notices)
    this.reader = new Reader(this.life, this.ending, this.notices)
    this.writer = new Writer(this.life, this.reader)
    this.rotation = new Rotation(this.life, this.writer, this.ending, this.notices)
    this.devices = new Devices(this.life, this.ending)
    this.cleared = Object.freeze({ setCookie: serializeClearingCookie(this.options.cookie), private: true })
    this.lifetime = new CookieLifetime(
      this.options.cookie,
      this.options.absoluteTimeoutMs,
      this.options.clock,
    )
  }

  /**
   * The session for a request. Never throws for anything the client sent: a missing, malformed,
   * duplicated, unknown, expired or tampered cookie gives a fresh anonymous session. Rejects with
   * `StoreError` only when the store fails. When the cookie named a session that ended without its user
   * asking, the fresh session says why (`session.endedBecause`), once: that costs one more store `get`
   * on each load whose cookie names no live session, and one more when a signed-in session's pending
   * notice of a timeout waits (see `lifecycle/notice.ts`).
   */
  async load(facts: RequestFacts): Promise<Session<T>> {
    const reading: CookieReading = readSessionCookie(facts.cookie, this.options.cookie.name)
    if (reading.id === null) return this.anonymous(reading, facts)
    const loaded = await this.reader.read(reading.id)
    switch (kindOf(loaded)) {
      case 'live':
        return this.restore(reading.id, loaded as OpenedRecord, false, facts)
      case 'forwarder': {
        // An ID renewed moments ago, still in its grace window: carry on with its successor.
        const next = successorOf((loaded as OpenedRecord).meta) as string
        const successor = await this.reader.read(next)
        if (kindOf(successor) !== 'live') return this.told(this.reader.keyOf(next), facts)
        return this.restore(next, successor as OpenedRecord, true, facts)
      }
      default:
        // Ended, or the old ID of a regenerate: it died at once.
        return this.told(this.reader.keyOf(reading.id), facts)
    }
  }

  /**
   * {@link load}, answered synchronously when the store can answer synchronously and the cookie names
   * a live session or none (the common request); `null` when {@link load} must run instead (an expired
   * session to end, a renewed ID to follow, a notice to tell, an asynchronous store). Throws `StoreError`
   * when the store fails.
   */
  loadSync(facts: RequestFacts): Session<T> | null {
    const sync = this.life.store.sync
    if (sync === null) return null
    const reading: CookieReading = readSessionCookie(facts.cookie, this.options.cookie.name)
    if (reading.id === null) return this.anonymous(reading, facts)
    const id = reading.id
    const key = this.reader.keyOf(id)
    const record = sync.getSync(key)
    if (record === null || isEnded(record)) {
      if (this.notices.waitingSync(key)) return null
      this.life.emit('rejected', key, null, 'unknown')
      return this.fresh(true, facts)
    }
    if (isExpired(record, this.options.clock.now(), this.options)) return null
    const loaded = this.life.payloads.open(record, id)
    if (!loaded) {
      if (this.notices.keyRetired(record)) return null
      this.life.emit('rejected', key, record.userId, 'tampered')
      return this.fresh(true, facts)
    }
    return kindOf(loaded) === 'live' ? this.restore(id, loaded, false, facts) : null
  }

  /**
   * Saves what the request did to the session and returns the headers to send. Call it once, before
   * the response's headers leave. Rejects with `StoreError` (store down) or `ConflictError`.
   */
  async commit(session: Session<T>): Promise<CommitResult> {
    const state = session[STATE]
    const now = this.options.clock.now()
    this.life.metrics.commit('async')
    const destroyed = state.destroyed
    if (destroyed !== null) {
      state.destroyed = null
      await this.endLoaded(destroyed.record, destroyed.lineage)
    }
    if (state.record === null) {
      const result = await this.commitNew(state, now)
      const clearSiteData = this.options.clearSiteData
      return this.csrf.finish(
        state,
        state.loggedOut && clearSiteData !== null ? { ...result, clearSiteData } : result,
        now,
      )
    }
    return this.csrf.finish(state, this.quiet(state, now) ?? (await this.commitQueued(state, now)), now)
  }

  /**
   * A commit of a stored session, on the session's queue: a plain write that finds another commit of
   * the session in flight joins the writes waiting behind it, and they land as one (see write.ts).
   */
  private async commitQueued(state: SessionState, now: number): Promise<CommitResult> {
    const key = (state.record as SessionRecord).key
    const queue = this.life.queue
    if (
      !queue.busy(key) ||
      state.rotation !== 'none' ||
      !hasChanges(state) ||
      now - state.meta.iat >= this.options.renewalIntervalMs
    )
      return queue.run(key, () => this.commitStored(state, now))
    if (!(await this.writer.fold(state, now))) return this.dropped(state)
    return state.cookie === 'reissue' ? this.issued(state, now) : PRIVATE
  }

  /**
   * The commit of a request whose handler failed (it threw, or answered with a 5xx status): none of
   * its data changes are saved, but the ends it asked for are applied, because ends fail closed. A
   * `logout`/`destroy` ends the session; a `login` or `regenerate` ends the ID it was to replace (the
   * signed-in session or the new ID is not made: that is a change of the failed request). When an end
   * was due the cookie is cleared (with `Clear-Site-Data` after a logout); otherwise nothing is set
   * but the private headers. Rejects with `StoreError` when the store fails.
   */
  async abandon(session: Session<T>): Promise<CommitResult> {
    const state = session[STATE]
    this.life.metrics.commit('abandoned')
    const destroyed = state.destroyed
    const replaced = state.rotation !== 'none' ? state.record : null
    if (destroyed === null && replaced === null) return PRIVATE
    state.destroyed = null
    if (destroyed !== null) await this.endLoaded(destroyed.record, destroyed.lineage)
    // A sign-in cleared the lineage it started from; a regenerate kept it.
    if (replaced !== null) await this.endLoaded(replaced, state.rotation === 'login' ? '' : state.meta.lid)
    const clearSiteData = this.options.clearSiteData
    return state.loggedOut && clearSiteData !== null ? { ...this.cleared, clearSiteData } : this.cleared
  }

  /**
   * {@link abandon}, answered synchronously when the failed request asked for no end (the common
   * case): `null` when {@link abandon} must run instead.
   */
  abandonSync(session: Session<T>): CommitResult | null {
    const state = session[STATE]
    if (state.destroyed !== null || (state.rotation !== 'none' && state.record !== null)) return null
    this.life.metrics.commit('abandoned')
    return PRIVATE
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
    if (result === null) return null
    this.life.metrics.commit('sync')
    return this.csrf.finish(state, result, now)
  }

  /**
   * Whether `token` is a CSRF token of this session: made by `csrfToken()` from its current CSRF secret
   * (for a session not stored, the secret of the pre-session cookie it came with), with any key of the
   * ring. Format-checked first, compared in constant time; never throws. The CSRF guard calls it.
   */
  verifyCsrfToken(session: Session<T>, token: string): boolean {
    return this.csrf.verify(session[STATE], token)
  }

  /**
   * Whether some token could pass {@link verifyCsrfToken} for this session: false only for a session
   * not stored that came without a usable pre-session cookie. The CSRF guard then refuses a form
   * without reading its body.
   */
  hasCsrfSecret(session: Session<T>): boolean {
    return this.csrf.hasSecret(session[STATE])
  }

  /**
   * The live sessions of `userId`, most recent first, for a "your devices" page. Pass the request's
   * session as `current` to have it marked. Needs a store with a user index.
   */
  listUserSessions(userId: string, options: { current?: Session<T> } = {}): Promise<UserSessionInfo[]> {
    refuseCallback('listUserSessions', options)
    const current = options.current?.[STATE]
    return this.devices.list(userId, current?.record ? current.meta.lid : undefined)
  }

  /**
   * Ends the session named by `handle` (from {@link listUserSessions} or {@link handleOf}), whatever ID
   * rotations happened since the handle was made. With `userId`, only if the session belongs to that
   * user. Resolves `true` only when this call ended a live session; `false` for a forged, garbled or
   * stale handle, or a session already ended. Needs a store with a user index.
   */
  revoke(handle: string, options: { userId?: string } = {}): Promise<boolean> {
    refuseCallback('revoke', options)
    return this.devices.revoke(handle, options.userId)
  }

  /**
   * Ends every session of `userId` ("sign out everywhere"), but the one whose handle is `except`,
   * including records sealed with a key this manager was not given (an end needs no key). Resolves how
   * many sessions this call ended. Needs a store with a user index.
   */
  async revokeUserSessions(userId: string, options: { except?: string } = {}): Promise<number> {
    refuseCallback('revokeUserSessions', options)
    return (await this.devices.revokeAll(userId, options.except)).ended
  }

  /**
   * For operators (the CLI): {@link revokeUserSessions} of every session of `userId`, saying how many of
   * the records it ended no key of the ring opens.
   */
  revokeUserRecords(userId: string): Promise<RevokeCount> {
    return this.devices.revokeAll(userId, undefined)
  }

  /** The handle of a stored, signed-in session, as {@link listUserSessions} would give it; else `null`. */
  handleOf(session: Session<T>): string | null {
    const state = session[STATE]
    if (!state.record || state.userId === null || state.meta.lid === '') return null
    return this.devices.handle(state.userId, state.meta.lid)
  }

  /**
   * For operators (the CLI): what a record listed from the store is, by this manager's keys: one of
   * the four states of the rule, `notice` for a notice of why a session ended (`session.endedBecause`:
   * not a session; told without opening it), or `unopenable` when no key of the ring opens it.
   */
  inspect(record: SessionRecord): RecordKind | 'notice' | 'unopenable' {
    if (isEnded(record)) return 'ended'
    if (isNoticeRecord(record)) return 'notice'
    const opened = this.codec.open(record)
    return opened === null ? 'unopenable' : kindOf(opened)
  }

  /**
   * For operators (the CLI): ends a record listed from the store as the rule ends every session (the
   * ended payload by compare-and-set, then the tombstone), without opening it: an end needs no key.
   * Resolves whether this call ended it.
   */
  endRecord(record: SessionRecord): Promise<boolean> {
    return this.life.queue.run(record.key, () => this.ending.endListed(record))
  }

  /**
   * For operators (`latchkey rekey`): re-seals a record listed from the store with the first key, by
   * compare-and-set, never overwriting a write of the application. `onConflict` counts retries. A
   * notice (`session.endedBecause`) is skipped: it lives a week at most.
   */
  reseal(record: SessionRecord, onConflict: () => void = () => {}): Promise<ResealOutcome> {
    if (isNoticeRecord(record)) return Promise.resolve('skipped')
    return reseal(this.life, this.codec, record, onConflict)
  }

  /** Closes the store (if it holds resources). */
  async close(): Promise<void> {
    await this.life.store.close()
  }

  /**
   * Ends a record this request loaded as a live session (a logout, or the ID a failed rotation was to
   * replace), following it wherever it moved; `lineage` (`''` when unknown) lets a signed-in session's
   * other records be found through the user index when the trail runs out.
   */
  private async endLoaded(record: SessionRecord, lineage: string): Promise<void> {
    const userId = record.userId
    const ended = await this.life.queue.run(record.key, () =>
      this.ending.end(record, {
        follow: true,
        live: true,
        lineage: userId === null || lineage === '' ? undefined : { userId, lid: lineage },
      }),
    )
    if (ended) this.life.emit('destroyed', record.key, userId)
  }

  /** {@link commitSync} without the CSRF pre-session cookie. */
  private commitSyncWithoutCsrf(state: SessionState, now: number): CommitResult | null {
    const quiet = this.quiet(state, now)
    if (quiet !== null) return quiet
    if (this.life.store.sync === null || state.destroyed !== null || state.loggedOut) return null
    const record = state.record
    if (record === null) {
      if (state.data.size === 0 && state.userId === null)
        return state.cookie === 'clear' ? this.cleared : NOTHING
      // A sign-in under a cap on sessions per user lists the user's sessions: not a synchronous commit.
      if (state.userId !== null && this.options.maxSessionsPerUser !== null) return null
      const created = this.rotation.insertSync(state, now)
      if (created === null) return null
      this.notices.prepareSync(created)
      this.created(state, created.key)
      settle(state, created)
      return this.issued(state, now)
    }
    if (state.rotation !== 'none') return null
    if (this.life.queue.busy(record.key) || now - state.meta.iat >= this.options.renewalIntervalMs)
      return null
    if (hasChanges(state)) {
      if (!this.writer.writeSync(state, now)) return null
    } else {
      this.writer.touchSync(state, now)
    }
    return state.cookie === 'reissue' ? this.issued(state, now) : PRIVATE
  }

  /** The commit of a request with nothing to write (the common read-only request); `null` when there is work. */
  private quiet(state: SessionState, now: number): CommitResult | null {
    const record = state.record
    if (record === null || state.destroyed !== null || !this.writer.isQuiet(state, record, now)) return null
    return state.cookie === 'reissue' ? this.issued(state, now) : PRIVATE
  }

  /** A new session: stored only if it holds something; an unusable cookie the browser sent is cleared. */
  private async commitNew(state: SessionState, now: number): Promise<CommitResult> {
    if (state.data.size === 0 && state.userId === null)
      return state.cookie === 'clear' ? this.cleared : NOTHING
    const record = await this.rotation.insert(state, now, false, null)
    await this.notices.prepare(record)
    this.created(state, record.key)
    settle(state, record)
    if (state.userId !== null) await this.devices.holdCap(state.userId, state.meta.lid)
    return this.issued(state, now)
  }

  /** The events of a session stored for the first time (before it settles): `created`, and `login` when a sign-in made it. */
  private created(state: SessionState, key: string): void {
    this.life.emit('created', key, state.userId)
    if (state.rotation === 'login') this.life.emit('login', key, state.userId)
  }

  private async commitStored(state: SessionState, now: number): Promise<CommitResult> {
    if (state.rotation !== 'none') {
      const login = state.rotation === 'login'
      if (!(await this.rotation.rotate(state, now))) return this.dropped(state)
      if (login) await this.devices.holdCap(state.userId as string, state.meta.lid)
      return this.issued(state, now)
    }
    if (hasChanges(state)) {
      if (!(await this.writer.write(state, now))) return this.dropped(state)
    } else if (this.writer.touchDue(state.record as SessionRecord, now)) {
      await this.writer.touch(state, now)
    }
    if (now - state.meta.iat >= this.options.renewalIntervalMs && (await this.rotation.renew(state, now))) {
      return this.issued(state, now)
    }
    return state.cookie === 'reissue' ? this.issued(state, now) : PRIVATE
  }

  /** The session ended meanwhile: this request's changes are discarded (see `discarded()` in session.ts). */
  private dropped(state: SessionState): CommitResult {
    this.life.emit('dropped', state.record?.key ?? null, state.userId)
    return PRIVATE
  }

  /** The session cookie for the state's stored record, of the kind the session chose ("remember me") or the default. */
  private issued(state: SessionState, now: number): CommitResult {
    return { setCookie: this.lifetime.issue(state, now), private: true }
  }

  /** A fresh session for a request whose cookie named none; a rejected cookie is reported and cleared. */
  private anonymous(reading: CookieReading, facts: RequestFacts): Session<T> {
    if (reading.rejected) this.life.emit('rejected', null, null, 'malformed')
    return this.fresh(reading.rejected, facts)
  }

  /**
   * A fresh session for a request whose cookie named a session that is no more (its store key `key`),
   * told why when a notice waits for it.
   */
  private async told(key: string, facts: RequestFacts): Promise<Session<T>> {
    const session = this.fresh(true, facts)
    const reason: EndReason | null = await this.notices.take(key)
    session[STATE].endedBecause = reason
    return session
  }

  private fresh(clearCookie: boolean, facts: RequestFacts): Session<T> {
    this.life.metrics.load(clearCookie ? 'rejected' : 'anonymous')
    const pre = this.csrf.preSession(facts)
    const meta = blankMeta()
    meta.csrf = pre.csrf
    return new Session<T>(
      newState({
        id: generateId(),
        record: null,
        data: new Map(),
        meta,
        userId: null,
        userAgent: facts.userAgent,
        csrf: this.csrf,
        cookieFacts: this.lifetime,
        csrfCookie: pre.cookie,
        cookie: clearCookie ? 'clear' : 'keep',
        clock: this.options.clock,
      }),
    )
  }

  private restore(id: string, loaded: OpenedRecord, reissue: boolean, facts: RequestFacts): Session<T> {
    this.life.metrics.load('live')
    return new Session<T>(
      newState({
        id,
        record: loaded.record,
        data: loaded.data,
        meta: loaded.meta,
        userId: loaded.record.userId,
        userAgent: facts.userAgent,
        csrf: this.csrf,
        cookieFacts: this.lifetime,
        csrfCookie: this.csrf.leftover(facts),
        cookie: reissue ? 'reissue' : 'keep',
        reseal: loaded.stale,
        clock: this.options.clock,
      }),
    )
  }
}

/**
 * A callback passed where latchkey returns a promise (express-session's habit) would never be called:
 * a `TypeError` that names the promise form, and the drop-in for code written with callbacks.
 * Checked synchronously, before anything is done.
 */
function refuseCallback(method: string, options: unknown): void {
  if (typeof options === 'function') {
    throw new TypeError(
      `latchkey: ${method}() takes no callback; it returns a promise: await manager.${method}(...) or use .then(); code written for express-session's callbacks can use the drop-in, latchkey/express-session`,
    )
  }
}

/** Builds a {@link SessionManager}. Throws `ConfigError` naming the first bad option. */
export function createSessionManager<T extends SessionData = SessionData>(
  options: SessionManagerOptions,
): SessionManager<T> {
  return new SessionManager<T>(options)
}

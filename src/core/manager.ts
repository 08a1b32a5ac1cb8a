import { setTimeout as sleep } from 'node:timers/promises'
import type { CookieReading } from './cookie.js'
import { readSessionCookie, serializeClearingCookie, serializeSessionCookie } from './cookie.js'
import { Keyring, randomToken } from './crypto.js'
import { ConfigError, ConflictError, SessionError } from './errors.js'
import type { SessionEvent } from './events.js'
import { generateId, storeKeyOf } from './id.js'
import type { ResolvedOptions, SessionManagerOptions } from './options.js'
import { resolveOptions } from './options.js'
import type { SessionData, SessionMeta, SessionState } from './session.js'
import { applyChange, Session, STATE } from './session.js'
import type { SessionRecord } from './store.js'
import { expiresAt, isClosableStore, isUserIndexedStore } from './store.js'

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

const NOTHING: CommitResult = Object.freeze({ setCookie: null, private: false })
const PRIVATE: CommitResult = Object.freeze({ setCookie: null, private: true })
const MAX_USER_AGENT = 256
const CREATE_ATTEMPTS = 4
const HANDLE_CONTEXT = 'latchkey/handle'
/** Sessions a process keeps small facts about (decrypted payloads, last touch): enough for those active at once. */
const RECENT_SESSIONS = 4096

/** Sets `key` in an insertion-ordered map kept to {@link RECENT_SESSIONS} entries, dropping the oldest. */
function keepRecent<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > RECENT_SESSIONS) map.delete(map.keys().next().value as string)
}

function parsePayload(text: string): { data: Map<string, unknown>; meta: SessionMeta } | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return null
  }
  if (!parsed || typeof parsed !== 'object') return null
  const { d, m } = parsed as { d?: unknown; m?: unknown }
  if (!d || typeof d !== 'object' || Array.isArray(d) || !m || typeof m !== 'object') return null
  const meta = m as Partial<SessionMeta>
  if (typeof meta.csrf !== 'string' || typeof meta.iat !== 'number') return null
  if (meta.ua !== undefined && typeof meta.ua !== 'string') return null
  if (meta.next !== undefined && typeof meta.next !== 'string') return null
  return { data: new Map(Object.entries(d)), meta: meta as SessionMeta }
}

/** The payload must be written: data changed, the user changed, a retired key sealed it, or it lacks a CSRF secret. */
function hasChanges(state: SessionState): boolean {
  return state.changes.length > 0 || state.userChanged || state.reseal || state.meta.csrf === ''
}

function serializePayload(data: Map<string, unknown>, meta: SessionMeta): string {
  return JSON.stringify({ d: Object.fromEntries(data), m: meta })
}

/**
 * The session lifecycle, independent of any framework: `load` a session from request facts, let the
 * application use it, `commit` it to get the headers to send. Adapters are thin translators around these two.
 */
export class SessionManager<T extends SessionData = SessionData> {
  /** The options after defaults and validation. */
  readonly options: ResolvedOptions
  private readonly keyring: Keyring
  private readonly queues = new Map<string, Promise<unknown>>()
  private readonly opened = new Map<
    string,
    { key: string; payload: string; plaintext: string; stale: boolean }
  >()
  /** When this process last touched each recently touched store key. */
  private readonly touched = new Map<string, number>()

  private readonly onEvent: ((event: SessionEvent) => void) | undefined

  constructor(options: SessionManagerOptions) {
    this.options = resolveOptions(options)
    this.keyring = new Keyring(this.options.keys)
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
    // An ID renewed moments ago, still in its grace window: carry on with its successor.
    const successor = await this.read(loaded.meta.next)
    if (!successor || successor.meta.next !== undefined) return this.fresh(true, facts)
    return this.restore(loaded.meta.next, successor, true, facts)
  }

  /**
   * Saves what the request did to the session and returns the headers to send. Call it once, before
   * the response's headers leave. Rejects with `StoreError` (store down) or `ConflictError`.
   */
  async commit(session: Session<T>): Promise<CommitResult> {
    const state = session[STATE]
    const now = this.options.clock.now()
    let loggedOut = false
    if (state.destroyedKey !== null) {
      await this.options.store.destroy(state.destroyedKey)
      this.emit('destroyed', state.destroyedKey, null)
      state.destroyedKey = null
      loggedOut = true
    }
    if (state.record === null) {
      if (state.data.size === 0 && state.userId === null) {
        if (!state.clearCookie) return NOTHING
        const cleared = { setCookie: serializeClearingCookie(this.options.cookie), private: true }
        const clearSiteData = this.options.clearSiteData
        return loggedOut && clearSiteData !== null ? { ...cleared, clearSiteData } : cleared
      }
      await this.insert(state, now, false, null)
      this.emit('created', (state.record as SessionRecord | null)?.key ?? null, state.userId)
      return this.issued(state, now)
    }
    return (
      this.commitIfQuiet(session, now) ?? this.serial(state.record.key, () => this.commitStored(state, now))
    )
  }

  /**
   * The commit of a request with nothing to write (the common read-only request), answered
   * synchronously; `null` when there is something to write and {@link commit} must run.
   */
  commitIfQuiet(session: Session<T>, now = this.options.clock.now()): CommitResult | null {
    const state = session[STATE]
    const record = state.record
    if (record === null || state.destroyedKey !== null || !this.isQuiet(state, record, now)) return null
    return state.reissueCookie ? this.issued(state, now) : PRIVATE
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
    const store = this.options.store
    if (!isUserIndexedStore(store)) throw new ConfigError('store', 'this store cannot list sessions by user')
    const currentKey = options.current?.[STATE].record?.key
    const sessions: UserSessionInfo[] = []
    for (const record of await store.listByUser(userId)) {
      if (record.userId !== userId) continue
      const opened = this.keyring.open(record.payload, record.key)
      const payload = opened && parsePayload(opened.plaintext)
      if (!payload || payload.meta.next !== undefined) continue
      sessions.push({
        handle: this.handle(record.key, userId),
        createdAt: record.createdAt,
        lastSeenAt: record.lastSeenAt,
        userAgent: payload.meta.ua ?? null,
        current: record.key === currentKey,
      })
    }
    return sessions.sort((a, b) => b.lastSeenAt - a.lastSeenAt)
  }

  /**
   * Ends the session named by `handle` (from {@link listUserSessions}). With `userId`, only if the
   * session belongs to that user. Resolves `false` for a forged, garbled or stale handle.
   */
  async revoke(handle: string, options: { userId?: string } = {}): Promise<boolean> {
    const target = this.openHandle(handle)
    if (!target || (options.userId !== undefined && options.userId !== target.userId)) return false
    const record = await this.options.store.get(target.key)
    if (!record || record.userId !== target.userId) return false
    await this.options.store.destroy(target.key)
    this.emit('revoked', target.key, target.userId)
    return true
  }

  /** Ends every session of `userId` ("sign out everywhere"), but the one named by `except`. Resolves the count. */
  async revokeUserSessions(userId: string, options: { except?: string } = {}): Promise<number> {
    const store = this.options.store
    if (!isUserIndexedStore(store)) throw new ConfigError('store', 'this store cannot list sessions by user')
    const except = options.except === undefined ? undefined : this.openHandle(options.except)
    const count = await store.destroyByUser(
      userId,
      except && except.userId === userId ? except.key : undefined,
    )
    this.emit('revoked', null, userId, `${count} sessions`)
    return count
  }

  /** The handle of a session, as {@link listUserSessions} would give it; `null` for an anonymous one. */
  handleOf(session: Session<T>): string | null {
    const state = session[STATE]
    if (!state.record || state.userId === null) return null
    return this.handle(state.record.key, state.userId)
  }

  /** A handle names a session to its owner: its store key and user, sealed with the handle subkey. */
  private handle(key: string, userId: string): string {
    return this.keyring.sealHandle(JSON.stringify([key, userId]), HANDLE_CONTEXT)
  }

  /** Closes the store (if it holds resources). */
  async close(): Promise<void> {
    const store = this.options.store
    if (isClosableStore(store)) await store.close()
  }

  private openHandle(handle: string): { key: string; userId: string } | null {
    if (typeof handle !== 'string' || handle.length > 1024) return null
    const text = this.keyring.openHandle(handle, HANDLE_CONTEXT)
    if (text === null) return null
    const parsed: unknown = JSON.parse(text)
    if (!Array.isArray(parsed) || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') return null
    return { key: parsed[0], userId: parsed[1] }
  }

  private fresh(clearCookie: boolean, facts: RequestFacts): Session<T> {
    return new Session<T>({
      id: generateId(),
      record: null,
      data: new Map(),
      meta: { csrf: '', iat: 0 },
      userId: null,
      changes: [],
      rotation: 'none',
      destroyedKey: null,
      clearCookie,
      reissueCookie: false,
      reseal: false,
      userChanged: false,
      userAgent: facts.userAgent,
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
      destroyedKey: null,
      clearCookie: false,
      reissueCookie,
      reseal: loaded.stale,
      userChanged: false,
      userAgent: facts.userAgent,
    })
  }

  /** The live, intact record of `id`, opened; `null` when missing, expired or tampered with. */
  private async read(id: string): Promise<Loaded | null> {
    const cached = this.opened.get(id)
    const key = cached?.key ?? storeKeyOf(id)
    const store = this.options.store
    const record = await store.get(key)
    if (!record) {
      this.emit('rejected', key, null, 'unknown')
      return null
    }
    const now = this.options.clock.now()
    const { idleTimeoutMs, absoluteTimeoutMs } = this.options
    if (
      now >= expiresAt(record) ||
      now >= record.lastSeenAt + idleTimeoutMs ||
      now >= record.createdAt + absoluteTimeoutMs
    ) {
      await store.destroy(key)
      this.emit('expired', key, record.userId)
      return null
    }
    const opened = cached?.payload === record.payload ? cached : this.keyring.open(record.payload, key)
    const payload = opened && parsePayload(opened.plaintext)
    if (!opened || !payload) {
      this.opened.delete(id)
      this.emit('rejected', key, record.userId, 'tampered')
      return null
    }
    if (opened !== cached) this.remember(id, key, record.payload, opened.plaintext, opened.stale)
    return { record, data: payload.data, meta: payload.meta, stale: opened.stale }
  }

  /**
   * Keeps what a payload decrypted to, so the next request on the session skips the hash and the
   * decryption when the stored payload is still the same string. The store stays the authority: every
   * request still reads the record, and only an identical payload is served from here. The plaintext is
   * parsed afresh each time, so no request can see another's in-place changes.
   */
  private remember(id: string, key: string, payload: string, plaintext: string, stale: boolean): void {
    keepRecent(this.opened, id, { key, payload, plaintext, stale })
  }

  /** Seals the session's data for `key`, remembering the plaintext for the next read. */
  private seal(state: SessionState, key: string): string {
    const plaintext = serializePayload(state.data, state.meta)
    const payload = this.keyring.seal(plaintext, key)
    this.remember(state.id, key, payload, plaintext, false)
    return payload
  }

  private async commitStored(state: SessionState, now: number): Promise<CommitResult> {
    const store = this.options.store
    if (state.rotation === 'kill-old') {
      const login = state.userChanged
      // A sign-in proved who the user is in this very request, so it stands even if the anonymous
      // session it started from was destroyed meanwhile; any other rotation of a dead session is dropped.
      if (!(await this.rebase(state, false)) && !login) return this.dropped(state)
      const old = state.record as SessionRecord
      // A sign-in starts the session's clock afresh; any other privilege change keeps its deadlines.
      await this.insert(state, now, true, login ? null : old)
      await store.destroy(old.key)
      this.emit(login ? 'login' : 'regenerated', (state.record as SessionRecord).key, state.userId)
      return this.issued(state, now)
    }
    if (hasChanges(state)) {
      if (!(await this.write(state, now))) return this.dropped(state)
    } else {
      const record = state.record as SessionRecord
      if (now - this.lastSeen(record) >= this.options.touchIntervalMs) {
        const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, record.absoluteExpiresAt)
        await store.touch(record.key, now, idleExpiresAt)
        state.record = { ...record, lastSeenAt: now, idleExpiresAt }
        keepRecent(this.touched, record.key, now)
      }
    }
    if (now - state.meta.iat >= this.options.renewalIntervalMs && (await this.renew(state, now))) {
      return this.issued(state, now)
    }
    return state.reissueCookie ? this.issued(state, now) : PRIVATE
  }

  private dropped(state: SessionState): CommitResult {
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
    if (state.userChanged || meta.ua === undefined) {
      const ua = state.userAgent
      if (ua) meta.ua = ua.slice(0, MAX_USER_AGENT)
    }
    meta.iat = now
  }

  /**
   * Stores the session as a new record: under its own fresh ID, or under a new one when `rotate`.
   * `previous` lends its creation time and absolute deadline (renewal, regenerate).
   */
  private async insert(
    state: SessionState,
    now: number,
    rotate: boolean,
    previous: SessionRecord | null,
  ): Promise<void> {
    const { store, idleTimeoutMs, absoluteTimeoutMs } = this.options
    const absoluteExpiresAt = previous?.absoluteExpiresAt ?? now + absoluteTimeoutMs
    this.prepareMeta(state, now)
    for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
      if (rotate || attempt > 0) state.id = generateId()
      const key = storeKeyOf(state.id)
      const record: SessionRecord = {
        key,
        version: 1,
        userId: state.userId,
        createdAt: previous?.createdAt ?? now,
        lastSeenAt: now,
        idleExpiresAt: Math.min(now + idleTimeoutMs, absoluteExpiresAt),
        absoluteExpiresAt,
        payload: this.seal(state, key),
      }
      if (await store.create(record)) {
        this.settle(state, record)
        return
      }
    }
    throw new SessionError(
      'ERR_LATCHKEY_STORE_COLLISION',
      'the store refused every new session ID: is create() insert-only?',
    )
  }

  /** Writes the session with compare-and-set; on conflict reloads, replays this request's changes and retries. */
  private async write(state: SessionState, now: number): Promise<boolean> {
    const { store, idleTimeoutMs, commitTimeoutMs } = this.options
    const deadline = performance.now() + commitTimeoutMs
    for (let attempt = 1; ; attempt++) {
      const record = state.record as SessionRecord
      if (state.meta.csrf === '') state.meta.csrf = randomToken()
      const next: SessionRecord = {
        ...record,
        version: record.version + 1,
        userId: state.userId,
        lastSeenAt: now,
        idleExpiresAt: Math.min(now + idleTimeoutMs, record.absoluteExpiresAt),
        payload: this.seal(state, record.key),
      }
      if (await store.update(next, record.version)) {
        this.settle(state, next)
        return true
      }
      if (!(await this.rebase(state, true))) return false
      if (performance.now() > deadline) throw new ConflictError()
      // In one process commits are queued, so a retry here means another process is writing too.
      if (attempt > 1) await sleep(Math.random() * Math.min(100, 2 ** attempt))
    }
  }

  /**
   * Brings the state up to the stored record, replaying this request's changes on it. `false` when
   * the session is gone (destroyed, revoked, expired): the request's changes are dropped.
   */
  private async rebase(state: SessionState, force: boolean): Promise<boolean> {
    const record = state.record as SessionRecord
    let fresh = await this.read(state.id)
    if (fresh && fresh.meta.next !== undefined) {
      // Another process renewed the ID meanwhile: follow it, and hand the browser the new ID.
      const next = fresh.meta.next
      fresh = await this.read(next)
      if (!fresh || fresh.meta.next !== undefined) return false
      state.id = next
      state.reissueCookie = true
    } else if (!fresh) {
      return false
    }
    if (!force && fresh.record.version === record.version && fresh.record.key === record.key) return true
    for (const change of state.changes) applyChange(fresh.data, change)
    state.data = fresh.data
    state.record = fresh.record
    if (!state.userChanged) state.userId = fresh.record.userId
    const csrf = state.meta.csrf
    state.meta = { ...fresh.meta, csrf: state.userChanged ? csrf : fresh.meta.csrf }
    state.reseal ||= fresh.stale
    return true
  }

  /** Rotates the ID of a long-lived session; the old ID forwards to the new one for the grace window. */
  private async renew(state: SessionState, now: number): Promise<boolean> {
    const { store, renewalGraceMs } = this.options
    const old = state.record as SessionRecord
    const oldId = state.id
    const oldMeta = state.meta
    state.meta = { ...oldMeta }
    await this.insert(state, now, true, old)
    const forwarder: SessionRecord = {
      ...old,
      version: old.version + 1,
      lastSeenAt: now,
      idleExpiresAt: Math.min(now + renewalGraceMs, old.absoluteExpiresAt),
      payload: this.keyring.seal(
        serializePayload(new Map(), { csrf: '', iat: now, next: state.id }),
        old.key,
      ),
    }
    if (await store.update(forwarder, old.version)) {
      this.emit('renewed', (state.record as SessionRecord).key, state.userId)
      return true
    }
    // The old record moved under us (another process wrote it): keep the old ID until the next request.
    await store.destroy((state.record as SessionRecord).key)
    this.settle(state, old)
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

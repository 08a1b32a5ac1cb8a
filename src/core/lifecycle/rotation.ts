/**
 * Rotations: the session moves to a new ID. The new record is always created first, under an ID
 * nobody has seen; then one compare-and-set on the old record is the moment of the change.
 *
 * - **login**: a new lineage and a new clock (the user proved who they are in this request). The old
 *   record is *ended*; nothing written from it reaches the signed-in session. A sign-in stands even if
 *   the session it started from ended meanwhile.
 * - **regenerate**: the same lineage and deadlines. The old record is *retired*: a pointer that opens
 *   nothing (the old ID is dead at once) but lets requests that loaded the session earlier land their
 *   writes on the successor. A `regenerate` of a session that ended meanwhile is discarded.
 * - **renewal** (every `renewalIntervalMs`): the old record becomes a *forwarder* that answers for the
 *   successor until `renewalGraceMs` after it was written, so parallel requests are not logged out.
 *
 * If the old record moved before the change landed, a rotation replays its own changes on the newer
 * version into its new record (a write acknowledged meanwhile is carried over, never lost); if the
 * session ended meanwhile, the new record, whose ID nobody has seen, is destroyed.
 */

import { randomToken } from '../crypto.js'
import { ensureSecret } from '../csrf-secret.js'
import { SessionError } from '../errors.js'
import { generateId, storeKeyOf } from '../id.js'
import type { SessionState } from '../session.js'
import { applyChange } from '../session.js'
import type { SessionRecord } from '../store.js'
import type { Lifecycle } from './context.js'
import type { Ending } from './ending.js'
import type { Notices } from './notice.js'
import type { OpenedRecord } from './record-state.js'
import { forwarderRecord } from './record-state.js'
import { settle, type Writer } from './write.js'

const MAX_USER_AGENT = 256
const CREATE_ATTEMPTS = 4
const LINEAGE_BYTES = 16

/** Creates records and rotates IDs for one manager. */
export class Rotation {
  constructor(
    private readonly life: Lifecycle,
    private readonly writer: Writer,
    private readonly ending: Ending,
    private readonly notices: Notices,
  ) {}

  /**
   * `login` or `regenerate`, as the state asks. Resolves `false` when the change was discarded (the
   * session ended meanwhile, or was revoked while the change was landing): nothing was handed out.
   */
  async rotate(state: SessionState, now: number): Promise<boolean> {
    const login = state.rotation === 'login'
    const live = await this.writer.rebase(state, false)
    if (!live && !login) return false
    const old = state.record as SessionRecord
    // A sign-in starts the session's clock afresh; any other privilege change keeps its deadlines.
    const created = await this.insert(state, now, true, login ? null : old)
    let revoked = false
    const replay = async (fresh: OpenedRecord) => {
      revoked = !(await this.replayInto(state, fresh, login))
      return !revoked
    }
    let closed = false
    if (live) {
      closed = login
        ? await this.ending.end(old, { follow: true, live: true, replay })
        : await this.ending.retire(old, { successorId: state.id, lineage: state.meta.lid }, replay)
    }
    // A revocation ended the new record before the old one was closed: the change is off.
    if (revoked) return false
    if (!closed && !login) {
      await this.life.store.destroy(created.key)
      return false
    }
    settle(state, state.record as SessionRecord)
    // The old record's pending notice went with its end or retirement; the new one gets its own.
    await this.notices.prepare(state.record as SessionRecord)
    this.life.emit(login ? 'login' : 'regenerated', created.key, state.userId)
    return true
  }

  /**
   * Rotates the ID of a long-lived session; the old ID forwards to the new one for the grace window,
   * and not a moment longer. Resolves `false` (the state unchanged) when the old record moved under it.
   */
  async renew(state: SessionState, now: number): Promise<boolean> {
    const { options, store } = this.life
    const old = state.record as SessionRecord
    const oldId = state.id
    const oldMeta = state.meta
    state.meta = { ...oldMeta }
    const created = await this.insert(state, now, true, old)
    // The window opens when the forwarder is written, which a slow store may make later than `now`.
    const graceEndsAt = Math.min(options.clock.now() + options.renewalGraceMs, old.absoluteExpiresAt)
    const forwarder = forwarderRecord(
      old,
      { successorId: state.id, lineage: oldMeta.lid },
      now,
      graceEndsAt,
      (meta, key) => this.life.payloads.sealPointer(meta, key),
    )
    if (await store.update(forwarder, old.version)) {
      settle(state, created)
      // The pending notice (notice.ts) moves with the session: the old ID's would tell a timeout once
      // its forwarder expires.
      await this.notices.prepare(created)
      await this.notices.discard(old)
      this.life.emit('renewed', created.key, state.userId)
      return true
    }
    // The old record moved under us (written, renewed or ended elsewhere): the new ID was never
    // handed out, so drop it and keep the old one until the next request.
    await store.destroy(created.key)
    state.record = old
    state.id = oldId
    state.meta = oldMeta
    return false
  }

  /**
   * Stores the session as a new record, under its own fresh ID or under a new one when `rotate`, and
   * makes it the state's record. `previous` lends its creation time and absolute deadline (renewal,
   * regenerate). The request's changes are kept: the caller settles once the whole commit is done.
   */
  async insert(
    state: SessionState,
    now: number,
    rotate: boolean,
    previous: SessionRecord | null,
  ): Promise<SessionRecord> {
    this.prepareMeta(state, now)
    for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
      if (rotate || attempt > 0) state.id = generateId()
      const record = this.newRecord(state, now, previous)
      if (await this.life.store.create(record)) {
        state.record = record
        return record
      }
    }
    throw new SessionError(
      'ERR_LATCHKEY_STORE_COLLISION',
      'the store refused every new session ID: is create() insert-only?',
    )
  }

  /** {@link insert} of a new session on a synchronous store, one attempt; `null` when the store refused it. */
  insertSync(state: SessionState, now: number): SessionRecord | null {
    this.prepareMeta(state, now)
    const created = this.newRecord(state, now, null)
    return this.life.store.sync?.createSync(created) ? created : null
  }

  private prepareMeta(state: SessionState, now: number): void {
    const meta = state.meta
    ensureSecret(meta)
    if (meta.lid === '') meta.lid = randomToken(LINEAGE_BYTES)
    if (state.rotation === 'login' || meta.ua === undefined) {
      const ua = state.userAgent
      if (ua) meta.ua = ua.slice(0, MAX_USER_AGENT)
    }
    meta.iat = now
    // A proof of identity in this request (login, reauthenticate) is sealed with the session.
    if (state.proved !== null) meta.at = state.proved
  }

  /** The first record of the session under `state.id`; `previous` lends its creation time and absolute deadline. */
  private newRecord(state: SessionState, now: number, previous: SessionRecord | null): SessionRecord {
    const options = this.life.options
    const absoluteExpiresAt = previous?.absoluteExpiresAt ?? now + options.absoluteTimeoutMs
    const key = storeKeyOf(state.id)
    return {
      key,
      version: 1,
      userId: state.userId,
      createdAt: previous?.createdAt ?? now,
      lastSeenAt: now,
      idleExpiresAt: Math.min(now + options.idleTimeoutMs, absoluteExpiresAt),
      absoluteExpiresAt,
      payload: this.writer.seal(state, key),
    }
  }

  /** Carries a newer version of a rotation's old record, with this request's changes replayed on it, into its new record. */
  private async replayInto(state: SessionState, fresh: OpenedRecord, login: boolean): Promise<boolean> {
    for (const change of state.changes) applyChange(fresh.data, change)
    state.data = fresh.data
    if (!login) state.userId = fresh.record.userId
    const record = state.record as SessionRecord
    const next: SessionRecord = {
      ...record,
      version: record.version + 1,
      userId: state.userId,
      payload: this.writer.seal(state, record.key),
    }
    // Only a revocation can have touched the new record (it is in the user index already): then it ended.
    if (!(await this.life.store.update(next, record.version))) return false
    state.record = next
    return true
  }
}

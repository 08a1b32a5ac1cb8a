/**
 * live -> live: a write is one compare-and-set from the version the request loaded. On conflict the
 * record is read again, this request's own changes (sets, deletes, `update` functions) are replayed on
 * the fresh data, and the write is retried, backing off with jitter and bounded by `commitTimeoutMs`.
 * Inside one process commits on a session queue behind each other (the manager's {@link KeyedQueue}),
 * and a commit that loaded an older version than this process has since written starts from that
 * write instead (its changes replayed on it): one compare-and-set where a failed one, a reread and a
 * second would do. That is only a guess, checked by the compare-and-set itself: when another process
 * wrote (or anything ended the session) in between, it fails, and the full path runs. So a retry means
 * another process is writing too. A session found ended meanwhile is not written
 * back: the request's changes are dropped.
 *
 * Plain writes that arrive while a commit on their session is in flight in this process are **folded**:
 * they wait together, and when their turn comes one compare-and-set writes all of them, each request's
 * changes replayed in the order the requests committed (so the later of two sets of one key wins, as
 * it would one after the other). A write joins a fold only while nothing else has been queued on the
 * session after it (a rotation, a touch, an end), so the order of the commits holds. Every folded
 * request is answered only once that one write has landed, and each learns the same outcome: written,
 * or dropped because the session ended. A fold whose payload would be too large is not the fault of
 * all of its requests: its writes then run one after the other, and only the request that made it too
 * large fails.
 *
 * A request that changes nothing is activity: the record is touched (its idle deadline moved, never
 * the payload) at most once per touch interval.
 */
import { ensureSecret } from '../csrf-secret.js'
import { ConflictError, SessionError } from '../errors.js'
import { keepRecent, type PayloadCodec } from '../payload.js'
import type { SessionMeta, SessionState } from '../session.js'
import { applyChange } from '../session.js'
import type { SessionRecord } from '../store.js'
import type { Lifecycle } from './context.js'
import { MAX_HOPS } from './ending.js'
import { Deadline } from './queue.js'
import type { Reader } from './read.js'
import { isEnded, kindOf, successorOf } from './record-state.js'

/** The payload must be written: data changed, the user changed, a retired key sealed it, or it lacks a CSRF secret. */
export function hasChanges(state: SessionState): boolean {
  return state.changes.length > 0 || state.rotation === 'login' || state.reseal || state.meta.csrf === ''
}

/** The commit is done: the state's record is `record`, and nothing is left to write. */
export function settle(state: SessionState, record: SessionRecord): void {
  state.record = record
  state.changes.length = 0
  state.rotation = 'none'
  state.reseal = false
  if (state.cookie === 'clear') state.cookie = 'keep'
}

/** A session as this process last wrote it: the record, and copies of what its payload holds. */
interface Written {
  readonly record: SessionRecord
  readonly data: ReadonlyMap<string, unknown>
  readonly meta: SessionMeta
}

/** One request of a fold: its state, and how to answer it. */
interface Folded {
  readonly state: SessionState
  resolve(written: boolean): void
  reject(error: unknown): void
}

/** Plain writes waiting together for their session's turn, and where they stand in its queue. */
interface Fold {
  readonly members: Folded[]
  /** The queue's last task once this fold was queued: nothing queued since while it still is. */
  tail: Promise<void> | undefined
}

/** Writes, touches and rebases sessions for one manager. */
export class Writer {
  /** When this process last touched each recently touched store key. */
  private readonly touched = new Map<string, number>()
  /** What this process last wrote under each recently written store key. */
  private readonly written = new Map<string, Written>()
  /** The fold still waiting for its turn on each store key, if any: plain writes joining it. */
  private readonly folds = new Map<string, Fold>()

  constructor(
    private readonly life: Lifecycle,
    private readonly reader: Reader,
  ) {}

  /**
   * Seals the state's data and metadata for the record under `key`. A payload past `maxPayloadBytes` is
   * the application's own error, thrown before anything is written: never a store outage, and the
   * stored session stays as it was.
   */
  seal(state: SessionState, key: string): string {
    const payload = this.life.payloads.seal(state.id, state.data, state.meta, key)
    const limit = this.life.options.maxPayloadBytes
    if (payload.length > limit) {
      throw new SessionError(
        'ERR_LATCHKEY_SESSION_TOO_LARGE',
        `the session is too large to store: ${payload.length} bytes sealed, more than maxPayloadBytes (${limit}); keep large data elsewhere and a reference to it in the session`,
      )
    }
    return payload
  }

  /** The next version of `record` holding the state's data, seen now. */
  nextVersion(state: SessionState, record: SessionRecord, now: number): SessionRecord {
    ensureSecret(state.meta)
    return {
      ...record,
      version: record.version + 1,
      userId: state.userId,
      lastSeenAt: now,
      idleExpiresAt: Math.min(now + this.life.options.idleTimeoutMs, record.absoluteExpiresAt),
      payload: this.seal(state, record.key),
    }
  }

  /** Nothing to write: no change, no rotation, no touch or renewal due. The common read-only request. */
  isQuiet(state: SessionState, record: SessionRecord, now: number): boolean {
    const options = this.life.options
    return (
      state.rotation === 'none' &&
      !hasChanges(state) &&
      now - this.lastSeen(record) < options.touchIntervalMs &&
      now - state.meta.iat < options.renewalIntervalMs
    )
  }

  /** The touch interval has passed since the record's last known activity. */
  touchDue(record: SessionRecord, now: number): boolean {
    return now - this.lastSeen(record) >= this.life.options.touchIntervalMs
  }

  /**
   * Writes the session with compare-and-set; on conflict reloads, replays this request's changes and
   * retries. Resolves `false` when the session ended meanwhile (nothing written).
   */
  async write(state: SessionState, now: number): Promise<boolean> {
    const deadline = new Deadline(this.life.options.commitTimeoutMs)
    this.catchUp(state)
    for (let attempt = 1; ; attempt++) {
      const record = state.record as SessionRecord
      const next = this.nextVersion(state, record, now)
      if (await this.life.store.update(next, record.version)) {
        this.wrote(state, next)
        return true
      }
      this.life.metrics.conflict()
      if (!(await this.rebase(state, true))) return false
      await deadline.pause(attempt)
      this.life.metrics.retry()
    }
  }

  /**
   * {@link write}, folded with the other plain writes of the session that wait for their turn on the
   * session's queue. A write joins a fold only while that fold is the last task queued on the session:
   * a commit queued after it (a rotation, a touch, an end) runs after it, and so must a write that
   * comes later still. Resolves as {@link write} does, once the fold's write has landed. See the note
   * at the top of this file.
   */
  fold(state: SessionState, now: number): Promise<boolean> {
    const key = (state.record as SessionRecord).key
    const queue = this.life.queue
    return new Promise<boolean>((resolve, reject) => {
      const waiting = this.folds.get(key)
      if (waiting !== undefined && queue.last(key) === waiting.tail) {
        waiting.members.push({ state, resolve, reject })
        return
      }
      const fold: Fold = { members: [{ state, resolve, reject }], tail: undefined }
      this.folds.set(key, fold)
      queue
        .run(key, () => {
          // Its turn: later writes start the next fold.
          if (this.folds.get(key) === fold) this.folds.delete(key)
          return this.writeFold(fold.members, now)
        })
        .catch((error: unknown) => {
          for (const each of fold.members) each.reject(error)
        })
      fold.tail = queue.last(key)
    })
  }

  /** Writes a fold's requests with one compare-and-set, and answers each of them. */
  private async writeFold(fold: Folded[], now: number): Promise<void> {
    if (fold.length === 1) return answer(fold[0] as Folded, () => this.write((fold[0] as Folded).state, now))
    const lead = (fold[0] as Folded).state
    // A state of its own for the fold, so that each request's state is left as it was until it lands.
    const folded: SessionState = { ...lead, data: new Map(lead.data), changes: [...lead.changes] }
    for (const { state } of fold.slice(1)) {
      for (const change of state.changes) {
        applyChange(folded.data, change)
        folded.changes.push(change)
      }
      folded.reseal ||= state.reseal
    }
    let written: boolean
    try {
      written = await this.write(folded, now)
    } catch (error) {
      if (!(error instanceof SessionError && error.code === 'ERR_LATCHKEY_SESSION_TOO_LARGE')) {
        for (const each of fold) each.reject(error)
        return
      }
      // Too large together: one after the other, so that only the request that made it too large fails.
      for (const each of fold) await answer(each, () => this.write(each.state, now))
      return
    }
    for (const { state, resolve } of fold) {
      if (written) {
        // Every request of the fold sees what was written, under the ID the write followed.
        state.data = state === lead ? folded.data : new Map(folded.data)
        state.meta = state === lead ? folded.meta : { ...folded.meta }
        state.userId = folded.userId
        state.id = folded.id
        if (folded.cookie === 'reissue') state.cookie = 'reissue'
        settle(state, folded.record as SessionRecord)
      }
      resolve(written)
    }
  }

  /** {@link write}'s first compare-and-set on a synchronous store; `false` when it conflicted (nothing written). */
  writeSync(state: SessionState, now: number): boolean {
    this.catchUp(state)
    const record = state.record as SessionRecord
    const next = this.nextVersion(state, record, now)
    if (!this.life.store.sync?.updateSync(next, record.version)) {
      this.life.metrics.conflict()
      return false
    }
    this.wrote(state, next)
    return true
  }

  /** A write landed: the state is settled on it, and this process remembers it for the commits queued behind. */
  private wrote(state: SessionState, record: SessionRecord): void {
    settle(state, record)
    keepRecent(this.written, record.key, { record, data: new Map(state.data), meta: { ...state.meta } })
  }

  /**
   * When this process has written the session since the state loaded it, moves the state onto that
   * write, replaying the request's changes on a copy of it (see the note at the top of this file).
   */
  private catchUp(state: SessionState): void {
    const record = state.record as SessionRecord
    const written = this.written.get(record.key)
    if (written === undefined || written.record.version <= record.version) return
    adopt(state, written.record, new Map(written.data), { ...written.meta }, false)
  }

  /** Moves the record's idle deadline (never its payload) to `now` plus the idle timeout. */
  async touch(state: SessionState, now: number): Promise<void> {
    const record = state.record as SessionRecord
    const idleExpiresAt = this.idleExpiry(record, now)
    await this.life.store.touch(record.key, now, idleExpiresAt)
    this.touchedAt(state, record, now, idleExpiresAt)
  }

  /** {@link touch} on a synchronous store. */
  touchSync(state: SessionState, now: number): void {
    const record = state.record as SessionRecord
    const idleExpiresAt = this.idleExpiry(record, now)
    this.life.store.sync?.touchSync(record.key, now, idleExpiresAt)
    this.touchedAt(state, record, now, idleExpiresAt)
  }

  /**
   * Brings the state up to the stored record, replaying this request's changes on it. `false` when
   * the session is gone (destroyed, revoked, expired): the request's changes are dropped.
   */
  async rebase(state: SessionState, force: boolean): Promise<boolean> {
    const record = state.record as SessionRecord
    let fresh = await this.reader.read(state.id)
    // Renewed meanwhile: follow it and hand the browser the new ID. Regenerated meanwhile: follow it,
    // so this request's changes are not lost, but the browser keeps its old ID, which is dead now.
    let hops = 0
    let renewedOnly = true
    let next = fresh === null ? undefined : successorOf(fresh.meta)
    while (fresh !== null && next !== undefined) {
      if (++hops > MAX_HOPS) return false
      renewedOnly &&= kindOf(fresh) === 'forwarder'
      fresh = await this.reader.read(next)
      if (fresh) state.id = next
      next = fresh === null ? undefined : successorOf(fresh.meta)
    }
    if (!fresh) return false
    if (hops > 0 && renewedOnly) state.cookie = 'reissue'
    if (!force && fresh.record.version === record.version && fresh.record.key === record.key) return true
    adopt(state, fresh.record, fresh.data, fresh.meta, fresh.stale)
    return true
  }

  /**
   * The record's last activity as far as this process knows: requests that loaded it before another
   * request of theirs touched it still see the older time, and one touch is enough for all of them.
   */
  private lastSeen(record: SessionRecord): number {
    const touched = this.touched.get(record.key)
    return touched === undefined || touched < record.lastSeenAt ? record.lastSeenAt : touched
  }

  private idleExpiry(record: SessionRecord, now: number): number {
    return Math.min(now + this.life.options.idleTimeoutMs, record.absoluteExpiresAt)
  }

  private touchedAt(state: SessionState, record: SessionRecord, now: number, idleExpiresAt: number): void {
    state.record = { ...record, lastSeenAt: now, idleExpiresAt }
    keepRecent(this.touched, record.key, now)
  }
}

/** Answers one request of a fold with the outcome of `write`. */
async function answer(each: Folded, write: () => Promise<boolean>): Promise<void> {
  try {
    each.resolve(await write())
  } catch (error) {
    each.reject(error)
  }
}

/**
 * Moves the state onto a newer version of its session (`data` and `meta` are the state's from now on):
 * the request's own changes are replayed on it, and a sign-in keeps what it chose.
 */
function adopt(
  state: SessionState,
  record: SessionRecord,
  data: Map<string, unknown>,
  meta: SessionMeta,
  stale: boolean,
): void {
  for (const change of state.changes) applyChange(data, change)
  const login = state.rotation === 'login'
  state.data = data
  state.record = record
  if (!login) state.userId = record.userId
  // A sign-in keeps what it chose: its new CSRF secret, its new lineage, its "remember me".
  const { csrf, lid, p } = state.meta
  state.meta = login ? { ...meta, csrf, lid, p } : meta
  state.reseal ||= stale
}

/** What {@link reseal} did with a record. */
export type ResealOutcome = 'resealed' | 'current' | 'skipped' | 'unopenable' | 'busy'

/**
 * Re-seals one record's payload with the first key of the ring, by compare-and-set from the version
 * listed: the same plaintext, a new version, nothing else changed. On conflict (the application wrote
 * or ended it meanwhile) the record is read again, backing off with jitter, for as long as a commit
 * retries (`commitTimeoutMs`); past that it is left as busy. Ended or vanished records are skipped; a
 * payload no key opens is left as it is. `onConflict` counts the retries.
 */
export async function reseal(
  life: Pick<Lifecycle, 'store' | 'options'>,
  codec: PayloadCodec,
  first: SessionRecord,
  onConflict: () => void,
): Promise<ResealOutcome> {
  const deadline = new Deadline(life.options.commitTimeoutMs)
  let record: SessionRecord | null = first
  for (let attempt = 1; ; attempt++) {
    if (isEnded(record)) return 'skipped'
    const current = record as SessionRecord
    const opened = codec.openText(current)
    if (opened === null) return 'unopenable'
    if (!opened.stale) return 'current'
    const next: SessionRecord = {
      ...current,
      version: current.version + 1,
      payload: codec.keyring.seal(opened.plaintext, current.key),
    }
    if (await life.store.update(next, current.version)) return 'resealed'
    onConflict()
    try {
      await deadline.pause(attempt)
    } catch (error) {
      if (error instanceof ConflictError) return 'busy'
      throw error
    }
    record = await life.store.get(current.key)
  }
}

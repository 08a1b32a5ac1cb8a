/**
 * Reading a session's record by its ID: the live, intact record opened, or nothing. A record past its
 * timeouts (by this manager's options, whatever deadlines it was stored with) is ended on the way,
 * leaving a notice of which timeout it was; a record sealed with a key the ring lacks leaves a notice
 * of that (and stays: a rollback to that key brings it back). See `notice.ts`. The events say the same:
 * `expired` with `idle-timeout` or `absolute-timeout`, `rejected` with `key-retired` (or `tampered`).
 */
import { storeKeyOf } from '../id.js'
import type { Lifecycle } from './context.js'
import type { Ending } from './ending.js'
import { type Notices, timeoutOf } from './notice.js'
import type { OpenedRecord } from './record-state.js'
import { isEnded, isExpired } from './record-state.js'

/** Reads records by session ID for one manager. */
export class Reader {
  constructor(
    private readonly life: Lifecycle,
    private readonly ending: Ending,
    private readonly notices: Notices,
  ) {}

  /** The store key of `id` (remembered for recently used sessions, so the ID is not hashed again). */
  keyOf(id: string): string {
    return this.life.payloads.keyOf(id) ?? storeKeyOf(id)
  }

  /** The record of `id`, opened (it may be a pointer); `null` when missing, ended, expired or tampered with. */
  async read(id: string): Promise<OpenedRecord | null> {
    const { store, options, payloads } = this.life
    const key = this.keyOf(id)
    const record = await store.get(key)
    if (record === null || isEnded(record)) {
      this.life.emit('rejected', key, null, 'unknown')
      return null
    }
    if (isExpired(record, options.clock.now(), options)) {
      // timeoutOf answers one of these two (typed as any EndReason): narrowed for the event's fixed set.
      const reason =
        timeoutOf(record, options.clock.now(), options) === 'absolute-timeout'
          ? 'absolute-timeout'
          : 'idle-timeout'
      await this.ending.end(record, { follow: false, live: false, reason })
      this.life.emit('expired', key, record.userId, reason)
      return null
    }
    const opened = payloads.open(record, id)
    if (!opened) {
      // Sealed with a key the ring lacks (retired by a rekey): not a forgery, and its holder is told.
      const retired = this.notices.keyRetired(record)
      this.life.emit('rejected', key, record.userId, retired ? 'key-retired' : 'tampered')
      if (retired) await this.notices.leave(record, 'key-retired')
    }
    return opened
  }
}

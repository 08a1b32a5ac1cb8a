/**
 * Ending and retiring, as the rule at the top of `manager.ts` says.
 *
 * An **end** (logout, revoke, expiry, the old record of a login) writes the ended payload by
 * compare-and-set, the user cleared so the record leaves the user index, then the store's tombstone.
 * A **retirement** (the old record of a `regenerate`) writes a pointer to the successor instead, and
 * leaves no tombstone: the pointer lives to its own deadline, so requests in flight can follow it.
 *
 * When the compare-and-set fails, the record is read again: a newer live version is ended (or retired)
 * in its turn, after a rotation has replayed its own changes from it into its new record; a pointer is
 * followed to its successor, which is ended in its turn; an ended record means someone else got there
 * first. When the trail runs out (a forwarder's window closed), a logout of a signed-in session and
 * the revocations find the lineage's remaining records through the user index, and list again until
 * none is left.
 *
 * An end the user did not ask for (a revocation, an expiry) names its reason, and leaves a notice of it
 * for the holder of the ended record's cookie (`notice.ts`); a logout names none and leaves none, and
 * it, like a retirement, discards the pending notice a signed-in session carries against a timeout.
 */
import { ConfigError } from '../errors.js'
import { storeKeyOf } from '../id.js'
import type { SessionMeta } from '../session.js'
import type { SessionRecord } from '../store.js'
import type { Lifecycle } from './context.js'
import type { EndReason, Notices } from './notice.js'
import { Deadline } from './queue.js'
import type { OpenedRecord } from './record-state.js'
import { endedRecord, isEnded, kindOf, retiredRecord, successorOf } from './record-state.js'

/** Pointers (forwarders, retired records) a request follows from the ID it loaded before giving up. */
export const MAX_HOPS = 8

/** Where a rotation moved its session: the new ID and the lineage it keeps. */
export interface Successor {
  readonly successorId: string
  readonly lineage: string
}

/**
 * A rotation's hook into the end or retirement of its old record: called with each newer live version
 * found before it is ended, to replay into the new record; resolving `false` abandons the end (the new
 * record was revoked meanwhile). Pointers passed on the way are left to expire, so requests in flight
 * can still follow them.
 */
export type Replay = (fresh: OpenedRecord) => Promise<boolean>

/** How {@link Ending.end} proceeds when the record it ends has moved on. */
export interface EndOptions {
  /** Follow a forwarder to its successor and end that too (logout, revoke, rotation); not for expiry. */
  readonly follow: boolean
  /** The record is known not to be a pointer (it was loaded as a live session). */
  readonly live: boolean
  /** A rotation's replay of newer versions into its new record (see {@link Replay}). */
  readonly replay?: Replay | undefined
  /**
   * The signed-in session's user and lineage (logout): when the trail of records ends before a live
   * one (a `regenerate` retired it, or a forwarder's grace window passed), the session's other records
   * are found through the user index.
   */
  readonly lineage?: { readonly userId: string; readonly lid: string } | undefined
  /** Why the session ends, when its user did not ask: a notice is left for its cookie's holder. */
  readonly reason?: EndReason | undefined
}

/** What closing a record writes over it: the ended payload (and then a tombstone), or a retired pointer. */
interface Closing {
  readonly build: (current: SessionRecord) => SessionRecord
  readonly tombstone: boolean
}

const ENDING: Closing = Object.freeze({ build: endedRecord, tombstone: true })

/** A record of a user's, opened: live sessions and forwarders (retired records are out of the index). */
export interface UserRecord {
  readonly record: SessionRecord
  readonly meta: SessionMeta
}

/** Ends and retires sessions for one manager. */
export class Ending {
  constructor(
    private readonly life: Lifecycle,
    private readonly notices: Notices,
  ) {}

  /**
   * Ends the session held by `record` (as last seen). Resolves whether this call ended a live session;
   * `false` when it was already ended.
   */
  end(record: SessionRecord, options: EndOptions): Promise<boolean> {
    return this.close(record, ENDING, options)
  }

  /**
   * Retires the old record of a `regenerate`: it points to `to` and opens nothing itself, until its own
   * deadline. Resolves `false` when the session had ended, or `replay` abandoned the retirement.
   */
  retire(record: SessionRecord, to: Successor, replay: Replay): Promise<boolean> {
    const build = (current: SessionRecord) =>
      retiredRecord(current, to, (meta, key) => this.life.payloads.sealPointer(meta, key))
    return this.close(record, { build, tombstone: false }, { follow: true, live: true, replay })
  }

  /**
   * Ends a record as listed from the store, without opening it (an end needs no key): used where no
   * request loaded it (the CLI). Pointers are not followed: their successors are listed too.
   */
  endListed(record: SessionRecord): Promise<boolean> {
    return this.end(record, { follow: false, live: true })
  }

  /**
   * Ends every session of `userId` whose lineage `select` picks, and resolves the lineages it ended.
   * It lists again until no such record is left: a rotation in flight may have created one meanwhile.
   * With `unopenable`, the user's records that no key of the ring opens are ended too (an end needs no
   * key; their lineage is unknown, so only a revocation of every session asks for them), and counted.
   * With `reason`, each record ended leaves a notice of it.
   */
  async endUserSessions(
    userId: string,
    select: (lineage: string) => boolean,
    unopenable?: { count: number },
    reason?: EndReason,
  ): Promise<Set<string>> {
    const ended = new Set<string>()
    for (let round = 0; round < MAX_HOPS; round++) {
      const records = await this.userRecords(userId)
      const targets = records.filter(({ meta }) =>
        meta === null ? unopenable !== undefined : select(meta.lid),
      )
      if (targets.length === 0) break
      for (const { record, meta } of targets) {
        if (meta === null) {
          if (await this.end(record, { follow: false, live: true, reason }))
            (unopenable as { count: number }).count++
        } else if (await this.end(record, { follow: true, live: kindOf({ meta }) === 'live', reason })) {
          ended.add(meta.lid)
        }
      }
    }
    return ended
  }

  /** The records of `userId` that open (live sessions and forwarders), with their metadata. */
  async userSessions(userId: string): Promise<UserRecord[]> {
    return (await this.userRecords(userId)).filter((entry): entry is UserRecord => entry.meta !== null)
  }

  /** Every record in the user index of `userId`, with its metadata, or `null` when no key of the ring opens it. */
  private async userRecords(userId: string): Promise<{ record: SessionRecord; meta: SessionMeta | null }[]> {
    if (!this.life.store.indexed) throw new ConfigError('store', 'this store cannot list sessions by user')
    const out: { record: SessionRecord; meta: SessionMeta | null }[] = []
    for (const record of await this.life.store.listByUser(userId)) {
      if (record.userId !== userId || isEnded(record)) continue
      out.push({ record, meta: this.life.payloads.open(record, null)?.meta ?? null })
    }
    return out
  }

  private async close(record: SessionRecord, closing: Closing, options: EndOptions): Promise<boolean> {
    const { store, payloads } = this.life
    const deadline = new Deadline(this.life.options.commitTimeoutMs)
    const forwarders: string[] = []
    let current: SessionRecord | null = record
    let live = options.live
    try {
      for (let attempt = 1; current !== null && !isEnded(current); attempt++) {
        const opened: OpenedRecord | null = live ? null : payloads.open(current, null)
        const next: string | undefined = opened === null ? undefined : successorOf(opened.meta)
        if (next !== undefined) {
          // A pointer: the session lives on under the successor; the pointer goes once that has ended.
          forwarders.push(current.key)
          current = options.follow ? await store.get(storeKeyOf(next)) : null
        } else {
          if (await store.update(closing.build(current), current.version)) {
            // The notice settles before the tombstone: until then the record reads as ended, not
            // missing, so no load tells the session's pending notice (a timeout) meanwhile.
            if (closing.tombstone && options.reason !== undefined)
              await this.notices.leave(current, options.reason)
            else await this.notices.discard(current)
            if (closing.tombstone) await store.destroy(current.key)
            return true
          }
          // It moved: written, renewed or ended by another request. Look again.
          current = await store.get(current.key)
          if (attempt > 1) await deadline.pause(attempt)
        }
        live = false
        if (options.replay && current !== null && !isEnded(current)) {
          const fresh = payloads.open(current, null)
          if (kindOf(fresh) === 'live') {
            if (!(await options.replay(fresh as OpenedRecord))) return false
            live = true
          }
        }
      }
      // The trail ended before a live record: someone else ended the session, or retired this ID.
      const lineage = options.lineage
      return lineage !== undefined && store.indexed
        ? (await this.endUserSessions(lineage.userId, (lid) => lid === lineage.lid)).size > 0
        : false
    } finally {
      // A pointer never turns live again, so destroying it needs no compare-and-set.
      if (!options.replay) for (const key of forwarders) await store.destroy(key)
    }
  }
}

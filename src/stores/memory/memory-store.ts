import { type Clock, systemClock } from '../../core/clock.js'
import { ConfigError, toStoreError } from '../../core/errors.js'
import { ENDED_PAYLOAD } from '../../core/lifecycle/record-state.js'
import { expiresAt, type SessionRecord, type StoreOptions, type SyncSessionStore } from '../../core/store.js'
import { type BundledStore, copyRecord, storeOperation, validateClock, validateDelay } from '../shared.js'
import { refuseUnknownStoreOptions } from '../store-options.js'

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions extends StoreOptions {
  /** Most records (tombstones included) kept at once; a create past it evicts. Default 100 000. */
  maxSessions?: number
  /** How often expired records and tombstones are swept, in ms; `0` turns the timer off. Default 60 000. */
  sweepIntervalMs?: number
}

/**
 * What the map holds under a key. Updated in place when the key's record is replaced (one object per
 * key, not one per write); the record itself is never changed, only swapped.
 */
interface Entry {
  /** Frozen; for a tombstone, a copy with the ended payload and no user (so it leaves the user index). */
  record: SessionRecord
  tombstone: boolean
  expiresAt: number
  /**
   * The expiry of this entry's slot in the heap: never later than `expiresAt`. A write that moves the
   * deadline later (every write and touch moves the idle one) keeps the slot; when it comes up, the
   * entry is put back at its real deadline instead of being removed. So a write pushes nothing.
   */
  slotAt: number
}

/**
 * A slot in the expiry heap. Stale once the entry under `key` tracks another slot (moved earlier,
 * replaced, gone); a slot earlier than its entry's deadline puts the entry back when it comes up.
 */
interface Deadline {
  readonly key: string
  readonly expiresAt: number
}

/** Records one step of `prune()` removes before letting the event loop run (a few ms of work). */
const PRUNE_BATCH = 5_000

/** The store's name in its errors. */
const STORE = 'MemoryStore'

let warnedInProduction = false

/**
 * Sessions in a `Map` of this process: for development, tests and single-process apps that accept
 * losing every session on restart. Records are kept as frozen copies, so neither the caller nor the
 * store's own consumers can change stored state by mutating an object.
 *
 * Memory is bounded by `maxSessions`: when full, a create first drops what has expired and then
 * evicts the record closest to its expiry (signing that session out). An unref'd timer sweeps
 * expired records and tombstones every `sweepIntervalMs`; `close()` stops it.
 */
export class MemoryStore implements BundledStore, SyncSessionStore {
  private readonly clock: Clock
  private readonly maxSessions: number
  private readonly records = new Map<string, Entry>()
  private readonly byUser = new Map<string, Set<string>>()
  /** Min-heap on `expiresAt`; may hold stale slots, skipped when popped and dropped on compaction. */
  private deadlines: Deadline[] = []
  private timer: NodeJS.Timeout | undefined
  private closed = false

  constructor(options: MemoryStoreOptions = {}) {
    refuseUnknownStoreOptions('MemoryStore', options ?? {})
    const { clock = systemClock, maxSessions = 100_000, sweepIntervalMs = 60_000 } = options
    this.clock = validateClock(clock)
    if (!Number.isSafeInteger(maxSessions) || maxSessions < 1) {
      throw new ConfigError('maxSessions', `must be a positive integer, got ${String(maxSessions)}`)
    }
    validateDelay(sweepIntervalMs, 'sweepIntervalMs', 0, true)
    this.maxSessions = maxSessions
    if (sweepIntervalMs > 0) {
      this.timer = setInterval(() => this.removeExpired(this.clock.now()), sweepIntervalMs)
      this.timer.unref()
    }
    if (process.env.NODE_ENV === 'production' && !warnedInProduction) {
      warnedInProduction = true
      console.warn(
        'latchkey: MemoryStore keeps sessions in this process only; they are lost on restart and not ' +
          'shared between processes. Use SqliteStore or a shared store in production.',
      )
    }
  }

  // The promise face is the synchronous one, settled: the store answers at once either way.
  async get(key: string): Promise<SessionRecord | null> {
    return this.getSync(key)
  }

  async create(record: SessionRecord): Promise<boolean> {
    return this.createSync(record)
  }

  async update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    return this.updateSync(record, expectedVersion)
  }

  async touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    this.touchSync(key, lastSeenAt, idleExpiresAt)
  }

  // The *Sync methods run on every request: each is `guard` written out (closed check, any failure as
  // a StoreError) so that no closure is built per call.

  getSync(key: string): SessionRecord | null {
    try {
      this.ensureOpen()
      return this.live(key)?.record ?? null
    } catch (error) {
      throw toStoreError(STORE, 'get', error)
    }
  }

  createSync(record: SessionRecord): boolean {
    try {
      this.ensureOpen()
      const now = this.clock.now()
      const existing = this.records.get(record.key)
      if (existing && existing.expiresAt > now) return false
      if (!existing && this.records.size >= this.maxSessions) this.makeRoom(now)
      this.put(Object.freeze(copyRecord(record)), false)
      return true
    } catch (error) {
      throw toStoreError(STORE, 'create', error)
    }
  }

  updateSync(record: SessionRecord, expectedVersion: number): boolean {
    try {
      this.ensureOpen()
      const current = this.live(record.key)
      if (!current || current.record.version !== expectedVersion) return false
      this.put(Object.freeze(copyRecord(record)), false)
      return true
    } catch (error) {
      throw toStoreError(STORE, 'update', error)
    }
  }

  touchSync(key: string, lastSeenAt: number, idleExpiresAt: number): void {
    try {
      this.ensureOpen()
      const current = this.live(key)
      if (current) this.put(Object.freeze({ ...current.record, lastSeenAt, idleExpiresAt }), false)
    } catch (error) {
      throw toStoreError(STORE, 'touch', error)
    }
  }

  async destroy(key: string): Promise<void> {
    this.guard('destroy', () => this.tombstone(key))
  }

  async listByUser(userId: string): Promise<SessionRecord[]> {
    return this.guard('listByUser', () => {
      const out: SessionRecord[] = []
      for (const key of this.byUser.get(userId) ?? []) {
        const entry = this.live(key)
        if (entry) out.push(entry.record)
      }
      return out
    })
  }

  /** Removes what expired, {@link PRUNE_BATCH} records at a time with the event loop free in between. */
  async prune(): Promise<number> {
    this.guard('prune', () => {})
    const now = this.clock.now()
    let total = 0
    for (;;) {
      const removed = this.removeExpired(now, PRUNE_BATCH)
      total += removed
      if (removed < PRUNE_BATCH || this.closed) return total
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
  }

  async count(): Promise<number> {
    return this.guard('count', () => {
      const now = this.clock.now()
      let count = 0
      for (const entry of this.records.values()) if (!entry.tombstone && entry.expiresAt > now) count++
      return count
    })
  }

  async *list(): AsyncIterable<SessionRecord> {
    this.guard('list', () => {})
    for (const entry of this.records.values()) {
      if (!entry.tombstone && entry.expiresAt > this.clock.now()) yield entry.record
    }
  }

  /** Stops the sweep timer and drops every record. Later calls reject with `StoreError`. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    this.timer = undefined
    this.records.clear()
    this.byUser.clear()
    this.deadlines = []
  }

  /** Runs `operation` unless the store is closed (then it throws `StoreError`, as any failure would). */
  private guard<T>(operation: string, call: () => T): T {
    return storeOperation(STORE, operation, this.closed, call)
  }

  /** Throws what `storeOperation` throws inside its guard for a closed store. */
  private ensureOpen(): void {
    if (this.closed) throw new Error('the store is closed')
  }

  /** The live, non-tombstoned entry under `key`. */
  private live(key: string): Entry | undefined {
    const entry = this.records.get(key)
    return entry && !entry.tombstone && entry.expiresAt > this.clock.now() ? entry : undefined
  }

  /** Turns the live record under `key` into a tombstone with the same expiry; true if there was one. */
  private tombstone(key: string): boolean {
    const current = this.live(key)
    if (!current) return false
    this.put(Object.freeze({ ...current.record, userId: null, payload: ENDED_PAYLOAD }), true)
    return true
  }

  /** Stores `record` (already frozen) in place of whatever the key held, keeping both indexes in step. */
  private put(record: SessionRecord, tombstone: boolean): void {
    const { key, userId } = record
    const deadline = expiresAt(record)
    const previous = this.records.get(key)
    const previousUserId = previous?.record.userId ?? null
    if (previous === undefined) {
      this.records.set(key, { record, tombstone, expiresAt: deadline, slotAt: deadline })
      this.pushDeadline({ key, expiresAt: deadline })
    } else {
      previous.record = record
      previous.tombstone = tombstone
      previous.expiresAt = deadline
      // A slot no later than the new deadline still does (see Entry.slotAt); an earlier deadline needs its own.
      if (deadline < previous.slotAt) {
        previous.slotAt = deadline
        this.pushDeadline({ key, expiresAt: deadline })
      }
    }
    if (previousUserId !== userId) {
      if (previousUserId !== null) this.unindex(key, previousUserId)
      if (userId !== null) {
        const keys = this.byUser.get(userId)
        if (keys) keys.add(key)
        else this.byUser.set(userId, new Set([key]))
      }
    }
  }

  private remove(entry: Entry): void {
    this.records.delete(entry.record.key)
    if (entry.record.userId !== null) this.unindex(entry.record.key, entry.record.userId)
  }

  private unindex(key: string, userId: string): void {
    const keys = this.byUser.get(userId)
    keys?.delete(key)
    if (keys?.size === 0) this.byUser.delete(userId)
  }

  /** Removes every record and tombstone whose expiry has passed; returns how many. */
  private removeExpired(now: number, most = Number.POSITIVE_INFINITY): number {
    let removed = 0
    for (
      let top = this.deadlines[0];
      top && top.expiresAt <= now && removed < most;
      top = this.deadlines[0]
    ) {
      this.popDeadline()
      const entry = this.records.get(top.key)
      if (entry === undefined || entry.slotAt !== top.expiresAt) continue
      if (entry.expiresAt <= now) {
        this.remove(entry)
        removed++
      } else {
        // Written since the slot was made: back in at its real deadline, which is later than now.
        this.requeue(top.key, entry)
      }
    }
    return removed
  }

  /** Gives `entry` a slot at its own deadline (its earlier slot was just popped). */
  private requeue(key: string, entry: Entry): void {
    entry.slotAt = entry.expiresAt
    this.pushDeadline({ key, expiresAt: entry.expiresAt })
  }

  /** Frees one slot: what has expired first, else the record closest to its expiry. */
  private makeRoom(now: number): void {
    if (this.removeExpired(now) > 0) return
    for (let top = this.popDeadline(); top; top = this.popDeadline()) {
      const entry = this.records.get(top.key)
      if (entry === undefined || entry.slotAt !== top.expiresAt) continue
      // A slot at the entry's own deadline: no entry expires sooner (every slot is at or before its
      // entry's deadline, and this one came up first). An earlier slot only puts the entry back.
      if (entry.expiresAt === top.expiresAt) {
        this.remove(entry)
        return
      }
      this.requeue(top.key, entry)
    }
  }

  private pushDeadline(deadline: Deadline): void {
    const heap = this.deadlines
    // Slots of removed entries, and of deadlines moved earlier, stay behind; rebuild from the live
    // map before they dominate.
    if (heap.length >= 2 * this.records.size + 1024) {
      this.deadlines = []
      for (const [key, entry] of this.records) {
        entry.slotAt = entry.expiresAt
        this.deadlines.push({ key, expiresAt: entry.expiresAt })
      }
      for (let i = (this.deadlines.length >> 1) - 1; i >= 0; i--) siftDown(this.deadlines, i)
      // The map already holds the entry `deadline` describes, so the rebuild included it.
      return
    }
    heap.push(deadline)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      const up = heap[parent] as Deadline
      if (up.expiresAt <= deadline.expiresAt) break
      heap[i] = up
      i = parent
    }
    heap[i] = deadline
  }

  private popDeadline(): Deadline | undefined {
    const heap = this.deadlines
    const top = heap[0]
    const last = heap.pop()
    if (heap.length > 0 && last) {
      heap[0] = last
      siftDown(heap, 0)
    }
    return top
  }
}

function siftDown(heap: Deadline[], start: number): void {
  const item = heap[start] as Deadline
  let i = start
  for (;;) {
    let child = 2 * i + 1
    if (child >= heap.length) break
    const right = heap[child + 1]
    if (right && right.expiresAt < (heap[child] as Deadline).expiresAt) child++
    const smaller = heap[child] as Deadline
    if (smaller.expiresAt >= item.expiresAt) break
    heap[i] = smaller
    i = child
  }
  heap[i] = item
}

import { createHash, randomBytes } from 'node:crypto'
import { type Stats, statSync } from 'node:fs'
import { type FileHandle, link, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { type Clock, systemClock } from '../../core/clock.js'
import { ConfigError } from '../../core/errors.js'
import { KeyedQueue } from '../../core/lifecycle/queue.js'
import { ENDED_PAYLOAD } from '../../core/lifecycle/record-state.js'
import { expiresAt, isStoreKey, type SessionRecord, type StoreOptions } from '../../core/store.js'
import { schedulePrune, validatePruneInterval } from '../prune-timer.js'
import { missingSchema } from '../refusal.js'
import {
  type BundledStore,
  copyRecord,
  storeOperation,
  validateClock,
  validateDelay,
  type WarningHook,
  warningHook,
} from '../shared.js'
import { refuseUnknownStoreOptions } from '../store-options.js'
import { FolderSyncs } from './folder-sync.js'
import { type HeldLock, LOCK_SUFFIX, type LockPolicy, removeIfEmpty, takeLock } from './lock.js'
import { distrust, makeFolder } from './ownership.js'

/** Options of {@link FileStore}. */
export interface FileStoreOptions extends StoreOptions {
  /**
   * The session folder. Created with mode 0700 on first use when missing; its parent must exist (the
   * store never creates anything above it). Resolved against the working directory at construction.
   * One that exists must belong to this process's user and be writable by nobody else (`ConfigError`).
   */
  directory: string
  /**
   * How often expired records, expired tombstones and leftovers of crashed processes are removed, in
   * ms, give or take a quarter; `0` turns the timer off (call `prune()` yourself). Default 600 000 (10 min).
   */
  pruneIntervalMs?: number
  /**
   * A per-key lock a waiting process has seen held by the same owner for this long, in ms, is taken to
   * be abandoned and broken; a request gives up waiting (`StoreError`) after twice this. A lock left by
   * a dead process of this machine is broken at once. Default 10 000.
   */
  lockStaleMs?: number
  /**
   * Receives what goes wrong without failing a request: an unreadable session file (torn, empty or
   * foreign, reported once per file), a lock broken, a scheduled prune that failed. Default: one line
   * on `console.warn`. What it throws is ignored.
   */
  onWarning?: WarningHook
  /**
   * Whether a missing session folder is created on first use. Default `true`. With `false` the store
   * never creates it: every operation then fails with a `StoreError` whose cause has the code
   * `ERR_LATCHKEY_NO_SCHEMA` ("no such folder"), so that a tool that only reads never turns a
   * mistyped path into an empty store.
   */
  createDirectory?: boolean
  /**
   * What a write that resolved survives. `'power-loss'` (the default): the temp file is `fdatasync`ed
   * before the rename and the folder `fsync`ed after it, so the write survives a power loss or a kernel
   * crash. `'process'`: no sync at all; the write survives the process crashing or being killed (the
   * rename of a complete temp file is done when it resolves), but a power loss may undo the writes of
   * the last seconds (a file then reads as its previous version, or, on some file systems, as empty, which
   * reads as missing: such a session is signed out). A logout undone that way lets its cookie in again.
   */
  durability?: 'power-loss' | 'process'
}

/**
 * A key's lock as a write holds it, and the folder syncs its changes wait for: the lock is released as
 * soon as the file is in place, and the write resolves once those syncs are done (see `folder-sync.ts`).
 */
interface Held {
  readonly lock: HeldLock
  readonly syncs: Promise<void>[]
}

/** A temp file written before the lock ({@link FileStore.staged}): `taken` once a write owns it (renames or removes it). */
interface Staged {
  readonly temp: Promise<string>
  taken: boolean
}

/** What a session file holds, as read back. */
interface Stored {
  readonly record: SessionRecord
  readonly tombstone: boolean
  readonly expiresAt: number
}

/** A read that may keep its file open: see `readPinned` and `reread`. */
interface Pinned {
  readonly read: Read
  readonly pin?: { readonly handle: FileHandle; readonly dev: bigint; readonly ino: bigint }
}

/** Closes the file a pinned read kept open. */
async function unpin(pinned: Pinned): Promise<void> {
  await pinned.pin?.handle.close().catch(() => {})
}

/** A session file that exists but cannot be a record of ours (torn, empty, foreign). */
const UNREADABLE = Symbol('unreadable')
type Read = Stored | null | typeof UNREADABLE

const NAME = 'FileStore'
/** One character of base64url: the name of a shard directory. */
const SHARD = /^[A-Za-z0-9_-]$/
/**
 * A temp file, a lock being built or a foreign lock moved aside: `<key>.<token>.tmp`,
 * `<key>.lock.<token>.new`, `<key>.lock.<token>.stale`.
 */
const LEFTOVER = /^[A-Za-z0-9_-]{43}(\.lock)?\.[A-Za-z0-9_-]{22}\.(tmp|new|stale)$/
/** The `latchkey` field of every session file: the format version. */
const FORMAT = 1
const SESSIONS = 'sessions'
const USERS = 'users'
/** Files handled at once by prune, count, list and the user index; the event loop gets a turn between batches. */
const BATCH = 64
/** A temp file or half-built lock older than this (wall clock, ms) was left by a crashed process. */
const LEFTOVER_AGE_MS = 3_600_000
/** The first read of a session file, in bytes: a record with a payload under about 7 KiB is read in one. */
const READ_SIZE = 8192
/** Unreadable files remembered as already reported; past this the memory starts over. */
const MAX_REPORTED = 1000

/**
 * Sessions as files in a folder, one per session, shared by every process that opens the same
 * folder (several app servers on one machine): the PHP way, with no server to run.
 *
 * Layout: `sessions/<c1>/<c2>/<key>`, where `c1` and `c2` are the key's first two characters (4 096
 * leaf folders, about 250 files each at a million sessions), and `users/<h1>/<h2>/<h>/<key>`, an empty
 * marker file per signed-in session, where `h` is the SHA-256 of the user ID (base64url). Folders are
 * 0700 and files 0600. A session file is one JSON object; it is written to a temp file in its own
 * folder, fsynced, renamed over the old one (or, for a key that has none, hard-linked to its name) and
 * the folder fsynced, so a reader sees the old file or the new one, never a torn one, and a write that
 * resolved survives a crash (with `durability: 'process'`, no sync: it survives the process crashing,
 * not a power loss). The folder syncs are grouped (`folder-sync.ts`): a write resolves after a sync of
 * its folder that began after its rename, and one such sync serves every write renamed meanwhile.
 *
 * A create of a key that has no file claims the name with `link(2)`, which fails when any file holds
 * it, so of racing creates exactly one wins without a lock (`claim`). Every other write (a create that
 * finds a file, update, touch, destroy, and a prune's removal) decides on the file as it is under the
 * key's lock, which holds across processes: see `lock.ts`. An update or touch reads the file
 * before the lock (to refuse a stale version without it) and keeps it open; under the lock one `stat`
 * shows whether the key's file is still that one, else it is read again (`reread`). Reads take no lock. A key that is not 43
 * characters of base64url is never turned into a path: it reads as missing, and writes to it resolve
 * `false` (create, update) or do nothing (touch, destroy).
 */
export class FileStore implements BundledStore {
  /** The session folder, absolute. */
  readonly directory: string
  private readonly createDirectory: boolean
  /** True when writes are synced to the disk (`durability: 'power-loss'`). */
  private readonly sync: boolean
  private readonly clock: Clock
  private readonly warn: (warning: Error | string) => void
  private readonly lockPolicy: LockPolicy
  private readonly stopPruning: () => void
  /** Paths of unreadable files already reported. */
  private readonly reported = new Set<string>()
  /** Per key, this process's queue of writers (the lock file then only sees one of them). */
  private readonly queue = new KeyedQueue()
  /** The folder syncs of `durability: 'power-loss'`, one per folder serving every change made before it began. */
  private readonly syncs = new FolderSyncs()
  private readonly inFlight = new Set<Promise<unknown>>()
  private closed = false

  constructor(options: FileStoreOptions) {
    refuseUnknownStoreOptions('FileStore', options ?? {})
    const {
      directory,
      clock = systemClock,
      pruneIntervalMs = 600_000,
      lockStaleMs = 10_000,
      onWarning,
      createDirectory = true,
      durability = 'power-loss',
    } = options ?? {}
    if (durability !== 'power-loss' && durability !== 'process') {
      throw new ConfigError(
        'durability',
        `must be 'power-loss' or 'process', got ${JSON.stringify(durability)}`,
      )
    }
    this.sync = durability === 'power-loss'
    if (typeof createDirectory !== 'boolean') {
      throw new ConfigError('createDirectory', `must be true or false, got ${String(createDirectory)}`)
    }
    this.createDirectory = createDirectory
    if (typeof directory !== 'string' || directory === '' || directory.includes('\0')) {
      throw new ConfigError('directory', `must be a folder path, got ${JSON.stringify(directory)}`)
    }
    this.clock = validateClock(clock)
    validateDelay(lockStaleMs, 'lockStaleMs', 1)
    this.warn = warningHook(onWarning)
    const interval = validatePruneInterval(pruneIntervalMs)
    this.directory = resolve(directory)
    refuseUntrustedFolders(this.directory)
    this.lockPolicy = { staleMs: lockStaleMs, onBreak: (message) => this.warn(message) }
    this.stopPruning = schedulePrune(
      () => this.prune(),
      interval,
      (error) => this.warn(new Error(`scheduled prune failed: ${messageOf(error)}`, { cause: error })),
    )
  }

  get(key: string): Promise<SessionRecord | null> {
    return this.run('get', async () => (isStoreKey(key) ? this.live(await this.read(key)) : null))
  }

  create(record: SessionRecord): Promise<boolean> {
    const copy = copyRecord(record)
    return this.run('create', async () => {
      if (!isStoreKey(copy.key)) return false
      // The marker first, so that the index never misses a live record (a losing create drops it).
      if (copy.userId !== null) await this.addMarker(copy.userId, copy.key)
      // A key is new but for a collision of random IDs: its name is claimed without the lock (a hard
      // link, which fails when any file holds the name). Only a key that has a file takes the lock.
      const syncs: Promise<void>[] = []
      if (await this.claim(copy, syncs)) {
        await Promise.all(syncs)
        return true
      }
      const created = await this.locked(copy.key, async (held) => {
        const current = await this.read(copy.key)
        if (this.holds(current)) return false
        // No file: claimed as above (a create elsewhere may have claimed it meanwhile, without the lock).
        if (current === null) return this.claim(copy, held.syncs)
        // A dead record or an unreadable file, which no claim can replace: replaced under the lock.
        await this.write(copy, false, held)
        const previousUser = current !== UNREADABLE ? current.record.userId : null
        if (previousUser !== null && previousUser !== copy.userId)
          await this.removeMarker(previousUser, copy.key)
        return true
      })
      if (!created && copy.userId !== null) await this.dropStaleMarker(copy.userId, copy.key)
      return created
    })
  }

  update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    const copy = copyRecord(record)
    return this.run('update', async () => {
      if (!isStoreKey(copy.key)) return false
      const pinned = await this.readPinned(copy.key)
      try {
        if (this.live(pinned.read)?.version !== expectedVersion) return false
        // The new file is written (and synced) while the lock is taken; it is renamed into place only
        // under the lock, if the file is still the one expected, and removed otherwise.
        const staged = this.staged(copy)
        try {
          return await this.locked(copy.key, (held) =>
            this.commitUpdate(copy, expectedVersion, pinned, held, staged),
          )
        } finally {
          if (!staged.taken) await staged.temp.then((temp) => unlink(temp)).catch(() => {})
        }
      } finally {
        await unpin(pinned)
      }
    })
  }

  private async commitUpdate(
    copy: SessionRecord,
    expectedVersion: number,
    pinned: Pinned,
    held: Held,
    staged: Staged,
  ): Promise<boolean> {
    const current = this.live(await this.reread(copy.key, pinned))
    if (current?.version !== expectedVersion) return false
    if (copy.userId !== null && copy.userId !== current.userId) await this.addMarker(copy.userId, copy.key)
    await this.write(copy, false, held, staged)
    if (current.userId !== null && current.userId !== copy.userId) {
      await this.removeMarker(current.userId, copy.key)
    }
    return true
  }

  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    return this.run('touch', async () => {
      if (!isStoreKey(key)) return
      const pinned = await this.readPinned(key)
      try {
        if (!this.live(pinned.read)) return
        await this.locked(key, async (held) => {
          const current = this.live(await this.reread(key, pinned))
          if (current) await this.write(copyRecord({ ...current, lastSeenAt, idleExpiresAt }), false, held)
        })
      } finally {
        await unpin(pinned)
      }
    })
  }

  destroy(key: string): Promise<void> {
    return this.run('destroy', async () => {
      if (!isStoreKey(key) || !this.live(await this.read(key))) return
      await this.locked(key, (held) => this.tombstone(key, held))
    })
  }

  /**
   * Reads the user's markers and the records they name. A marker whose record is gone, expired,
   * destroyed or now another user's is skipped, and removed under the key's lock.
   */
  listByUser(userId: string): Promise<SessionRecord[]> {
    return this.run('listByUser', async () => {
      const out: SessionRecord[] = []
      const stale: string[] = []
      for (const keys of batches(await this.markers(userId))) {
        const records = await Promise.all(keys.map(async (key) => this.live(await this.read(key))))
        records.forEach((record, i) => {
          if (record?.userId === userId) out.push(record)
          else stale.push(keys[i] as string)
        })
      }
      for (const key of stale) await this.dropStaleMarker(userId, key)
      return out
    })
  }

  /**
   * Removes expired records and tombstones (with their user markers), unreadable session files, and
   * temp files and half-built locks older than an hour. Walks the folder a batch of files at a time,
   * yielding to the event loop between batches; a key whose lock is held is left for the next prune.
   */
  prune(): Promise<number> {
    return this.run('prune', async () => {
      let removed = 0
      for await (const [dir, names] of this.walk()) {
        const results = await Promise.all(names.map((name) => this.pruneEntry(dir, name)))
        removed += results.filter(Boolean).length
      }
      return removed
    })
  }

  count(): Promise<number> {
    return this.run('count', async () => {
      let count = 0
      for await (const [, names] of this.walk()) {
        const records = await Promise.all(
          names.filter(isStoreKey).map(async (key) => this.live(await this.read(key))),
        )
        count += records.filter(Boolean).length
      }
      return count
    })
  }

  /** Every live record, a folder at a time, in no particular order. Writes meanwhile are fine. */
  async *list(): AsyncIterable<SessionRecord> {
    const pages = this.walk()
    for (;;) {
      // Each page is one operation: a closed store or a failing read rejects as a StoreError.
      const page = await this.run('list', async () => {
        const next = await pages.next()
        if (next.done) return undefined
        return Promise.all(
          next.value[1].filter(isStoreKey).map(async (key) => this.live(await this.read(key))),
        )
      })
      if (page === undefined) return
      for (const record of page) if (record) yield record
    }
  }

  /** Stops the prune timer and waits for operations in flight. Later calls reject with `StoreError`. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    this.stopPruning()
    await Promise.all(this.inFlight)
  }

  /** Runs one operation: rejects at once when closed, turns every failure into a `StoreError`. */
  private run<T>(operation: string, body: () => Promise<T>): Promise<T> {
    let pending: Promise<T>
    try {
      pending = storeOperation(NAME, operation, this.closed, body)
    } catch (error) {
      return Promise.reject(error)
    }
    const settled = pending.then(
      () => {},
      () => {},
    )
    this.inFlight.add(settled)
    settled.then(() => this.inFlight.delete(settled))
    return pending
  }

  /** The record if it is live and not a tombstone. */
  private live(read: Read): SessionRecord | null {
    return read && read !== UNREADABLE && !read.tombstone && this.clock.now() < read.expiresAt
      ? read.record
      : null
  }

  /** True if a live record or a live tombstone holds the key. */
  private holds(read: Read): boolean {
    return read !== null && read !== UNREADABLE && this.clock.now() < read.expiresAt
  }

  /** The folder of `key`'s file. The one place a key becomes a path: anything but a store key is refused. */
  private shard(key: string): string {
    if (!isStoreKey(key)) throw new Error('refusing to turn a value that is not a store key into a path')
    return join(this.directory, SESSIONS, key[0] as string, key[1] as string)
  }

  private userFolder(userId: string): string {
    const hash = createHash('sha256').update(userId, 'utf8').digest('base64url')
    return join(this.directory, USERS, hash[0] as string, hash[1] as string, hash)
  }

  /** The session file of `key` (a valid key), or `null` when there is none, or `UNREADABLE`. */
  private async read(key: string): Promise<Read> {
    const path = join(this.shard(key), key)
    let text: string
    try {
      text = await readWhole(path)
    } catch (error) {
      const code = errorCode(error)
      if (code === 'EISDIR') return this.unreadable(path, 'it is a folder')
      if (code !== 'ENOENT') throw error
      await this.ensureFolder()
      return null
    }
    return this.interpret(path, text, key)
  }

  private interpret(path: string, text: string, key: string): Read {
    const parsed = parse(text, key)
    if (typeof parsed === 'string') return this.unreadable(path, parsed)
    if (this.reported.size > 0) this.reported.delete(path)
    return parsed
  }

  /**
   * Like {@link read}, but keeps the file open, so that {@link reread} can later tell with one `stat`
   * whether the key's file is still this one. The caller closes the pin ({@link unpin}).
   */
  private async readPinned(key: string): Promise<Pinned> {
    // Windows: a file held open may refuse the rename over it; it is read twice there, as before.
    if (process.platform === 'win32') return { read: await this.read(key) }
    const path = join(this.shard(key), key)
    let handle: FileHandle
    try {
      handle = await open(path, 'r')
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error
      await this.ensureFolder()
      return { read: null }
    }
    try {
      // bigint: a device or inode number past 2^53 is compared exactly.
      const stats = await handle.stat({ bigint: true })
      if (stats.isFile()) {
        const size = Number(stats.size)
        const buffer = Buffer.allocUnsafe(size + 1)
        let length = 0
        for (;;) {
          const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
          length += bytesRead
          if (bytesRead === 0 || length >= size) break
        }
        // Exactly the size fstat gave: the whole of a file FileStore never writes in place.
        if (length === size) {
          const read = this.interpret(path, buffer.toString('utf8', 0, length), key)
          return { read, pin: { handle, dev: stats.dev, ino: stats.ino } }
        }
      }
    } catch (error) {
      await handle.close().catch(() => {})
      throw error
    }
    await handle.close()
    return { read: await this.read(key) }
  }

  /**
   * The key's file, read again under its lock, unless it is still the file `pinned` read: same device
   * and inode at the path. That proves the same content, because an inode cannot be reused while a
   * handle holds it open, and FileStore never changes a session file in place (every write is a new
   * file renamed over it). Any other writer in between (a process, a prune) made a new file or none:
   * then it is read again.
   */
  private async reread(key: string, pinned: Pinned): Promise<Read> {
    if (pinned.pin) {
      const now = await stat(join(this.shard(key), key), { bigint: true }).catch((error: unknown) => {
        if (errorCode(error) === 'ENOENT') return null
        throw error
      })
      if (now?.ino === pinned.pin.ino && now.dev === pinned.pin.dev) return pinned.read
    }
    return this.read(key)
  }

  private unreadable(path: string, why: string): typeof UNREADABLE {
    if (!this.reported.has(path)) {
      if (this.reported.size >= MAX_REPORTED) this.reported.clear()
      this.reported.add(path)
      this.warn(`${NAME}: ignoring ${path}: ${why}; it reads as missing`)
    }
    return UNREADABLE
  }

  /**
   * Checks the folder is there and trusted (creating it, 0700, when only it is missing): a missing file
   * then means "no record". One that another user made meanwhile is refused as at construction.
   */
  private async ensureFolder(): Promise<void> {
    const found = await stat(this.directory).catch((error: unknown) => {
      if (errorCode(error) === 'ENOENT') return null
      throw error
    })
    if (found) {
      trust(this.directory, found)
      return
    }
    if (!this.createDirectory) {
      throw missingSchema(
        `no such folder ${this.directory}: check the path (the application's FileStore makes it on first use)`,
      )
    }
    try {
      await makeFolder(this.directory)
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
      trust(this.directory, await stat(this.directory))
    }
  }

  /** Creates `segments` below the folder, one level at a time (never above it), syncing each new entry. */
  private async makeFolders(...segments: string[]): Promise<void> {
    await this.ensureFolder()
    let path = this.directory
    for (const [i, segment] of segments.entries()) {
      const parent = path
      path = join(path, segment)
      // Every level but the last is made once per folder and found ever after: looked at first (one
      // `stat`, no failing `mkdir`), and trusted before anything is made below it, as a made one is.
      if (i < segments.length - 1) {
        const found = await stat(path).catch((error: unknown) => {
          if (errorCode(error) === 'ENOENT') return null
          throw error
        })
        if (found) {
          trust(path, found)
          continue
        }
      }
      try {
        await makeFolder(path)
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw error
        trust(path, await stat(path))
        continue
      }
      if (this.sync) await this.syncs.after(parent)
    }
  }

  /**
   * Runs `write` holding the key: first in this process's queue for it, then its lock, which holds
   * across processes. Rejects when the lock cannot be had. The lock is released once the files are in
   * place; the folder syncs they need (`held.syncs`) are waited for after, while the next writer of the
   * key may already go on (a sync of a folder serves every change made in it before it began).
   */
  private async locked<T>(key: string, write: (held: Held) => Promise<T>): Promise<T> {
    const syncs: Promise<void>[] = []
    try {
      return await this.queue.run(key, async () => {
        const lock = (await this.lock(key, true)) as HeldLock
        try {
          return await write({ lock, syncs })
        } finally {
          await lock.release()
        }
      })
    } finally {
      await Promise.all(syncs)
    }
  }

  /** Like {@link locked}, but resolves `undefined` at once when another writer holds the key. */
  private async lockedIfFree<T>(key: string, write: (held: Held) => Promise<T>): Promise<T | undefined> {
    if (this.queue.busy(key)) return undefined
    const syncs: Promise<void>[] = []
    try {
      return await this.queue.run(key, async () => {
        const lock = await this.lock(key, false)
        if (!lock) return undefined
        try {
          return await write({ lock, syncs })
        } finally {
          await lock.release()
        }
      })
    } finally {
      await Promise.all(syncs)
    }
  }

  private async lock(key: string, wait: boolean): Promise<HeldLock | null> {
    const path = join(this.shard(key), `${key}${LOCK_SUFFIX}`)
    try {
      return await takeLock(path, this.lockPolicy, wait)
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error
      await this.makeFolders(SESSIONS, key[0] as string, key[1] as string)
      return takeLock(path, this.lockPolicy, wait)
    }
  }

  /**
   * Replaces the session file atomically: a complete temp file in the same folder ({@link stage}, or
   * `staged`, made before the lock with this record's content), renamed over it. The caller holds the key's lock; it is checked once more just before the rename.
   * With `durability: 'power-loss'`, the fsync of the folder the rename needs joins `held.syncs`.
   */
  private async write(record: SessionRecord, tombstone: boolean, held: Held, staged?: Staged): Promise<void> {
    const dir = this.shard(record.key)
    if (staged) staged.taken = true
    const temp = await (staged?.temp ?? this.stage(record, tombstone))
    let renamed = false
    try {
      if (!(await held.lock.stillHeld())) throw new Error(`the lock of ${record.key} was broken while held`)
      await rename(temp, join(dir, record.key))
      renamed = true
    } finally {
      if (!renamed) await unlink(temp).catch(() => {})
    }
    this.synced(dir, held.syncs)
  }

  /**
   * Creates the key's file if it has none, atomically, with or without the key's lock: a complete temp
   * file ({@link stage}) is hard-linked to the key's name, which fails (`EEXIST`) when any file holds
   * it, so of any number of claims, and of a claim and a create under the lock (which claims too), one
   * wins. Resolves false when the name was taken. The fsync of the folder joins `syncs`.
   */
  private async claim(record: SessionRecord, syncs: Promise<void>[]): Promise<boolean> {
    const dir = this.shard(record.key)
    const temp = await this.stage(record, false)
    try {
      await link(temp, join(dir, record.key))
    } catch (error) {
      if (errorCode(error) === 'EEXIST') return false
      throw error
    } finally {
      await unlink(temp).catch(() => {})
    }
    this.synced(dir, syncs)
    return true
  }

  /**
   * Writes the record to a new temp file next to the key's file and resolves its path: complete, and
   * with `durability: 'power-loss'` `fdatasync`ed, before anything renames or links it into place.
   * Makes the folders first when they are missing. A temp file that fails is removed.
   */
  private async stage(record: SessionRecord, tombstone: boolean): Promise<string> {
    const dir = this.shard(record.key)
    const temp = join(dir, `${record.key}.${randomBytes(16).toString('base64url')}.tmp`)
    const content = serialize(record, tombstone)
    let handle: FileHandle
    try {
      handle = await open(temp, 'wx', 0o600)
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error
      await this.makeFolders(SESSIONS, record.key[0] as string, record.key[1] as string)
      handle = await open(temp, 'wx', 0o600)
    }
    try {
      try {
        await handle.writeFile(content, 'utf8')
        if (this.sync) await handle.datasync()
      } finally {
        await handle.close()
      }
    } catch (error) {
      await unlink(temp).catch(() => {})
      throw error
    }
    return temp
  }

  /** Starts {@link stage} now, for a write that decides later, under the lock, whether to use it. */
  private staged(record: SessionRecord): Staged {
    const temp = this.stage(record, false)
    // Its failure is the write's, if the write uses it: never an unhandled rejection meanwhile.
    temp.catch(() => {})
    return { temp, taken: false }
  }

  /**
   * With `durability: 'power-loss'`, adds to `syncs` the fsync of `dir` that an entry just changed in it
   * needs. The change has happened (readers see it): a failing sync is reported, not thrown.
   */
  private synced(dir: string, syncs: Promise<void>[]): void {
    if (!this.sync) return
    syncs.push(
      this.syncs
        .after(dir)
        .catch((error: unknown) =>
          this.warn(`${NAME}: could not fsync ${dir} after a write: ${messageOf(error)}`),
        ),
    )
  }

  /** Turns the live record under `key` into a tombstone. */
  private async tombstone(key: string, held: Held): Promise<void> {
    const current = this.live(await this.read(key))
    if (!current) return
    await this.write({ ...current, userId: null, payload: ENDED_PAYLOAD }, true, held)
    if (current.userId !== null) await this.removeMarker(current.userId, key)
  }

  /** The keys `userId` has markers for. */
  private async markers(userId: string): Promise<string[]> {
    if (typeof userId !== 'string') return []
    try {
      return (await readdir(this.userFolder(userId))).filter(isStoreKey)
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error
      await this.ensureFolder()
      return []
    }
  }

  /** Writes the marker (durably) before the record that needs it, so the index never misses a live record. */
  private async addMarker(userId: string, key: string): Promise<void> {
    const folder = this.userFolder(userId)
    for (let attempt = 1; ; attempt++) {
      try {
        await writeFile(join(folder, key), '', { mode: 0o600 })
        break
      } catch (error) {
        // A concurrent cleanup may remove the folder once it is empty: make it again.
        if (errorCode(error) !== 'ENOENT' || attempt === 3) throw error
        const hash = folder.slice(-43)
        await this.makeFolders(USERS, hash[0] as string, hash[1] as string, hash)
      }
    }
    if (this.sync) await this.syncs.after(folder)
  }

  /** Removes a marker, and its folder once empty. Best effort: a marker left behind is filtered and cleaned later. */
  private async removeMarker(userId: string, key: string): Promise<void> {
    const folder = this.userFolder(userId)
    try {
      await unlink(join(folder, key))
      await removeIfEmpty(folder)
    } catch {
      // Left for listByUser or the next write of the key.
    }
  }

  /** Removes a marker that named no live record of the user, after checking again under the key's lock. */
  private async dropStaleMarker(userId: string, key: string): Promise<void> {
    try {
      await this.lockedIfFree(key, async () => {
        if (this.live(await this.read(key))?.userId !== userId) await this.removeMarker(userId, key)
      })
    } catch {
      // Best effort: the marker stays filtered out and is tried again on the next listing.
    }
  }

  /** One entry of a shard folder, for prune; true if it removed a record or tombstone. */
  private async pruneEntry(dir: string, name: string): Promise<boolean> {
    if (isStoreKey(name)) {
      const found = await this.read(name)
      if (found === null || this.holds(found)) return false
      const removed = await this.lockedIfFree(name, async () => {
        const current = await this.read(name)
        if (current === null || this.holds(current)) return false
        if (current === UNREADABLE) {
          // A folder named like a key is not ours to remove: it stays, reported and ignored.
          await unlink(join(dir, name)).catch(() => {})
          return false
        }
        await unlink(join(dir, name))
        if (current.record.userId !== null) await this.removeMarker(current.record.userId, name)
        return true
      })
      return removed === true
    }
    if (name.endsWith(LOCK_SUFFIX)) await removeIfEmpty(join(dir, name))
    else if (LEFTOVER.test(name)) {
      const path = join(dir, name)
      const info = await stat(path).catch(() => null)
      if (info && Date.now() - info.mtimeMs > LEFTOVER_AGE_MS) {
        // A foreign lock moved aside may hold what this user cannot remove: reported, and prune goes on.
        await rm(path, { recursive: true, force: true }).catch((error: unknown) =>
          this.warn(`${NAME}: could not remove the leftover ${path}: ${messageOf(error)}`),
        )
      }
    }
    return false
  }

  /** Every shard folder's entries, a batch at a time; the event loop gets a turn after each batch. */
  private async *walk(): AsyncGenerator<[dir: string, names: string[]]> {
    const root = join(this.directory, SESSIONS)
    for (const first of await this.subfolders(root)) {
      for (const second of await this.subfolders(join(root, first))) {
        const dir = join(root, first, second)
        let names: string[]
        try {
          names = await readdir(dir)
        } catch (error) {
          if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') continue
          throw error
        }
        for (const batch of batches(names)) {
          yield [dir, batch]
          await yieldToEventLoop()
        }
      }
    }
  }

  /** The shard folder names in `dir`; none when `dir` is missing (nothing written yet). */
  private async subfolders(dir: string): Promise<string[]> {
    try {
      return (await readdir(dir)).filter((name) => SHARD.test(name))
    } catch (error) {
      const code = errorCode(error)
      if (code === 'ENOTDIR' && dir !== join(this.directory, SESSIONS)) return []
      if (code !== 'ENOENT') throw error
      await this.ensureFolder()
      return []
    }
  }
}

/**
 * Refuses, at construction, a session folder (or its `sessions` or `users`) that exists and that another
 * user owns or may write to. The folders below are reached only through these; a missing one is made
 * 0700 later, and one that cannot be looked at now is left to the operations, which report it.
 */
function refuseUntrustedFolders(directory: string): void {
  for (const path of [directory, join(directory, SESSIONS), join(directory, USERS)]) {
    let stats: Stats
    try {
      stats = statSync(path)
    } catch {
      continue
    }
    if (stats.isDirectory()) trust(path, stats)
  }
}

/** Throws unless `stats` describe a folder this process's user alone may change: `ConfigError` says why. */
function trust(path: string, stats: Stats): void {
  if (!stats.isDirectory()) {
    throw Object.assign(new Error(`ENOTDIR: ${path} is not a folder`), { code: 'ENOTDIR' })
  }
  const why = distrust(path, stats)
  if (why) throw new ConfigError('directory', why)
}

function batches<T>(items: readonly T[], size = BATCH): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * The whole of a file as text, in one `read` for a session file (open, read, close: no `fstat`, which
 * `readFile` does first). A read that fills the buffer reads on into a bigger one; one that does not is
 * the end of the file (a regular file is read up to its end; FileStore never writes one in place, and
 * a file torn by anything else fails to parse and reads as unreadable, as with `readFile`).
 */
async function readWhole(path: string): Promise<string> {
  const handle = await open(path, 'r')
  try {
    let buffer = Buffer.allocUnsafe(READ_SIZE)
    let length = 0
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
      length += bytesRead
      if (bytesRead === 0 || length < buffer.length) return buffer.toString('utf8', 0, length)
      const bigger = Buffer.allocUnsafe(buffer.length * 2)
      buffer.copy(bigger, 0, 0, length)
      buffer = bigger
    }
  } finally {
    await handle.close()
  }
}

/** The file's content: the record's own fields (the payload last, so a glance shows the rest), checked. */
function serialize(record: SessionRecord, tombstone: boolean): string {
  const { payload, ...fields } = copyRecord(record)
  const content = { latchkey: FORMAT, ...fields, tombstone, payload }
  const why = invalid(content, record.key)
  if (why) throw new TypeError(`the record cannot be stored: ${why}`)
  return `${JSON.stringify(content)}\n`
}

/** The session file's content as a record, or why it is not one. */
function parse(text: string, key: string): Stored | string {
  if (text === '') return 'the file is empty'
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    return 'not JSON (torn or foreign)'
  }
  const why = invalid(data, key)
  if (why) return why
  const { tombstone } = data as { tombstone: boolean }
  const record = copyRecord(data as SessionRecord)
  return { record, tombstone, expiresAt: expiresAt(record) }
}

/** Why `data` is not a session file's content for `key`, or `null` when it is. */
function invalid(data: unknown, key: string): string | null {
  if (typeof data !== 'object' || data === null) return 'not a latchkey session file'
  const fields = data as Record<string, unknown>
  if (fields.latchkey !== FORMAT) return 'not a latchkey session file (format 1)'
  if (fields.key !== key) return 'its key is not its file name'
  if (!Number.isSafeInteger(fields.version)) return 'version is not an integer'
  for (const time of ['createdAt', 'lastSeenAt', 'idleExpiresAt', 'absoluteExpiresAt']) {
    if (!Number.isFinite(fields[time])) return `${time} is not a number`
  }
  if (fields.userId !== null && typeof fields.userId !== 'string') return 'userId is not a string or null'
  if (typeof fields.payload !== 'string') return 'payload is not a string'
  if (typeof fields.tombstone !== 'boolean') return 'tombstone is not a boolean'
  return null
}

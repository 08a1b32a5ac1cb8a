import { type ChildProcess, execFileSync, fork } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { open as fsOpen } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { threadId } from 'node:worker_threads'
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import { cookieHeader, startRemoteManager } from '../../../test/support/remote.js'
import { harness } from '../../../test/support/setup.js'
import { ManualClock, systemClock } from '../../core/clock.js'
import { generateKey } from '../../core/crypto.js'
import { ConfigError, StoreError } from '../../core/errors.js'
import { createSessionManager } from '../../core/manager.js'
import type { SessionRecord } from '../../core/store.js'
import { defineStoreConformance, makeRecord, randomStoreKey } from '../../testing/conformance.js'
import { FolderSyncs } from './folder-sync.js'
import { FileStore, type FileStoreOptions } from './index.js'
import { LOCK_SUFFIX, takeLock } from './lock.js'

const root = mkdtempSync(join(tmpdir(), 'latchkey-file-'))
let folders = 0
/** A path for a new store folder (not created: the store creates it). */
const freshFolder = () => join(root, `store-${++folders}`)
afterAll(() => rmSync(root, { recursive: true, force: true }))

/** Undone after each test, last first: stores to close, processes to end, folders to thaw. */
const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const MINUTE = 60_000
const isRoot = process.getuid?.() === 0

/** A store on a fresh folder, closed after the test, collecting its warnings. */
function open(options: Partial<FileStoreOptions> = {}) {
  const warnings: string[] = []
  const clock = new ManualClock()
  const directory = options.directory ?? freshFolder()
  const store = new FileStore({
    directory,
    clock,
    pruneIntervalMs: 0,
    onWarning: (warning) => warnings.push(warning.message),
    ...options,
  })
  cleanups.push(() => store.close())
  return { store, clock, directory, warnings }
}

/** Where the layout puts the session file of `key`. */
function fileOf(directory: string, key: string): string {
  return join(directory, 'sessions', key[0] as string, key[1] as string, key)
}

/** Every path under `dir`, relative, sorted. */
function tree(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).sort()
}

/** Paths under `dir` of what a write leaves only while in flight: temp files, locks, half-built locks. */
function leftovers(dir: string): string[] {
  return tree(dir).filter((path) => /\.(tmp|lock|new)(\/|$)/.test(path))
}

/** What a session file holds, in the format the store writes (for files planted by tests). */
function fileText(record: SessionRecord, tombstone = false): string {
  const { payload, ...fields } = record
  return `${JSON.stringify({ latchkey: 1, ...fields, tombstone, payload })}\n`
}

/** Plants a session file directly (no lock, no fsync), for tests that need many or odd ones. */
function plant(directory: string, record: SessionRecord, text = fileText(record)): string {
  const path = fileOf(directory, record.key)
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 })
  writeFileSync(path, text, { mode: 0o600 })
  return path
}

/** A store whose folder cannot exist: the path runs through a regular file. */
function unavailableStore(clock: ManualClock, durability?: FileStoreOptions['durability']): FileStore {
  const file = join(root, `a-file-${++folders}`)
  writeFileSync(file, '')
  return new FileStore({ directory: join(file, 'sessions'), clock, ...(durability ? { durability } : {}) })
}

/** Down until the parent of its folder appears: the store creates its folder, never anything above. */
function recoveringStore(clock: ManualClock, durability?: FileStoreOptions['durability']) {
  const parent = join(root, `later-${++folders}`)
  return {
    store: new FileStore({
      directory: join(parent, 'sessions'),
      clock,
      ...(durability ? { durability } : {}),
    }),
    restore: () => mkdirSync(parent),
  }
}

defineStoreConformance(
  { describe, test },
  {
    name: 'FileStore',
    createStore: (clock) => new FileStore({ directory: freshFolder(), clock, pruneIntervalMs: 0 }),
    disposeStore: async (store) => {
      await store.close()
      if (store.directory.startsWith(join(root, 'store-')))
        rmSync(store.directory, { recursive: true, force: true })
    },
    createUnavailableStore: (clock) => unavailableStore(clock),
    createRecoveringStore: (clock) => recoveringStore(clock),
  },
)

// The same suite with no sync: what changes is only what a power loss can undo.
defineStoreConformance(
  { describe, test },
  {
    name: "FileStore (durability: 'process')",
    createStore: (clock) =>
      new FileStore({ directory: freshFolder(), clock, pruneIntervalMs: 0, durability: 'process' }),
    disposeStore: async (store) => {
      await store.close()
      if (store.directory.startsWith(join(root, 'store-')))
        rmSync(store.directory, { recursive: true, force: true })
    },
    createUnavailableStore: (clock) => unavailableStore(clock, 'process'),
    createRecoveringStore: (clock) => recoveringStore(clock, 'process'),
  },
)

describe('FileStore options', () => {
  test.each([
    ['directory', { directory: '' }],
    ['directory', { directory: 'a\0b' }],
    ['directory', { directory: 42 }],
    ['lockStaleMs', { directory: 'x', lockStaleMs: 0 }],
    ['lockStaleMs', { directory: 'x', lockStaleMs: 1.5 }],
    ['pruneIntervalMs', { directory: 'x', pruneIntervalMs: -1 }],
    ['pruneIntervalMs', { directory: 'x', pruneIntervalMs: 0.5 }],
    ['onWarning', { directory: 'x', onWarning: 'loud' }],
    ['clock', { directory: 'x', clock: {} }],
    ['durability', { directory: 'x', durability: 'fast' }],
    ['durability', { directory: 'x', durability: true }],
  ])('refuses a bad %s with a ConfigError', (option, options) => {
    const build = () => new FileStore(options as unknown as FileStoreOptions)
    expect(build).toThrow(ConfigError)
    expect(build).toThrow(expect.objectContaining({ option }))
  })

  test('the folder is resolved at construction and created 0700 on first use, never its parent', async () => {
    const { store, directory } = open({ directory: join(root, `rel-${++folders}`) })
    expect(store.directory).toBe(directory)
    expect(existsSync(directory)).toBe(false)
    expect(await store.count()).toBe(0)
    expect(statSync(directory).mode & 0o777).toBe(0o700)
    const orphan = open({ directory: join(root, `no-parent-${++folders}`, 'sessions') })
    const error = await orphan.store.get(randomStoreKey()).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StoreError)
    expect(error).toMatchObject({ store: 'FileStore', operation: 'get', cause: { code: 'ENOENT' } })
    expect(existsSync(join(orphan.directory, '..'))).toBe(false)
  })
})

describe('FileStore durability', () => {
  /** Counts the syncs of files and folders (FileHandle's datasync and sync) while `body` runs. */
  async function syncsDuring(body: () => Promise<unknown>): Promise<number> {
    const handle = await fsOpen(new URL(import.meta.url), 'r')
    const proto = Object.getPrototypeOf(handle) as { datasync(): Promise<void>; sync(): Promise<void> }
    await handle.close()
    const datasync = vi.spyOn(proto, 'datasync')
    const sync = vi.spyOn(proto, 'sync')
    try {
      await body()
      return datasync.mock.calls.length + sync.mock.calls.length
    } finally {
      datasync.mockRestore()
      sync.mockRestore()
    }
  }

  test("'power-loss' (the default) syncs the temp file and the folder of every write", async () => {
    const { store, clock } = open()
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    const syncs = await syncsDuring(async () => {
      expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
      await store.touch(record.key, clock.now(), record.idleExpiresAt)
    })
    expect(syncs).toBe(4)
  })

  test("'process' syncs nothing, and what it wrote is what any store on the folder reads", async () => {
    const { store, clock, directory } = open({ durability: 'process' })
    const other = open({ directory, clock }).store
    const record = makeRecord(clock, { userId: 'alice' })
    const syncs = await syncsDuring(async () => {
      expect(await store.create(record)).toBe(true)
      expect(await store.update({ ...record, version: 2, payload: 'two' }, 1)).toBe(true)
      expect(await store.update({ ...record, version: 3 }, 1)).toBe(false)
    })
    expect(syncs).toBe(0)
    expect(await other.get(record.key)).toMatchObject({ version: 2, payload: 'two' })
    expect((await other.listByUser('alice')).map((found) => found.key)).toEqual([record.key])
    expect(await other.update({ ...record, version: 3 }, 2)).toBe(true)
    expect(await store.get(record.key)).toMatchObject({ version: 3 })
    expect(leftovers(directory)).toEqual([])
  })
})

/** The prototype of node's FileHandle: its `sync` (folders here) and `datasync` (files) are the seams held below. */
async function fileHandleProto() {
  const handle = await fsOpen(new URL(import.meta.url), 'r')
  await handle.close()
  return Object.getPrototypeOf(handle) as { datasync(): Promise<void>; sync(): Promise<void> }
}

/** Waits, a turn of the event loop at a time, until `ready()` (an event the test caused, never a duration). */
async function until(ready: () => boolean): Promise<void> {
  while (!ready()) await new Promise((resolve) => setImmediate(resolve))
}

/** A promise whose settling the test can read at any time. */
function watch<T>(promise: Promise<T>) {
  const state = { settled: false }
  promise.then(
    () => {
      state.settled = true
    },
    () => {
      state.settled = true
    },
  )
  return { state, promise }
}

/** A key of the same shard folder as `key` (same first two characters). */
function sameFolderKey(key: string): string {
  return `${key.slice(0, 2)}${randomStoreKey().slice(2)}`
}

describe("FileStore 'power-loss': folder syncs, grouped", () => {
  test('a write resolves only after a sync of its folder that began after its rename; one sync serves every write renamed while another ran', async () => {
    const { store, clock, directory } = open()
    const first = makeRecord(clock)
    const others = [
      makeRecord(clock, { key: sameFolderKey(first.key) }),
      makeRecord(clock, { key: sameFolderKey(first.key) }),
    ]
    for (const record of [first, ...others]) expect(await store.create(record)).toBe(true)
    const ends: (() => void)[] = []
    // Folder syncs are FileHandle#sync (a file's own sync is datasync): each is held until the test ends it.
    const sync = vi
      .spyOn(await fileHandleProto(), 'sync')
      .mockImplementation(() => new Promise<void>((resolve) => ends.push(resolve)))
    const after = vi.spyOn(FolderSyncs.prototype, 'after')
    try {
      const updating = watch(store.update({ ...first, version: 2 }, 1))
      await until(() => ends.length === 1)
      // Both are renamed into place (and ask for their folder's sync) while that sync runs: it may miss them.
      const updatingOthers = others.map((record) => watch(store.update({ ...record, version: 2 }, 1)))
      await until(() => after.mock.calls.length === 3)
      for (const record of others)
        expect(JSON.parse(readFileSync(fileOf(directory, record.key), 'utf8')).version).toBe(2)
      expect(updating.state.settled).toBe(false)
      ends[0]?.()
      expect(await updating.promise).toBe(true)
      await until(() => ends.length === 2)
      expect(updatingOthers.map((update) => update.state.settled)).toEqual([false, false])
      // The second sync began after both renames: it alone serves both writes.
      ends[1]?.()
      expect(await Promise.all(updatingOthers.map((update) => update.promise))).toEqual([true, true])
      expect(sync).toHaveBeenCalledTimes(2)
    } finally {
      sync.mockRestore()
      after.mockRestore()
      for (const end of ends) end()
    }
  })

  test("the key's lock is released before the folder sync: the next write of the key goes on meanwhile", async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    const ends: (() => void)[] = []
    const sync = vi
      .spyOn(await fileHandleProto(), 'sync')
      .mockImplementation(() => new Promise<void>((resolve) => ends.push(resolve)))
    try {
      const first = watch(store.update({ ...record, version: 2 }, 1))
      await until(() => ends.length === 1)
      // The first write waits for its sync, without its lock: the second takes it, and renames.
      const second = watch(store.update({ ...record, version: 3 }, 2))
      await until(() => JSON.parse(readFileSync(fileOf(directory, record.key), 'utf8')).version === 3)
      expect([first.state.settled, second.state.settled]).toEqual([false, false])
      ends[0]?.()
      expect(await first.promise).toBe(true)
      await until(() => ends.length === 2)
      ends[1]?.()
      expect(await second.promise).toBe(true)
    } finally {
      sync.mockRestore()
      for (const end of ends) end()
    }
  })
})

describe('FileStore create: the name claimed with a hard link', () => {
  test('a create under the lock claims a missing file as a create without the lock does: of the two, one wins', async () => {
    const { store, clock, directory } = open({ lockStaleMs: 60_000 })
    const other = open({ directory, clock }).store
    // A dead record holds the name: the create cannot claim it, and takes the lock to replace it.
    const dead = makeRecord(clock, { idleExpiresAt: clock.now() - 1 })
    const file = plant(directory, dead)
    const held = await takeLock(`${file}${LOCK_SUFFIX}`, { staleMs: 60_000, onBreak() {} }, true)
    const creating = watch(store.create({ ...dead, idleExpiresAt: clock.now() + MINUTE, payload: 'mine' }))
    await until(() => readdirSync(join(file, '..')).some((name) => name.endsWith('.new')))
    // Meanwhile a prune elsewhere removes the dead file, and frees the lock.
    rmSync(file)
    let staged = false
    let go = () => {}
    const gate = new Promise<void>((resolve) => {
      go = resolve
    })
    const proto = await fileHandleProto()
    const datasync = proto.datasync
    const pause = vi.spyOn(proto, 'datasync').mockImplementation(async function (this: unknown) {
      // The first file sync is the waiting create's, under the lock, after it read "no file": held there.
      if (!staged) {
        staged = true
        await gate
      }
      return datasync.call(this)
    })
    try {
      await held?.release()
      await until(() => staged)
      // A create elsewhere, without the lock, claims the name first.
      expect(await other.create({ ...dead, idleExpiresAt: clock.now() + MINUTE, payload: 'theirs' })).toBe(
        true,
      )
      go()
      expect(await creating.promise).toBe(false)
    } finally {
      pause.mockRestore()
    }
    expect(await store.get(dead.key)).toMatchObject({ payload: 'theirs' })
    expect(leftovers(directory)).toEqual([])
  })

  test('a create that loses to a live record drops the user marker it wrote first', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    expect(await store.create({ ...record, userId: 'bob', payload: 'late' })).toBe(false)
    const markers = tree(join(directory, 'users')).filter((path) => path.split('/').length === 4)
    expect(markers).toHaveLength(1)
    expect((await store.listByUser('alice')).map((found) => found.key)).toEqual([record.key])
    expect(await store.listByUser('bob')).toEqual([])
  })
})

describe('FileStore: the read before the lock', () => {
  /**
   * Starts `write` while this test holds the key's lock, as another process would, waits until the
   * write has read the file and is waiting for the lock (its lock being built shows), runs `meanwhile`
   * (the other process's write), then releases the lock.
   */
  async function writeAround<T>(
    directory: string,
    key: string,
    write: () => Promise<T>,
    meanwhile: () => void,
  ) {
    const file = fileOf(directory, key)
    const held = await takeLock(`${file}${LOCK_SUFFIX}`, { staleMs: 60_000, onBreak() {} }, true)
    const pending = write()
    while (!readdirSync(join(file, '..')).some((name) => name.endsWith('.new'))) {
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
    meanwhile()
    await held?.release()
    return pending
  }

  /** Replaces the key's file as another FileStore process would: a new file renamed over it. */
  function replace(directory: string, record: SessionRecord): void {
    const file = fileOf(directory, record.key)
    writeFileSync(`${file}.other.tmp`, fileText(record), { mode: 0o600 })
    renameSync(`${file}.other.tmp`, file)
  }

  test('an update whose record another process replaced while it waited for the lock reads it again and loses', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    const theirs = { ...record, version: 2, payload: 'theirs' }
    const updated = await writeAround(
      directory,
      record.key,
      () => store.update({ ...record, version: 2, payload: 'mine' }, 1),
      () => replace(directory, theirs),
    )
    expect(updated).toBe(false)
    expect(await store.get(record.key)).toMatchObject({ version: 2, payload: 'theirs' })
    // A touch that waited the same way keeps their payload (it re-reads, then writes its times).
    await writeAround(
      directory,
      record.key,
      () => store.touch(record.key, clock.now() + 5, record.idleExpiresAt + 5),
      () => replace(directory, { ...theirs, version: 3, payload: 'theirs again' }),
    )
    expect(await store.get(record.key)).toMatchObject({ version: 3, payload: 'theirs again' })
    expect(leftovers(directory)).toEqual([])
  })

  test('an update whose record was removed meanwhile (a prune elsewhere) loses; one left alone wins', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    const kept = await writeAround(
      directory,
      record.key,
      () => store.update({ ...record, version: 2 }, 1),
      () => {},
    )
    expect(kept).toBe(true)
    const removed = await writeAround(
      directory,
      record.key,
      () => store.update({ ...record, version: 3 }, 2),
      () => rmSync(fileOf(directory, record.key)),
    )
    expect(removed).toBe(false)
    expect(await store.get(record.key)).toBeNull()
  })
})

describe('FileStore close', () => {
  test('close waits for the writes in flight, then every call rejects', async () => {
    const { store, clock, directory } = open()
    const records = Array.from({ length: 20 }, () => makeRecord(clock))
    const creating = Promise.all(records.map((record) => store.create(record)))
    await store.close()
    // Already on disk when close resolves, before the callers have even looked at their results.
    expect(tree(join(directory, 'sessions')).filter((path) => path.split('/').length === 3)).toHaveLength(20)
    expect(await creating).toEqual(records.map(() => true))
    expect(leftovers(directory)).toEqual([])
    await expect(store.get(records[0]?.key as string)).rejects.toMatchObject({ operation: 'get' })
    const reopened = open({ directory })
    expect(await reopened.store.count()).toBe(20)
  })
})

describe('FileStore on disk', () => {
  test('one 0600 file per session, named by its key, in 0700 folders two levels deep; users by hash', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    const path = fileOf(directory, record.key)
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ latchkey: 1, ...record, tombstone: false })
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const folders = [
      directory,
      join(directory, 'sessions'),
      join(path, '..', '..'),
      join(path, '..'),
      join(directory, 'users'),
    ]
    for (const folder of folders) expect(statSync(folder).mode & 0o777).toBe(0o700)
    const markers = tree(join(directory, 'users')).filter((entry) => entry.endsWith(record.key))
    expect(markers).toHaveLength(1)
    const [h1, h2, hash, key] = (markers[0] as string).split('/')
    expect(hash).toMatch(/^[\w-]{43}$/)
    expect([h1, h2, key]).toEqual([hash?.[0], hash?.[1], record.key])
    expect(statSync(join(directory, 'users', markers[0] as string)).mode & 0o777).toBe(0o600)
    // Nothing in flight is left behind, and the user ID is nowhere in a name.
    expect(leftovers(directory)).toEqual([])
    expect(tree(directory).some((entry) => entry.includes('alice'))).toBe(false)
  })

  test('sharding: every file sits in the folder named by its first two characters', async () => {
    const { store, clock, directory } = open()
    const records = Array.from({ length: 400 }, () => makeRecord(clock))
    await Promise.all(records.map((record) => store.create(record)))
    const sessions = join(directory, 'sessions')
    for (const first of readdirSync(sessions)) {
      expect(first).toMatch(/^[\w-]$/)
      for (const second of readdirSync(join(sessions, first))) {
        expect(second).toMatch(/^[\w-]$/)
        for (const name of readdirSync(join(sessions, first, second)))
          expect(name.slice(0, 2)).toBe(first + second)
      }
    }
    const leaves = new Set(records.map((record) => record.key.slice(0, 2)))
    expect(leaves.size).toBeGreaterThan(350)
    expect(tree(sessions).filter((path) => path.split('/').length === 3)).toHaveLength(400)
  })

  test('no path outside the folder, whatever the key or user ID', async () => {
    // Every traversal below climbs at most to `sandbox`: a store that got this wrong writes there, where
    // the check sees it, and never into the system.
    const sandbox = join(root, `sandbox-${++folders}`)
    mkdirSync(join(sandbox, 'a', 'b'), { recursive: true })
    const { store, clock, directory } = open({ directory: join(sandbox, 'a', 'b', 'sessions') })
    const planted = makeRecord(clock, { userId: 'bob' })
    expect(await store.create(planted)).toBe(true)
    const before = tree(sandbox)
    const keys = [
      '../../../../canary',
      '../../canary',
      `../${planted.key}`,
      `../../../..${'/x'.repeat(19)}`,
      `${planted.key.slice(0, 40)}/..`,
      `./${planted.key.slice(2)}`,
      `..${planted.key.slice(2)}`,
      `/${planted.key.slice(1)}`,
      join(directory, 'sessions', planted.key),
      `${planted.key.slice(0, 42)}\0`,
      `\0${planted.key.slice(1)}`,
      `${planted.key.slice(0, 42)}.`,
      `${planted.key.slice(0, 42)}=`,
      `${planted.key.slice(0, 41)}\u00e9`,
      planted.key.slice(0, 42),
      `${planted.key}A`,
      'x'.repeat(10_240),
      '',
      'sessions',
      '*'.repeat(43),
    ]
    for (const key of keys) {
      expect(await store.get(key)).toBeNull()
      expect(await store.create(makeRecord(clock, { key }))).toBe(false)
      expect(await store.update(makeRecord(clock, { key, version: 2 }), 1)).toBe(false)
      await store.touch(key, clock.now(), clock.now() + MINUTE)
      await store.destroy(key)
    }
    for (const userId of ['../../../../canary', '/canary', 'a\0b', '..', 'x'.repeat(10_240), '']) {
      expect(await store.listByUser(userId)).toEqual([])
    }
    expect(tree(sandbox)).toEqual(before)
    expect(existsSync(join(root, 'canary'))).toBe(false)
    // A user ID of any shape is only ever a hash on disk.
    const odd = makeRecord(clock, { userId: '../../../../canary\0/x' })
    expect(await store.create(odd)).toBe(true)
    expect((await store.listByUser('../../../../canary\0/x')).map((r) => r.key)).toEqual([odd.key])
    expect(tree(sandbox).filter((path) => !path.startsWith('a/b/sessions'))).toEqual(['a', 'a/b'])
    expect(await store.get(planted.key)).toEqual(planted)
  })
})

describe('FileStore: unreadable files', () => {
  const cases: [name: string, text: (record: SessionRecord) => string][] = [
    ['an empty file', () => ''],
    ['a torn file', (record) => fileText(record).slice(0, 60)],
    ['foreign JSON', () => '{"hello":"world"}\n'],
    ['a record of another key', (record) => fileText({ ...record, key: randomStoreKey() })],
    ['a record with a bad field', (record) => fileText({ ...record, version: 'one' as unknown as number })],
    ['binary noise', () => '\u0000\u00ff\u0001garbage'],
  ]

  test.each(cases)('%s reads as missing, is reported once, and fails no request', async (_, text) => {
    const { store, clock, directory, warnings } = open()
    const record = makeRecord(clock, { userId: 'alice' })
    const good = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    expect(await store.create(good)).toBe(true)
    const path = plant(directory, record, text(record))
    expect(await store.get(record.key)).toBeNull()
    expect(await store.get(record.key)).toBeNull()
    expect(await store.update({ ...record, version: 2 }, 1)).toBe(false)
    await store.touch(record.key, clock.now(), clock.now() + MINUTE)
    await store.destroy(record.key)
    expect((await store.listByUser('alice')).map((r) => r.key)).toEqual([good.key])
    expect(await store.count()).toBe(1)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain(path)
    expect(warnings[0]).toMatch(/reads as missing/)
    // A create replaces it; prune removes one that is left.
    const again = makeRecord(clock, { key: record.key })
    expect(await store.create(again)).toBe(true)
    expect(await store.get(record.key)).toEqual(again)
    plant(directory, record, text(record))
    expect(await store.prune()).toBe(0)
    expect(existsSync(path)).toBe(false)
    expect(await store.get(good.key)).toEqual(good)
    expect(warnings).toHaveLength(2)
  })

  test('a folder named like a key reads as missing, reported once, and prune leaves it', async () => {
    const { store, clock, directory, warnings } = open()
    const record = makeRecord(clock)
    mkdirSync(fileOf(directory, record.key), { recursive: true })
    expect(await store.get(record.key)).toBeNull()
    expect(await store.count()).toBe(0)
    expect(await store.prune()).toBe(0)
    expect(statSync(fileOf(directory, record.key)).isDirectory()).toBe(true)
    expect(warnings).toHaveLength(1)
  })

  test('a failing warning hook fails nothing', async () => {
    const { store, clock, directory } = open({
      onWarning: () => {
        throw new Error('hook failed')
      },
    })
    const record = makeRecord(clock)
    plant(directory, record, '')
    expect(await store.get(record.key)).toBeNull()
  })

  test('readers never see a torn file while writers replace it', async () => {
    const { store, clock, warnings } = open()
    let current = makeRecord(clock, { payload: 'x'.repeat(200_000) })
    expect(await store.create(current)).toBe(true)
    let writing = true
    const reads: number[] = []
    const reader = (async () => {
      while (writing) {
        const got = await store.get(current.key)
        expect(got).not.toBeNull()
        reads.push(got?.version ?? 0)
      }
    })()
    for (let i = 0; i < 60; i++) {
      const next = { ...current, version: current.version + 1, payload: String(i).repeat(200_000 / 2) }
      expect(await store.update(next, current.version)).toBe(true)
      current = next
    }
    writing = false
    await reader
    expect(reads.length).toBeGreaterThan(10)
    expect(warnings).toEqual([])
  })
})

/** This machine as lock owners name it: a hash of its boot ID and PID namespace. */
function thisMachine(): string {
  const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  const identity = `${boot}/${readlinkSync('/proc/self/ns/pid')}`
  return createHash('sha256').update(identity).digest('base64url').slice(0, 16)
}

/** Plants a held lock on `key` as its owner would have left it; resolves the owner entry. */
function plantLock(directory: string, key: string, pid: number, thread: number, machine: string): string {
  const entry = join(`${fileOf(directory, key)}.lock`, `${'T'.repeat(22)}.${pid}.${thread}.${machine}`)
  mkdirSync(entry, { recursive: true })
  return entry
}

describe('FileStore locks', () => {
  test('a lock of another machine is broken once a waiter has seen it held for lockStaleMs', async () => {
    const { store, clock, directory, warnings } = open({ lockStaleMs: 300 })
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    const entry = plantLock(directory, record.key, 1, 0, 'elsewhere')
    const started = performance.now()
    expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
    expect(performance.now() - started).toBeGreaterThanOrEqual(290)
    expect(warnings).toEqual([expect.stringMatching(/broke the lock .* held for over 300 ms/)])
    expect(existsSync(join(entry, '..'))).toBe(false)
  })

  test('a lock this very thread left behind (a release that failed) is broken at once', async () => {
    const { store, clock, directory, warnings } = open({ lockStaleMs: 60_000 })
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    plantLock(directory, record.key, process.pid, threadId, thisMachine())
    expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
    expect(warnings).toEqual([expect.stringMatching(/this thread no longer holds it/)])
  })

  test('a lock held by a live process of this machine is waited for, not broken', async () => {
    const { store, clock, directory, warnings } = open({ lockStaleMs: 60_000 })
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    const entry = plantLock(directory, record.key, process.ppid, 0, thisMachine())
    const updating = store.update({ ...record, version: 2 }, 1)
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect((await store.get(record.key))?.version).toBe(1)
    rmSync(entry, { recursive: true })
    expect(await updating).toBe(true)
    expect(warnings).toEqual([])
  })

  test('an owner whose lock was broken loses its write instead of racing the new owner', async () => {
    const path = join(mkdtempSync(join(root, 'lock-')), 'k.lock')
    const breaks: string[] = []
    const policy = { staleMs: 100, onBreak: (message: string) => breaks.push(message) }
    const first = await takeLock(path, policy, true)
    expect(await first?.stillHeld()).toBe(true)
    const second = await takeLock(path, policy, true)
    expect(breaks).toHaveLength(1)
    expect(await first?.stillHeld()).toBe(false)
    expect(await second?.stillHeld()).toBe(true)
    await first?.release()
    expect(await second?.stillHeld()).toBe(true)
    expect(await takeLock(path, policy, false)).toBeNull()
    await second?.release()
    expect(readdirSync(join(path, '..'))).toEqual([])
  })

  test('a store write under a lock that was broken meanwhile is refused: the file of the new owner stands', async () => {
    const { store, clock, directory } = open({ lockStaleMs: 100 })
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    const file = fileOf(directory, record.key)
    const before = readFileSync(file, 'utf8')
    const breaks: string[] = []
    const policy = { staleMs: 100, onBreak: (message: string) => breaks.push(message) }
    // The old owner takes the key's lock; a new owner breaks it (a lock this thread left is broken at once).
    const old = await takeLock(`${file}${LOCK_SUFFIX}`, policy, true)
    const fresh = await takeLock(`${file}${LOCK_SUFFIX}`, policy, true)
    expect(breaks).toHaveLength(1)
    // The old owner goes on with the store's own write of the key, as if it had been stalled until now.
    const write = (store as unknown as { write(r: SessionRecord, t: boolean, h: unknown): Promise<void> })
      .write
    await expect(
      write.call(store, { ...record, version: 2, payload: 'written late' }, false, { lock: old, syncs: [] }),
    ).rejects.toThrow(/broken while held/)
    expect(readFileSync(file, 'utf8')).toBe(before)
    expect(leftovers(directory).filter((path) => path.endsWith('.tmp'))).toEqual([])
    await old?.release()
    await fresh?.release()
    expect((await store.get(record.key))?.version).toBe(1)
  })
})

/** A FileStore in a child process, driven over IPC (a bare store, no manager: see the manager tests below). */
interface StoreChild {
  readonly pid: number
  call<T>(op: string, ...args: unknown[]): Promise<T>
  kill(): Promise<void>
}

const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
let childScript = ''
beforeAll(() => {
  childScript = join(root, 'store-child.ts')
  writeFileSync(
    childScript,
    `
import { FileStore } from ${JSON.stringify(new URL('./index.ts', import.meta.url).href)}
import { takeLock } from ${JSON.stringify(new URL('./lock.ts', import.meta.url).href)}
const { directory } = JSON.parse(process.argv[2])
const warnings = []
const store = new FileStore({ directory, pruneIntervalMs: 0, onWarning: (warning) => warnings.push(warning.message) })
const ops = {
  create: (records) => Promise.all(records.map((record) => store.create(record))),
  update: (pairs) => Promise.all(pairs.map(([record, expected]) => store.update(record, expected))),
  get: (key) => store.get(key),
  warnings: () => warnings,
  hold: async (path) => { await takeLock(path, { staleMs: 600000, onBreak() {} }, true); return 'held' },
  // Updates every key again and again, until killed.
  hammer: (keys) => {
    for (const key of keys) {
      void (async () => {
        for (let i = 0; ; i++) {
          const current = await store.get(key)
          if (current) await store.update({ ...current, version: current.version + 1, payload: 'p' + i }, current.version)
        }
      })()
    }
    return 'started'
  },
}
process.on('message', async ({ id, op, args }) => {
  try {
    process.send({ id, ok: true, value: (await ops[op](...args)) ?? null })
  } catch (error) {
    process.send({ id, ok: false, error: String(error?.stack ?? error) })
  }
})
process.on('disconnect', () => store.close().then(() => process.exit(0)))
process.send({ ready: true })
`,
  )
})

async function startChild(directory: string): Promise<StoreChild> {
  const child: ChildProcess = fork(childScript, [JSON.stringify({ directory })], {
    execArgv: ['--import', TSX],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>()
  let next = 1
  await new Promise<void>((resolve, reject) => {
    child.on(
      'message',
      (message: { ready?: true; id: number; ok: boolean; value?: unknown; error?: string }) => {
        if (message.ready) return resolve()
        const call = pending.get(message.id)
        pending.delete(message.id)
        if (message.ok) call?.resolve(message.value)
        else call?.reject(new Error(message.error))
      },
    )
    exited.then(() => {
      reject(new Error('store child exited'))
      for (const call of pending.values()) call.reject(new Error('store child exited'))
    })
  })
  const kill = async () => {
    child.kill('SIGKILL')
    await exited
  }
  cleanups.push(kill)
  return {
    pid: child.pid as number,
    call: <T>(op: string, ...args: unknown[]) =>
      new Promise<T>((resolve, reject) => {
        const id = next++
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
        child.send({ id, op, args })
      }),
    kill,
  }
}

describe('FileStore across processes (two stores on one folder)', () => {
  test('racing creates and updates on the same keys: exactly one winner every time', async () => {
    const { store, directory, warnings } = open({ clock: systemClock })
    const child = await startChild(directory)
    const keys = Array.from({ length: 100 }, randomStoreKey)
    const mine = keys.map((key) => makeRecord(systemClock, { key, payload: 'parent' }))
    const theirs = keys.map((key) => makeRecord(systemClock, { key, payload: 'child' }))
    const [here, there] = await Promise.all([
      Promise.all(mine.map((record) => store.create(record))),
      child.call<boolean[]>('create', theirs),
    ])
    for (const [i, key] of keys.entries()) {
      expect(Number(here[i]) + Number(there[i]), key).toBe(1)
      expect((await store.get(key))?.payload).toBe(here[i] ? 'parent' : 'child')
    }
    let current = await Promise.all(keys.map(async (key) => (await store.get(key)) as SessionRecord))
    for (let round = 1; round <= 10; round++) {
      const next = (side: string) =>
        current.map((record) => ({ ...record, version: record.version + 1, payload: `${side}-${round}` }))
      const [wonHere, wonThere] = await Promise.all([
        Promise.all(next('parent').map((record) => store.update(record, round))),
        child.call<boolean[]>(
          'update',
          next('child').map((record) => [record, round]),
        ),
      ])
      current = await Promise.all(keys.map(async (key) => (await store.get(key)) as SessionRecord))
      for (const [i, record] of current.entries()) {
        expect(Number(wonHere[i]) + Number(wonThere[i]), `round ${round}`).toBe(1)
        expect(record).toMatchObject({
          version: round + 1,
          payload: `${wonHere[i] ? 'parent' : 'child'}-${round}`,
        })
      }
    }
    expect(warnings).toEqual([])
    expect(await child.call('warnings')).toEqual([])
    expect(leftovers(directory)).toEqual([])
  })

  test('a process killed while it holds a lock wedges nothing: its lock is broken at once', async () => {
    const { store, directory, warnings } = open({ clock: systemClock, lockStaleMs: 60_000 })
    const record = makeRecord(systemClock)
    expect(await store.create(record)).toBe(true)
    const child = await startChild(directory)
    expect(await child.call('hold', `${fileOf(directory, record.key)}.lock`)).toBe('held')
    await child.kill()
    // A lock judged by age alone would hold this update for lockStaleMs (60 s), past the test's timeout.
    expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
    expect(warnings).toEqual([
      expect.stringMatching(new RegExp(`process ${child.pid} .*that process is gone`)),
    ])
  })

  test('killing a process in the middle of its writes, again and again, loses nothing and wedges nothing', async () => {
    const { store, directory, warnings } = open({ clock: systemClock, lockStaleMs: 60_000 })
    const records = Array.from({ length: 4 }, () => makeRecord(systemClock))
    for (const record of records) expect(await store.create(record)).toBe(true)
    let locksLeft = 0
    // At least 6 kills, and more until one has landed while a lock was held (a loaded machine may
    // schedule the first kills between writes).
    for (let run = 0; run < 6 || (locksLeft === 0 && run < 40); run++) {
      const child = await startChild(directory)
      await child.call(
        'hammer',
        records.map((record) => record.key),
      )
      await new Promise((resolve) => setTimeout(resolve, 80 + 40 * (run % 6)))
      await child.kill()
      locksLeft += leftovers(directory).filter((path) => /\.lock\/[^/]+$/.test(path)).length
      // A wedged key would hold these updates for lockStaleMs (60 s) each, past the test's timeout.
      for (const record of records) {
        const current = (await store.get(record.key)) as SessionRecord
        expect(current).not.toBeNull()
        expect(await store.update({ ...current, version: current.version + 1 }, current.version)).toBe(true)
      }
    }
    expect(warnings.every((warning) => /that process is gone/.test(warning))).toBe(true)
    // The kills did land while locks were held (they are most of a write), and each was recovered.
    expect(locksLeft).toBeGreaterThan(0)
    expect(warnings).toHaveLength(locksLeft)
  }, 180_000)
})

describe('FileStore across processes (two managers on one folder)', () => {
  async function shared() {
    const directory = freshFolder()
    const keys = [generateKey()]
    const clock = new ManualClock()
    const store = new FileStore({ directory, clock, pruneIntervalMs: 0 })
    const local = createSessionManager<Record<string, unknown>>({
      cookie: { secure: false },
      store,
      keys,
      clock,
    })
    cleanups.push(() => local.close())
    const remote = await startRemoteManager({
      path: directory,
      store: {
        module: 'src/stores/file/index.ts',
        exportName: 'FileStore',
        options: { directory, pruneIntervalMs: 0 },
      },
      keys,
      time: clock.now(),
      dataKeys: ['n'],
    })
    cleanups.push(() => remote.close())
    const signIn = async (userId: string) => {
      const session = await local.load({})
      session.set('n', 0)
      session.login(userId)
      return cookieHeader((await local.commit(session)).setCookie) as string
    }
    return { directory, local, remote, signIn }
  }

  test('a session created here is read there, and a logout there holds here', async () => {
    const { local, remote, signIn } = await shared()
    const cookie = await signIn('alice')
    expect(await remote.load(cookie)).toMatchObject({ isNew: false, userId: 'alice', data: { n: 0 } })
    expect(await remote.listUserSessions('alice')).toHaveLength(1)
    const loadedBeforeLogout = await local.load({ cookie })
    const { ref } = await remote.load(cookie)
    await remote.act(ref, { kind: 'logout' })
    await remote.commit(ref)
    // A slow request that loaded the session before the logout cannot write it back.
    loadedBeforeLogout.set('n', 99)
    await local.commit(loadedBeforeLogout)
    expect((await local.load({ cookie })).isNew).toBe(true)
    expect((await remote.load(cookie)).isNew).toBe(true)
    expect(await local.listUserSessions('alice')).toEqual([])
  })

  test('100 concurrent increments split across both processes end at exactly 100', async () => {
    const { local, remote, signIn } = await shared()
    const cookie = await signIn('bob')
    const here = Array.from({ length: 50 }, async () => {
      const session = await local.load({ cookie })
      session.update('n', (n) => (n as number) + 1)
      await local.commit(session)
    })
    const there = Array.from({ length: 50 }, async () => {
      const { ref } = await remote.load(cookie)
      await remote.act(ref, { kind: 'inc', key: 'n' })
      await remote.commit(ref)
    })
    await Promise.all([...here, ...there])
    expect((await local.load({ cookie })).get('n')).toBe(100)
    expect((await remote.load(cookie)).data).toEqual({ n: 100 })
  })
})

/**
 * Makes `dir` and everything in it unwritable for real and resolves how, with the undo. Not root:
 * `chmod a-w`. Root ignores permission bits, so `chattr +i` (immutable); where that is not supported,
 * the folder is moved away and a regular file put in its place (then reads fail too).
 */
function freeze(dir: string): { how: string; thaw(): void } {
  if (!isRoot) {
    const paths = [dir, ...tree(dir).map((path) => join(dir, path))]
    const modes = paths.map((path) => statSync(path).mode & 0o777)
    for (const path of paths) chmodSync(path, statSync(path).mode & 0o555)
    const thaw = () => {
      for (const [i, path] of paths.entries()) chmodSync(path, modes[i] as number)
    }
    return { how: 'chmod a-w', thaw }
  }
  try {
    execFileSync('chattr', ['-R', '+i', dir], { stdio: 'ignore' })
    return { how: 'chattr +i', thaw: () => execFileSync('chattr', ['-R', '-i', dir]) }
  } catch {
    renameSync(dir, `${dir}.away`)
    writeFileSync(dir, '')
    let frozen = true
    return {
      how: 'folder replaced by a file',
      thaw: () => {
        if (!frozen) return
        frozen = false
        rmSync(dir)
        renameSync(`${dir}.away`, dir)
      },
    }
  }
}

describe('FileStore faults', () => {
  test('a folder made read-only under running servers: 503s, both processes stay up, service resumes, nothing acknowledged is lost', async () => {
    const directory = freshFolder()
    const clock = new ManualClock()
    const store = new FileStore({ directory, clock, pruneIntervalMs: 0, onWarning: () => {} })
    const h = await harness({ store, clock })
    cleanups.push(() => h.close())
    const remote = await startRemoteManager({
      path: directory,
      store: {
        module: 'src/stores/file/index.ts',
        exportName: 'FileStore',
        options: { directory, pruneIntervalMs: 0 },
      },
      keys: h.keys,
      time: clock.now(),
      dataKeys: ['n'],
    })
    cleanups.push(() => remote.close())

    const clients = Array.from({ length: 10 }, () => h.client())
    for (const [i, client] of clients.entries()) {
      expect((await client.request(`/login?user=user-${i % 3}`)).status).toBe(200)
      expect((await client.request('/inc')).status).toBe(200)
    }
    const frozen = freeze(directory)
    cleanups.push(() => {
      try {
        frozen.thaw()
      } catch {
        // Already thawed.
      }
    })
    try {
      const writes = await Promise.all(clients.map((client) => client.request('/inc')))
      expect(writes.map((response) => response.status)).toEqual(clients.map(() => 503))
      expect((await h.client().request('/set?key=a&value=1')).status).toBe(503)
      expect(h.errors.length).toBeGreaterThan(0)
      expect(h.errors.every((error) => error instanceof StoreError)).toBe(true)
      expect(h.errors[0]).toMatchObject({
        store: 'FileStore',
        cause: expect.objectContaining({ code: expect.any(String) }),
      })
      const error = await remote.revokeUserSessions('user-0').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'ERR_LATCHKEY_STORE' })
      const direct = await store.create(makeRecord(clock)).catch((e: unknown) => e)
      expect(direct).toMatchObject({ store: 'FileStore', operation: 'create' })
      if (frozen.how !== 'folder replaced by a file') {
        // Reads still answer: an unchanged session loads in both processes.
        expect((await clients[0]?.json('/state'))?.body).toMatchObject({ n: 1 })
        expect(await remote.load(`sid=${clients[1]?.cookie}`)).toMatchObject({ isNew: false, data: { n: 1 } })
      }
    } finally {
      frozen.thaw()
    }
    // Service resumes by itself, in both processes, with every acknowledged write in place.
    for (const client of clients) {
      const { response, body } = await client.json('/inc')
      expect(response.status).toBe(200)
      expect(body).toMatchObject({ isNew: false, n: 2 })
    }
    const { ref } = await remote.load(`sid=${clients[2]?.cookie}`)
    await remote.act(ref, { kind: 'inc', key: 'n' })
    await remote.commit(ref)
    expect((await clients[2]?.json('/state'))?.body).toMatchObject({ n: 3 })
    expect(await remote.revokeUserSessions('user-0')).toBe(4)
    // Six sessions are left, each with its pending notice of a timeout, and the four revoked ones each
    // left a notice of why (session.endedBecause).
    expect(await store.count()).toBe(6 + 6 + 4)
    expect(leftovers(directory)).toEqual([])
  })

  test('a full disk, an unwritable file and the like reject with StoreError naming the cause; a failed write did not happen', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    // The session file's folder is replaced by a file: every path into it fails with ENOTDIR.
    const shard = join(fileOf(directory, record.key), '..')
    renameSync(shard, `${shard}.away`)
    writeFileSync(shard, '')
    const error = await store.update({ ...record, version: 2 }, 1).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StoreError)
    expect(error).toMatchObject({ store: 'FileStore', operation: 'update', cause: { code: 'ENOTDIR' } })
    rmSync(shard)
    renameSync(`${shard}.away`, shard)
    expect(await store.get(record.key)).toEqual(record)
    expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
  })
})

describe('FileStore prune', () => {
  test('removes expired records, expired tombstones, their markers and old leftovers; keeps the rest', async () => {
    const { store, clock, directory } = open()
    const live = makeRecord(clock, { userId: 'alice' })
    const expired = makeRecord(clock, { userId: 'alice', idleExpiresAt: clock.now() + MINUTE })
    const tombstone = makeRecord(clock, { idleExpiresAt: clock.now() + MINUTE })
    for (const record of [live, expired, tombstone]) expect(await store.create(record)).toBe(true)
    await store.destroy(tombstone.key)
    const shard = join(fileOf(directory, live.key), '..')
    const oldTemp = join(shard, `${live.key}.${'a'.repeat(22)}.tmp`)
    const newTemp = join(shard, `${live.key}.${'b'.repeat(22)}.tmp`)
    const oldStaging = join(shard, `${live.key}.lock.${'c'.repeat(22)}.new`)
    const freeLock = join(shard, `${live.key}.lock`)
    const foreign = join(shard, 'README')
    writeFileSync(oldTemp, 'half')
    writeFileSync(newTemp, 'half')
    mkdirSync(oldStaging)
    mkdirSync(freeLock)
    writeFileSync(foreign, 'not ours')
    const hourAgo = (Date.now() - 2 * 3_600_000) / 1000
    utimesSync(oldTemp, hourAgo, hourAgo)
    utimesSync(oldStaging, hourAgo, hourAgo)
    clock.advance(MINUTE)
    expect(await store.prune()).toBe(2)
    expect([oldTemp, oldStaging, freeLock].map(existsSync)).toEqual([false, false, false])
    expect([newTemp, foreign].map(existsSync)).toEqual([true, true])
    expect(existsSync(fileOf(directory, expired.key))).toBe(false)
    const markers = tree(join(directory, 'users')).filter((path) => path.split('/').length === 4)
    expect(markers.map((path) => path.split('/')[3])).toEqual([live.key])
    expect(await store.get(live.key)).toEqual(live)
  })

  test('a key whose lock is held (a write in flight elsewhere) is left for the next prune', async () => {
    const { store, clock, directory } = open()
    const record = makeRecord(clock, { idleExpiresAt: clock.now() + MINUTE })
    expect(await store.create(record)).toBe(true)
    clock.advance(MINUTE)
    const entry = plantLock(directory, record.key, process.ppid, 0, thisMachine())
    expect(await store.prune()).toBe(0)
    expect(existsSync(fileOf(directory, record.key))).toBe(true)
    rmSync(entry, { recursive: true })
    expect(await store.prune()).toBe(1)
    expect(existsSync(fileOf(directory, record.key))).toBe(false)
  })

  test('listByUser filters and cleans stale markers; a marker is never dropped while its key is being written', async () => {
    const { store, clock, directory } = open()
    const kept = makeRecord(clock, { userId: 'alice' })
    const moved = makeRecord(clock, { userId: 'alice' })
    const gone = makeRecord(clock, { userId: 'alice' })
    for (const record of [kept, moved, gone]) expect(await store.create(record)).toBe(true)
    // A crash between writing the record and removing the old marker; a record deleted by hand.
    const aliceMarkers = () => tree(join(directory, 'users')).filter((path) => path.split('/').length === 4)
    const folder = join(directory, 'users', (aliceMarkers()[0] as string).split('/').slice(0, 3).join('/'))
    plant(directory, { ...moved, userId: 'bob' })
    rmSync(fileOf(directory, gone.key))
    expect((await store.listByUser('alice')).map((r) => r.key)).toEqual([kept.key])
    expect(readdirSync(folder)).toEqual([kept.key])
    await store.destroy(kept.key)
    expect(await store.listByUser('alice')).toEqual([])
    expect(existsSync(folder)).toBe(false)
    // A marker whose key is locked (being written) is left for later, not dropped.
    const busy = makeRecord(clock, { userId: 'carol' })
    expect(await store.create(busy)).toBe(true)
    const entry = plantLock(directory, busy.key, process.ppid, 0, thisMachine())
    plant(directory, { ...busy, userId: null })
    expect(await store.listByUser('carol')).toEqual([])
    rmSync(join(entry, '..'), { recursive: true })
    plant(directory, busy)
    expect((await store.listByUser('carol')).map((r) => r.key)).toEqual([busy.key])
  })

  test('a prune of 3 000 expired files yields to the event loop between batches', async () => {
    const { store, clock, directory } = open()
    const survivor = makeRecord(clock)
    expect(await store.create(survivor)).toBe(true)
    for (let i = 0; i < 3_000; i++) {
      plant(directory, makeRecord(clock, { idleExpiresAt: clock.now() + MINUTE }))
    }
    clock.advance(MINUTE)
    let longest = 0
    let ticks = 0
    let last = performance.now()
    const probe = setInterval(() => {
      const now = performance.now()
      longest = Math.max(longest, now - last)
      last = now
      ticks++
    }, 1)
    const started = performance.now()
    try {
      expect(await store.prune()).toBe(3_000)
    } finally {
      clearInterval(probe)
    }
    console.info(
      `prune of 3 000 files: ${Math.round(performance.now() - started)} ms, longest stall ${Math.round(longest)} ms`,
    )
    // The event loop ran timers while the prune was under way (no assertion on wall-clock time).
    expect(ticks).toBeGreaterThan(0)
    expect(await store.count()).toBe(1)
    expect(leftovers(directory)).toEqual([])
  })

  test('pruneIntervalMs prunes on a timer, reports a failing run, and close() stops it', async () => {
    const warnings: string[] = []
    const { store, clock, directory } = open({
      pruneIntervalMs: 20,
      onWarning: (warning) => warnings.push(warning.message),
    })
    const record = makeRecord(clock, { idleExpiresAt: clock.now() + MINUTE })
    expect(await store.create(record)).toBe(true)
    clock.advance(MINUTE)
    const path = fileOf(directory, record.key)
    await expect.poll(() => existsSync(path), { timeout: 2_000 }).toBe(false)
    // The folder replaced by a file: the scheduled prune fails, is reported, and keeps going.
    renameSync(directory, `${directory}.away`)
    writeFileSync(directory, '')
    await expect.poll(() => warnings.length, { timeout: 2_000 }).toBeGreaterThan(1)
    expect(warnings[0]).toMatch(/scheduled prune failed: .*ENOTDIR/)
    await store.close()
    const count = warnings.length
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(warnings.length).toBe(count)
  })
})

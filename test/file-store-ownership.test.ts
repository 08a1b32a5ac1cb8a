/**
 * FileStore trusts no folder another user could write to (issue 14, item 5): such a user could move a
 * session file aside before a logout and back after it, and the logged-out cookie would work again. An
 * existing session folder must belong to this process's user and be writable by nobody else, as ssh
 * demands of its files; the folders the store makes are 0700 whatever the umask; and a foreign entry in
 * a key's lock never wedges that key. Run as root and, in a child process, as the user `nobody`.
 */
import { execFileSync } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, afterEach, describe, expect, test } from 'vitest'
import { ManualClock, systemClock } from '../src/core/clock.js'
import { ConfigError } from '../src/core/errors.js'
import type { SessionRecord } from '../src/core/store.js'
import { FileStore, type FileStoreOptions } from '../src/stores/file/index.js'
import { makeRecord } from '../src/testing/conformance.js'

const NOBODY = 65534
const isRoot = process.getuid?.() === 0
const notRoot = 'needs root (to own folders as another user and to drop to nobody); `id -u` is not 0 here'

// Reachable by `nobody` (0711: it may pass, not list), so that the unprivileged child can use its folders.
const root = mkdtempSync(join(tmpdir(), 'latchkey-ownership-'))
chmodSync(root, 0o711)
afterAll(() => rmSync(root, { recursive: true, force: true }))
let folders = 0

const stores: FileStore[] = []
afterEach(async () => {
  for (const store of stores.splice(0)) await store.close()
})

/** A store on `directory` (not created here), closed after the test, collecting its warnings. */
function open(directory: string, options: Partial<FileStoreOptions> = {}) {
  const warnings: string[] = []
  const clock = new ManualClock()
  const store = new FileStore({
    directory,
    clock,
    pruneIntervalMs: 0,
    onWarning: (warning) => warnings.push(warning.message),
    ...options,
  })
  stores.push(store)
  return { store, clock, warnings }
}

/** A new folder with exactly `mode`, owned by `uid` (this user by default). */
function folder(mode: number, uid?: number): string {
  const path = join(root, `folder-${++folders}`)
  mkdirSync(path)
  chmodSync(path, mode)
  if (uid !== undefined) chownSync(path, uid, uid)
  return path
}

/** The error `build` throws. */
function thrown(build: () => unknown): unknown {
  try {
    build()
  } catch (error) {
    return error
  }
  throw new Error('it did not throw')
}

/** Every folder at and below `path`, with its permission bits. */
function folderModes(path: string): Map<string, number> {
  const paths = [path, ...(readdirSync(path, { recursive: true }) as string[]).map((p) => join(path, p))]
  const modes = new Map<string, number>()
  for (const p of paths) if (statSync(p).isDirectory()) modes.set(p, statSync(p).mode & 0o7777)
  return modes
}

/** The shard folder of `key` under a store folder. */
function shardOf(directory: string, key: string): string {
  return join(directory, 'sessions', key[0] as string, key[1] as string)
}

describe('an existing session folder', () => {
  test.each([
    ['0700', 0o700],
    ['0750', 0o750],
    ['0755', 0o755],
  ])('of this user, mode %s, is accepted', async (_, mode) => {
    const directory = folder(mode)
    const { store, clock } = open(directory)
    const record = makeRecord(clock)
    expect(await store.create(record)).toBe(true)
    expect(await store.get(record.key)).toEqual(record)
    // An existing folder keeps the mode its owner chose.
    expect(statSync(directory).mode & 0o777).toBe(mode)
  })

  test.each([
    ['0770', 0o770, 'its group'],
    ['0777', 0o777, 'its group and others'],
    ['0720', 0o720, 'its group'],
    ['0702', 0o702, 'others'],
  ])('writable by others, mode %s, is refused at construction with the fix', (_, mode, who) => {
    const directory = folder(mode)
    const error = thrown(() => new FileStore({ directory }))
    expect(error).toBeInstanceOf(ConfigError)
    expect(error).toMatchObject({ option: 'directory' })
    expect((error as Error).message).toContain(`${directory} is writable by ${who}`)
    expect((error as Error).message).toContain(`chmod 700 ${directory}`)
  })

  test.skipIf(!isRoot)('owned by another user, even 0700, is refused at construction with the fix', () => {
    const directory = folder(0o700, NOBODY)
    const error = thrown(() => new FileStore({ directory }))
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain(`${directory} belongs to uid ${NOBODY}`)
    expect((error as Error).message).toContain(`chown -R 0 ${directory}`)
  })

  test.each(['sessions', 'users'])('with a %s folder others may write to is refused', (name) => {
    const directory = folder(0o700)
    mkdirSync(join(directory, name))
    chmodSync(join(directory, name), 0o777)
    expect(() => new FileStore({ directory })).toThrow(`${join(directory, name)} is writable by`)
  })

  test('made by another user after construction: the first operation refuses it', async () => {
    const directory = join(root, `later-${++folders}`)
    const { store } = open(directory)
    mkdirSync(directory)
    chmodSync(directory, 0o777)
    const error = await store.get(makeRecord(new ManualClock()).key).catch((e: unknown) => e)
    // The configuration is wrong, not the store down: a ConfigError as it is (answered 500, not 503).
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain(`chmod 700 ${directory}`)
  })
})

describe('a folder below the session folder', () => {
  test('made writable by others after construction: nothing is made below it, the write is refused', async () => {
    const directory = folder(0o700)
    const { store, clock } = open(directory)
    const first = makeRecord(clock)
    expect(await store.create(first)).toBe(true)
    const level1 = join(directory, 'sessions', first.key[0] as string)
    chmodSync(level1, 0o777)
    // A key in the same first-level folder, whose second-level folder does not exist yet.
    const taken = new Set(readdirSync(level1))
    const second = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
      .split('')
      .find((char) => !taken.has(char)) as string
    const record = makeRecord(clock, { key: `${first.key[0]}${second}${first.key.slice(2)}` })
    const error = await store.create(record).catch((e: unknown) => e)
    // The configuration is wrong, not the store down: a ConfigError as it is (answered 500, not 503).
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain(`chmod 700 ${level1}`)
    expect(existsSync(join(level1, second))).toBe(false)
    chmodSync(level1, 0o700)
    expect(await store.create(record)).toBe(true)
  })
})

describe('the folders FileStore makes', () => {
  test('are 0700 whatever the umask', async () => {
    const directory = join(root, `made-${++folders}`)
    // A umask that takes the owner's write bit away: without a chmod the folders would be 0500.
    const umask = process.umask(0o277)
    try {
      const { store, clock } = open(directory)
      expect(await store.create(makeRecord(clock, { userId: 'alice' }))).toBe(true)
    } finally {
      process.umask(umask)
    }
    const modes = folderModes(directory)
    expect(modes.size).toBe(8) // the folder, sessions/k1/k2, users/h1/h2/h
    for (const [path, mode] of modes) expect([path, mode.toString(8)]).toEqual([path, '700'])
  })
})

describe('a foreign entry in a lock never wedges its key', () => {
  const plants: [string, (lock: string) => void][] = [
    ['a file in the lock', (lock) => writeFileSync(join(mkdir(lock), 'junk'), '')],
    ['a folder with a foreign name in the lock', (lock) => mkdir(join(lock, 'junk'))],
    [
      'a folder named like an owner, not empty',
      (lock) => writeFileSync(join(mkdir(join(lock, `${'T'.repeat(22)}.1.0.elsewhere`)), 'x'), ''),
    ],
    ['a file where the lock goes', (lock) => writeFileSync(lock, '')],
    [
      'a lock others may write to, holding a proper entry',
      (lock) => {
        mkdir(join(lock, `${'T'.repeat(22)}.1.0.elsewhere`))
        chmodSync(lock, 0o777)
      },
    ],
  ]
  if (isRoot) {
    plants.push([
      "a lock of another user's, holding a proper entry",
      (lock) => {
        mkdir(join(lock, `${'T'.repeat(22)}.1.0.elsewhere`))
        chownSync(lock, NOBODY, NOBODY)
      },
    ])
  }

  test.each(plants)(
    '%s: broken once a writer has seen it for lockStaleMs, and reported',
    async (_, plant) => {
      const directory = join(root, `locks-${++folders}`)
      const { store, clock, warnings } = open(directory, { lockStaleMs: 50 })
      const record = makeRecord(clock)
      expect(await store.create(record)).toBe(true)
      const lock = join(shardOf(directory, record.key), `${record.key}.lock`)
      plant(lock)
      // A prune (which never waits for a lock) leaves it alone and does not fail on it.
      expect(await store.prune()).toBe(0)
      expect(existsSync(lock)).toBe(true)
      expect(await store.update({ ...record, version: 2 }, 1)).toBe(true)
      expect(await store.get(record.key)).toMatchObject({ version: 2 })
      expect(warnings).toEqual([expect.stringMatching(/^broke the lock .* held for over 50 ms; .*removed$/)])
      expect(readdirSync(shardOf(directory, record.key))).toEqual([record.key])
      // And the key stays writable.
      expect(await store.update({ ...record, version: 3 }, 2)).toBe(true)
    },
  )
})

function mkdir(path: string): string {
  mkdirSync(path, { recursive: true })
  return path
}

/** What the unprivileged child reports for one case. */
type Outcome = { ok: true; warnings: string[] } | { ok: false; name: string; message: string; cause?: string }

const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
const STORE = new URL('../src/stores/file/index.ts', import.meta.url).href

/**
 * Runs FileStore as `nobody` in a child process: it loads the store as root, drops to nobody with a
 * umask that takes the owner's write bit away, then for each case opens a store on the folder and
 * writes `record` (create, or update when the case says so) and reads it back.
 */
function asNobody(cases: Record<string, { directory: string; update?: boolean }>, record: SessionRecord) {
  const script = join(root, 'as-nobody.mts')
  writeFileSync(
    script,
    `
import { FileStore } from ${JSON.stringify(STORE)}
const { cases, record, uid } = JSON.parse(process.argv[2])
process.setgroups([])
process.setgid(uid)
process.setuid(uid)
process.umask(0o277)
const outcomes = {}
for (const [name, { directory, update }] of Object.entries(cases)) {
  const warnings = []
  try {
    const store = new FileStore({ directory, pruneIntervalMs: 0, lockStaleMs: 50, onWarning: (w) => warnings.push(w.message) })
    const written = update ? await store.update({ ...record, version: 2 }, 1) : await store.create(record)
    const read = await store.get(record.key)
    await store.close()
    if (!written || read?.version !== (update ? 2 : 1)) throw new Error('the write did not land')
    outcomes[name] = { ok: true, warnings }
  } catch (error) {
    outcomes[name] = { ok: false, name: error.name, message: error.message, cause: error.cause?.message }
  }
}
process.stdout.write(JSON.stringify(outcomes))
`,
  )
  const output = execFileSync(
    process.execPath,
    ['--import', TSX, script, JSON.stringify({ cases, record, uid: NOBODY })],
    { encoding: 'utf8' },
  )
  return JSON.parse(output) as Record<string, Outcome>
}

/** Gives `path` and everything below it to `uid`. */
function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid)
  for (const entry of readdirSync(path, { recursive: true }) as string[])
    chownSync(join(path, entry), uid, uid)
}

describe('as an unprivileged user', () => {
  if (!isRoot) console.log(`skipping the tests as nobody: ${notRoot}`)

  test.skipIf(!isRoot)('its own folders are accepted and made 0700; others are refused', async () => {
    // The child runs on the system clock.
    const clock = systemClock
    const record = makeRecord(clock)
    const own = folder(0o700, NOBODY)
    const fresh = join(own, 'made-by-nobody')
    const openToAll = folder(0o777, NOBODY)
    const roots = folder(0o755)
    // A folder of nobody's whose key's lock is root's, 0700, with a file inside nobody cannot remove.
    const wedged = join(root, `wedged-${++folders}`)
    const seeded = open(wedged, { clock })
    expect(await seeded.store.create(record)).toBe(true)
    chownTree(wedged, NOBODY)
    const lock = join(shardOf(wedged, record.key), `${record.key}.lock`)
    writeFileSync(join(mkdir(lock), 'junk'), '')
    chmodSync(lock, 0o700)

    const outcomes = asNobody(
      { own: { directory: own }, fresh: { directory: fresh }, openToAll: { directory: openToAll } },
      record,
    )
    expect(outcomes.own).toEqual({ ok: true, warnings: [] })
    expect(outcomes.fresh).toEqual({ ok: true, warnings: [] })
    for (const [path, mode] of folderModes(fresh)) expect([path, mode.toString(8)]).toEqual([path, '700'])
    expect(outcomes.openToAll).toMatchObject({ ok: false, name: 'ConfigError' })
    expect(outcomes.openToAll?.ok === false && outcomes.openToAll.message).toContain(`chmod 700 ${openToAll}`)

    const more = asNobody(
      { roots: { directory: roots }, wedged: { directory: wedged, update: true } },
      record,
    )
    expect(more.roots).toMatchObject({ ok: false, name: 'ConfigError' })
    expect(more.roots?.ok === false && more.roots.message).toContain(`${roots} belongs to uid 0`)
    // The root-owned lock is moved aside (only the shard must be writable for that), and reported.
    expect(more.wedged).toEqual({
      ok: true,
      warnings: [expect.stringMatching(/moved aside to .*\.stale, which this user cannot remove \(EACCES\)/)],
    })
    const shard = readdirSync(shardOf(wedged, record.key))
    expect(shard).toHaveLength(2)
    expect(shard).toContain(record.key)
    expect(shard.filter((name) => /^[\w-]{43}\.lock\.[\w-]{22}\.stale$/.test(name))).toHaveLength(1)
  })
})

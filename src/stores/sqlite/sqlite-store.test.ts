import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, describe, expect, test } from 'vitest'
import { expiryIndexScenario } from '../../../test/support/expiry-index.js'
import { ConfigError, StoreError } from '../../core/errors.js'
import { defineStoreConformance, makeRecord } from '../../testing/conformance.js'
import { ManualClock } from '../../testing/index.js'
import { SqliteStore, type SqliteStoreOptions } from './index.js'

const dir = mkdtempSync(join(tmpdir(), 'latchkey-sqlite-'))
let files = 0
const freshPath = () => join(dir, `store-${++files}.db`)
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/**
 * A `:memory:` store whose database is closed underneath it after it opened: every statement then
 * fails in better-sqlite3 itself ("The database connection is not open"), so the store's real
 * driver-failure path runs, not its own "closed" check. A `:memory:` database cannot be reached from
 * outside the store, hence the one look at its private handle.
 */
async function closedUnderneath(clock: ManualClock): Promise<SqliteStore> {
  const store = new SqliteStore({ path: ':memory:', clock })
  await store.migrate()
  const db = (store as unknown as { db?: unknown }).db
  if (!(db instanceof Database) || !db.open) {
    throw new Error('SqliteStore no longer keeps its open database in `db`: update closedUnderneath()')
  }
  db.close()
  return store
}

defineStoreConformance(
  { describe, test },
  {
    name: 'SqliteStore',
    createStore: (clock) => new SqliteStore({ path: freshPath(), clock }),
    createUnavailableStore: (clock) => new SqliteStore({ path: join(dir, 'missing', 'sessions.db'), clock }),
    // Down until its directory exists: the store never creates directories and retries the open.
    createRecoveringStore(clock) {
      const parent = join(dir, `later-${++files}`)
      return {
        store: new SqliteStore({ path: join(parent, 'sessions.db'), clock }),
        restore: () => mkdirSync(parent),
      }
    },
  },
)

defineStoreConformance(
  { describe, test },
  {
    name: 'SqliteStore in memory',
    createStore: (clock) => new SqliteStore({ path: ':memory:', clock }),
    createUnavailableStore: closedUnderneath,
  },
)

/** A second connection to the store's file, for looking at what the store wrote. */
function inspect(path: string): Database.Database {
  return new Database(path, { fileMustExist: true })
}

describe('SqliteStore', () => {
  test('uses WAL, indexes expires_at and user_id, and records schema version 1', async () => {
    const path = freshPath()
    const store = new SqliteStore({ path, tableName: 'my_sessions' })
    await store.count()
    const db = inspect(path)
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
      const indexed = db
        .prepare<[], { name: string }>(
          `SELECT ii.name FROM pragma_index_list('my_sessions') AS il, pragma_index_info(il.name) AS ii`,
        )
        .all()
        .map((row) => row.name)
      expect(indexed).toEqual(expect.arrayContaining(['key', 'expires_at', 'user_id']))
      const version = db.prepare('SELECT table_name, version FROM latchkey_schema').all()
      expect(version).toEqual([{ table_name: 'my_sessions', version: 1 }])
      expect(statSync(path).mode & 0o777).toBe(0o600)
      expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600)
    } finally {
      db.close()
      await store.close()
    }
  })

  test('schemaSql is the DDL migrate runs', () => {
    const sql = new SqliteStore({ path: ':memory:' }).schemaSql()
    expect(sql).toContain('CREATE TABLE IF NOT EXISTS "latchkey_sessions"')
    expect(sql).toContain(`VALUES ('latchkey_sessions', 1)`)
    const db = new Database(':memory:')
    db.exec(sql)
    expect(db.prepare('SELECT version FROM latchkey_schema').pluck().get()).toBe(1)
    db.close()
  })

  test('a destroyed payload is gone from the database files after a checkpoint', async () => {
    const path = freshPath()
    const clock = new ManualClock()
    const store = new SqliteStore({ path, clock })
    // The marker leads the payload: a shrinking update overwrites a cell's tail, not its head.
    const canary = `canary-${randomBytes(8).toString('hex')}`
    const keep = makeRecord(clock, { payload: 'unrelated' })
    const idleExpiresAt = clock.now() + 60_000
    const record = makeRecord(clock, { payload: `${canary}${'z'.repeat(60)}`, idleExpiresAt })
    // Large enough to spill into overflow pages, which are freed whole.
    const large = makeRecord(clock, { payload: `${canary}${'z'.repeat(10_000)}`, idleExpiresAt })
    for (const created of [keep, record, large]) await store.create(created)
    const onDisk = () => {
      const db = inspect(path)
      db.pragma('wal_checkpoint(TRUNCATE)')
      db.close()
      const contents = [path, `${path}-wal`].map((file) => {
        try {
          return readFileSync(file).toString('latin1')
        } catch {
          return ''
        }
      })
      return contents.join('')
    }
    try {
      expect(onDisk().includes(canary)).toBe(true)
      await store.destroy(record.key)
      await store.destroy(large.key)
      expect(onDisk().includes(canary)).toBe(false)
      clock.advance(60_000)
      expect(await store.prune()).toBe(2)
      expect(onDisk().includes(canary)).toBe(false)
      expect((await store.get(keep.key))?.payload).toBe('unrelated')
    } finally {
      await store.close()
    }
  })

  test.each(['x; DROP TABLE y', 'sessions"', '1table', '', 'a'.repeat(64), 'latchkey_schema', 'a-b'])(
    'refuses the table name %j with a ConfigError',
    (tableName) => {
      const build = () => new SqliteStore({ path: ':memory:', tableName })
      expect(build).toThrow(ConfigError)
      expect(build).toThrow(expect.objectContaining({ option: 'tableName' }))
    },
  )

  test.each([
    ['path', { path: '' }],
    ['busyTimeoutMs', { path: ':memory:', busyTimeoutMs: -1 }],
    ['busyTimeoutMs', { path: ':memory:', busyTimeoutMs: 1.5 }],
    ['pruneIntervalMs', { path: ':memory:', pruneIntervalMs: -1 }],
    ['pruneIntervalMs', { path: ':memory:', pruneIntervalMs: 2 ** 31 }],
    ['onWarning', { path: ':memory:', onWarning: 'console' }],
  ])('refuses a bad %s with a ConfigError', (option, options) => {
    expect(() => new SqliteStore(options as SqliteStoreOptions)).toThrow(expect.objectContaining({ option }))
  })

  test('a missing directory fails with StoreError, then the store works once it exists', async () => {
    const parent = join(dir, `later-${++files}`)
    const path = join(parent, 'sessions.db')
    const clock = new ManualClock()
    const store = new SqliteStore({ path, clock })
    const record = makeRecord(clock)
    try {
      await expect(store.create(record)).rejects.toThrow(StoreError)
      await expect(store.get(record.key)).rejects.toMatchObject({ store: 'SqliteStore', operation: 'get' })
      mkdirSync(parent)
      expect(await store.create(record)).toBe(true)
      expect(await store.get(record.key)).toEqual(record)
    } finally {
      await store.close()
    }
  })

  test('a lock held past busyTimeoutMs gives StoreError, and the store recovers after it is released', async () => {
    const path = freshPath()
    const clock = new ManualClock()
    const store = new SqliteStore({ path, clock, busyTimeoutMs: 50 })
    const before = makeRecord(clock)
    expect(await store.create(before)).toBe(true)
    const other = inspect(path)
    try {
      other.exec('BEGIN EXCLUSIVE')
      const blocked = makeRecord(clock)
      const error: unknown = await store.create(blocked).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(StoreError)
      expect(error).toMatchObject({
        store: 'SqliteStore',
        operation: 'create',
        cause: { code: 'SQLITE_BUSY' },
      })
      // WAL readers are not blocked by a writer.
      expect(await store.get(before.key)).toEqual(before)
      other.exec('COMMIT')
      expect(await store.create(blocked)).toBe(true)
      expect(await store.get(blocked.key)).toEqual(blocked)
    } finally {
      other.close()
      await store.close()
    }
  })

  test('two stores on one file see each other and still let only one create win', async () => {
    const path = freshPath()
    const clock = new ManualClock()
    const a = new SqliteStore({ path, clock })
    const b = new SqliteStore({ path, clock })
    try {
      const record = makeRecord(clock)
      const results = await Promise.all([a.create(record), b.create({ ...record, payload: 'other' })])
      expect(results.filter(Boolean)).toHaveLength(1)
      await a.destroy(record.key)
      expect(await b.update({ ...record, version: 2 }, 1)).toBe(false)
      expect(await b.create(record)).toBe(false)
    } finally {
      await a.close()
      await b.close()
    }
  })

  test('prune deletes a large backlog in batches, letting the event loop run between them', async () => {
    const path = freshPath()
    const clock = new ManualClock()
    const store = new SqliteStore({ path, clock })
    await store.migrate()
    const db = inspect(path)
    const now = clock.now()
    db.prepare(
      `WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 2500)
       INSERT INTO latchkey_sessions (key, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload)
       SELECT 'k' || n, 1, @now, @now, @now + 1, @now + 1, @now + 1, '' FROM i`,
    ).run({ now })
    db.close()
    const live = makeRecord(clock)
    await store.create(live)
    clock.advance(1)
    // better-sqlite3 is synchronous: without a yield between batches nothing else would run until the end.
    let turns = 0
    let pruning = true
    const tick = () => {
      turns++
      if (pruning) setImmediate(tick)
    }
    setImmediate(tick)
    expect(await store.prune()).toBe(2500)
    pruning = false
    expect(turns).toBeGreaterThanOrEqual(2)
    expect(await store.get(live.key)).toEqual(live)
    await store.close()
  })

  test('expires_at moves about once per EXPIRY_SLACK_MS of writes, never before the exact deadline', async () => {
    const clock = new ManualClock()
    const path = freshPath()
    const store = new SqliteStore({ path, clock })
    await store.migrate()
    const db = inspect(path)
    try {
      const select = db.prepare<[string], { e: number }>(
        'SELECT expires_at AS e FROM latchkey_sessions WHERE key = ?',
      )
      await expiryIndexScenario(store, clock, async (key) => Number(select.get(key)?.e))
    } finally {
      db.close()
      await store.close()
    }
  })

  test('list pages through more records than fit in one page', async () => {
    const clock = new ManualClock()
    const store = new SqliteStore({ path: ':memory:', clock })
    const keys = new Set<string>()
    for (let i = 0; i < 1234; i++) {
      const record = makeRecord(clock)
      keys.add(record.key)
      await store.create(record)
    }
    const seen: string[] = []
    for await (const record of store.list()) {
      seen.push(record.key)
      // Writing between pages must not disturb the listing.
      if (seen.length % 400 === 0) await store.touch(record.key, clock.now(), clock.now() + 1000)
    }
    expect(seen).toHaveLength(1234)
    expect(new Set(seen)).toEqual(keys)
    await store.close()
  })
})

describe('SqliteStore durability', () => {
  test("with synchronous 'normal' (the default), every acknowledged write survives the process being killed", async () => {
    const { fork } = await import('node:child_process')
    const { createRequire } = await import('node:module')
    const { pathToFileURL, fileURLToPath } = await import('node:url')
    const path = freshPath()
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
    const writer = fileURLToPath(new URL('../../../test/support/sqlite-writer.ts', import.meta.url))
    const child = fork(writer, [path, 'normal'], { execArgv: ['--import', tsx], stdio: 'ignore' })
    const acknowledged: string[] = []
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject)
      child.on('exit', () => resolve())
      child.on('message', (key) => {
        acknowledged.push(String(key))
        // Killed mid-stream, between one acknowledged write and the next.
        if (acknowledged.length === 300) child.kill('SIGKILL')
      })
    })
    expect(acknowledged.length).toBeGreaterThanOrEqual(300)
    const store = new SqliteStore({ path, pruneIntervalMs: 0 })
    try {
      const missing: string[] = []
      for (const key of acknowledged) if ((await store.get(key)) === null) missing.push(key)
      expect(missing).toEqual([])
    } finally {
      await store.close()
    }
  }, 60_000)

  test("synchronous is 'normal' unless 'full' is asked for; anything else is a ConfigError", async () => {
    for (const [synchronous, expected] of [
      [undefined, 1],
      ['full', 2],
    ] as const) {
      const path = freshPath()
      const store = new SqliteStore({ path, synchronous, pruneIntervalMs: 0 })
      await store.count()
      const db = (store as unknown as { db: Database.Database }).db
      expect(db.pragma('synchronous', { simple: true })).toBe(expected)
      await store.close()
    }
    expect(() => new SqliteStore({ path: freshPath(), synchronous: 'off' as never })).toThrow(ConfigError)
  })
})

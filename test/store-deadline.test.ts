/**
 * The deadline on every store operation. A store that stops answering without closing its
 * connections (a partition, a frozen server) must fail the request with an unavailable `StoreError`
 * (503) within the deadline, not hold it until TCP gives up; and once the server answers again the
 * store must work without a restart, its pool not short of a slot.
 *
 * Each server store runs behind a TCP proxy that freezes (holds every byte, closes nothing): during a
 * read, and during a write, through the store and through a commit of the node adapter. A write cut off
 * may still reach the server once the link thaws: it lands whole or not at all, and the next write
 * from the old version loses its compare-and-set to it (stores.md, Deadlines). At the manager, a
 * custom store whose promise never settles is cut off by `storeTimeoutMs`.
 */
import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { systemClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import { ConfigError, isUnavailableError, StoreError } from '../src/core/errors.js'
import type { SessionRecord, SessionStore } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { MySqlStore } from '../src/stores/mysql/index.js'
import { PostgresStore } from '../src/stores/postgres/index.js'
import { RedisStore } from '../src/stores/redis/index.js'
import type { BundledStore } from '../src/stores/shared.js'
import { makeRecord, randomStoreKey } from '../src/testing/conformance.js'
import { Client, serve } from './support/http.js'
import { describeWithService, SERVICE_URLS, serverServices } from './support/services.js'
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js'

/** The store's deadline in these tests: short, so a frozen server is noticed quickly. */
const DEADLINE_MS = 300
/** Connections in each pool under test. */
const POOL_SIZE = 2
/** A vitest timeout well past every deadline here: a store that never gives up fails the test. */
const TEST_TIMEOUT_MS = 20_000

const { postgres, mariadb, redis } = await serverServices()

/** A URL with its port replaced by the proxy's. */
function throughProxy(url: string, proxy: TcpProxy): string {
  const parsed = new URL(url)
  parsed.port = String(proxy.port)
  return parsed.toString()
}

/** A fresh table name, so tests never share rows. */
const freshTable = () =>
  `latchkey_deadline_${randomStoreKey()
    .slice(0, 10)
    .replace(/[^A-Za-z0-9]/g, '_')}`

/** Rejects with an unavailable `StoreError` naming `operation`, however long the driver would wait. */
async function expectUnavailable(pending: Promise<unknown>, operation: string): Promise<void> {
  const error = await pending.then(
    () => new Error('resolved, but the server was frozen'),
    (rejection: unknown) => rejection,
  )
  expect(error).toBeInstanceOf(StoreError)
  expect(isUnavailableError(error)).toBe(true)
  expect((error as StoreError).operation).toBe(operation)
}

/**
 * The scenario every server store goes through: it answers; frozen, `POOL_SIZE` operations at once
 * each reject within its deadline, and `openConnections` (when the test sees the store's pool) says
 * none of their connections is kept, neither checked out nor back in the pool to be handed out again;
 * thawed, `POOL_SIZE` operations at once all succeed.
 */
async function freezeAndThaw(
  proxy: TcpProxy,
  store: BundledStore,
  openConnections?: () => number,
): Promise<void> {
  const records = Array.from({ length: POOL_SIZE }, () => makeRecord(systemClock))
  // Warm: every connection of the pool opened, and each record stored.
  expect(await Promise.all(records.map((record) => store.create(record)))).toEqual(records.map(() => true))

  proxy.freeze()
  await Promise.all(records.map((record) => expectUnavailable(store.get(record.key), 'get')))
  if (openConnections) expect(openConnections()).toBe(0)

  proxy.thaw()
  const after = await Promise.all(records.map((record) => store.get(record.key)))
  expect(after).toEqual(records)
  // And the store writes again.
  const next = { ...(records[0] as (typeof records)[0]), version: 2, payload: 'after the thaw' }
  expect(await store.update(next, 1)).toBe(true)
  expect(await store.get(next.key)).toEqual(next)
}

/** `actual` is one of `candidates`, whole: a record with a field of another mixed in matches none. */
function expectOneOf(actual: SessionRecord | null, ...candidates: (SessionRecord | null)[]): void {
  expect(candidates).toContainEqual(actual)
}

/**
 * The scenario of a write cut off: frozen, an update and a create (of a signed-in record: Redis indexes
 * it first, a second command) each reject within the deadline; thawed, each record is whole, at its
 * old version or its new one (what the server had been sent may still land, whole, now or a moment
 * later), and the store writes again: a write from the version it read wins its compare-and-set, or
 * loses it only to the late write, which is then there, whole.
 */
async function freezeDuringWrites(proxy: TcpProxy, store: BundledStore): Promise<void> {
  const record = makeRecord(systemClock)
  const other = makeRecord(systemClock)
  // Warm: POOL_SIZE connections open, so that the two writes below need no new one.
  expect(await Promise.all([store.create(record), store.create(other)])).toEqual([true, true])
  const next = { ...record, version: 2, lastSeenAt: record.lastSeenAt + 1, payload: 'written while frozen' }
  const fresh = makeRecord(systemClock, { userId: 'ann' })

  proxy.freeze()
  await Promise.all([
    expectUnavailable(store.update(next, 1), 'update'),
    expectUnavailable(store.create(fresh), 'create'),
  ])
  proxy.thaw()

  expectOneOf(await store.get(record.key), record, next)
  expectOneOf(await store.get(fresh.key), null, fresh)

  const after = (from: SessionRecord) => ({ ...from, version: from.version + 1, payload: 'after the thaw' })
  let current = (await store.get(record.key)) as SessionRecord
  if (!(await store.update(after(current), current.version))) {
    current = (await store.get(record.key)) as SessionRecord
    expect(current).toEqual(next)
    expect(await store.update(after(current), current.version)).toBe(true)
  }
  // The late update (from version 1) can no longer land over it.
  expect(await store.get(record.key)).toEqual(after(current))
  // Created by this call or by the late one: the same record either way.
  await store.create(fresh)
  expect(await store.get(fresh.key)).toEqual(fresh)
  expect(await store.get(other.key)).toEqual(other)
}

/**
 * The scenario of a commit cut off, through `withSessions`: the link freezes after the session was
 * read, so the commit's write is what hangs. The request is answered 503 with `Retry-After` and no
 * `Set-Cookie` once the store's deadline passes (the manager's `storeTimeoutMs` is set to its largest,
 * out of the way); thawed, the session is whole (one visit or two, as the late write landed or not),
 * and the next request is served and saved.
 */
async function freezeDuringCommit(proxy: TcpProxy, store: BundledStore): Promise<void> {
  const manager = createSessionManager({
    store,
    keys: [generateKey()],
    cookie: { secure: false },
    storeTimeoutMs: 60_000,
  })
  let freezeBeforeCommit = false
  const errors: unknown[] = []
  const served = await serve(
    manager,
    (_req, res, session) => {
      const visits = ((session.get('visits') as number | undefined) ?? 0) + 1
      session.set('visits', visits)
      if (freezeBeforeCommit) proxy.freeze()
      res.end(String(visits))
    },
    errors,
  )
  try {
    const client = new Client(served.url)
    expect(await (await client.request('/')).text()).toBe('1')
    const id = client.cookie
    expect(id).toBeDefined()

    freezeBeforeCommit = true
    const refused = await client.request('/')
    freezeBeforeCommit = false
    proxy.thaw()
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('1')
    expect(refused.headers.getSetCookie()).toEqual([])
    expect(await refused.text()).not.toBe('2')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(StoreError)
    expect(isUnavailableError(errors[0])).toBe(true)
    expect(client.cookie).toBe(id)

    const loaded = await manager.load({ cookie: `sid=${id}` })
    expect(loaded.isNew).toBe(false)
    expect([1, 2]).toContain(loaded.get('visits'))

    // Served and saved; a late write landing meanwhile costs this commit a replay, never its change.
    const served2 = await client.request('/')
    expect(served2.status).toBe(200)
    const visits = Number(await served2.text())
    expect([2, 3]).toContain(visits)
    expect((await manager.load({ cookie: `sid=${id}` })).get('visits')).toBe(visits)
    expect(errors).toHaveLength(1)
  } finally {
    await served.close()
  }
}

/**
 * The tests of a store frozen mid-write, on the stores `withStore` opens through the proxy `link()`
 * gives: a write (update, create) through the store, and a commit through the node adapter.
 */
function writeFreezeTests(
  link: () => TcpProxy,
  withStore: (scenario: (store: BundledStore) => Promise<void>) => Promise<void>,
): void {
  test(
    'a write frozen mid-way (update, create) rejects within commandTimeoutMs; thawed, each record is whole and the store writes again',
    () => withStore((store) => freezeDuringWrites(link(), store)),
    TEST_TIMEOUT_MS,
  )

  test(
    'a commit frozen mid-way through the node adapter: 503, Retry-After, no Set-Cookie; thawed, the session is whole',
    () => withStore((store) => freezeDuringCommit(link(), store)),
    TEST_TIMEOUT_MS,
  )
}

describeWithService(postgres, 'PostgresStore behind a frozen link', () => {
  let proxy: TcpProxy
  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(SERVICE_URLS.postgres).port || 5432))
  })
  afterAll(() => proxy.close())
  // A test that failed while frozen leaves the next one a link that answers.
  afterEach(() => proxy.thaw())

  /** Runs `scenario` on a store with its own pool through the proxy, with the short deadline. */
  async function withOwnPool(scenario: (store: PostgresStore) => Promise<void>): Promise<void> {
    const store = new PostgresStore({
      connectionString: throughProxy(SERVICE_URLS.postgres, proxy),
      tableName: freshTable(),
      commandTimeoutMs: DEADLINE_MS,
      pruneIntervalMs: 0,
      onWarning: () => {},
    })
    try {
      await store.migrate()
      await scenario(store)
    } finally {
      await store.close()
    }
  }

  test(
    'its own pool: an operation rejects within commandTimeoutMs, and the store answers after the thaw',
    () => withOwnPool((store) => freezeAndThaw(proxy, store)),
    TEST_TIMEOUT_MS,
  )

  test(
    'a pool handed in: each timed-out connection is closed, not kept checked out',
    async () => {
      const pool = new pg.Pool({
        connectionString: throughProxy(SERVICE_URLS.postgres, proxy),
        max: POOL_SIZE,
      })
      pool.on('error', () => {})
      const store = new PostgresStore({
        pool,
        tableName: freshTable(),
        commandTimeoutMs: DEADLINE_MS,
        pruneIntervalMs: 0,
      })
      try {
        await store.migrate()
        await freezeAndThaw(proxy, store, () => pool.totalCount)
      } finally {
        await store.close()
        await pool.end()
      }
    },
    TEST_TIMEOUT_MS,
  )

  writeFreezeTests(() => proxy, withOwnPool)

  test('commandTimeoutMs is validated', () => {
    expect(() => new PostgresStore({ connectionString: SERVICE_URLS.postgres, commandTimeoutMs: 0 })).toThrow(
      ConfigError,
    )
  })
})

describeWithService(mariadb, 'MySqlStore behind a frozen link', () => {
  let proxy: TcpProxy
  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(SERVICE_URLS.mysql).port || 3306))
  })
  afterAll(() => proxy.close())
  // A test that failed while frozen leaves the next one a link that answers.
  afterEach(() => proxy.thaw())

  /**
   * Runs `scenario` on a store over a pool of POOL_SIZE connections through the proxy; `scenario` also
   * gets the pool's count of open connections (mysql2 has no public one; this array is its own).
   */
  async function withStore(
    scenario: (store: MySqlStore, connections: () => number) => Promise<void>,
  ): Promise<void> {
    const pool = mysql.createPool({
      uri: throughProxy(SERVICE_URLS.mysql, proxy),
      connectionLimit: POOL_SIZE,
    })
    const slots = (pool as unknown as { pool: { _allConnections: { length: number } } }).pool
    const store = new MySqlStore({
      pool,
      tableName: freshTable(),
      commandTimeoutMs: DEADLINE_MS,
      pruneIntervalMs: 0,
    })
    try {
      await store.migrate()
      await scenario(store, () => slots._allConnections.length)
    } finally {
      await store.close()
      await pool.end()
    }
  }

  test(
    'an operation rejects within commandTimeoutMs, its connection is destroyed, and the store answers after the thaw',
    () => withStore((store, connections) => freezeAndThaw(proxy, store, connections)),
    TEST_TIMEOUT_MS,
  )

  writeFreezeTests(() => proxy, withStore)

  test('commandTimeoutMs is validated', () => {
    expect(() => new MySqlStore({ uri: SERVICE_URLS.mysql, commandTimeoutMs: 1.5 })).toThrow(ConfigError)
  })
})

describeWithService(redis, 'RedisStore behind a frozen link', () => {
  let proxy: TcpProxy
  beforeAll(async () => {
    proxy = await startTcpProxy(Number(new URL(SERVICE_URLS.redis).port || 6379))
  })
  afterAll(() => proxy.close())
  // A test that failed while frozen leaves the next one a link that answers.
  afterEach(() => proxy.thaw())

  test(
    'an operation rejects within commandTimeoutMs, and the store answers after the thaw',
    () => withStore((store) => freezeAndThaw(proxy, store)),
    TEST_TIMEOUT_MS,
  )

  /** Runs `scenario` on a store through the proxy, under a prefix of its own. */
  async function withStore(scenario: (store: RedisStore) => Promise<void>): Promise<void> {
    const store = new RedisStore({
      url: throughProxy(SERVICE_URLS.redis, proxy),
      prefix: `latchkey-deadline:${randomStoreKey()
        .slice(0, 8)
        .replace(/[^A-Za-z0-9]/g, '_')}:`,
      commandTimeoutMs: DEADLINE_MS,
      onWarning: () => {},
    })
    try {
      await scenario(store)
    } finally {
      await store.close()
    }
  }

  writeFreezeTests(() => proxy, withStore)
})

describe('storeTimeoutMs at the manager', () => {
  /** A store whose promise methods never settle, the way a hung custom store behaves. */
  function hungStore(): SessionStore {
    const never = () => new Promise<never>(() => {})
    return { get: never, create: never, update: never, touch: never, destroy: never }
  }

  test(
    'a store call that never settles fails the request with an unavailable StoreError',
    async () => {
      const manager = createSessionManager({
        store: hungStore(),
        keys: [generateKey()],
        cookie: { secure: false },
        storeTimeoutMs: 50,
      })
      const session = await manager.load({})
      session.set('user', 'ann')
      const error = await manager.commit(session).then(
        () => new Error('committed to a store that never answers'),
        (rejection: unknown) => rejection,
      )
      expect(error).toBeInstanceOf(StoreError)
      expect(isUnavailableError(error)).toBe(true)
      expect((error as StoreError).message).toMatch(/storeTimeoutMs/)

      const loaded = await manager.load({ cookie: `sid=${'a'.repeat(43)}` }).then(
        () => new Error('loaded from a store that never answers'),
        (rejection: unknown) => rejection,
      )
      expect(isUnavailableError(loaded)).toBe(true)
    },
    TEST_TIMEOUT_MS,
  )

  test('a store that answers in time is unaffected', async () => {
    const manager = createSessionManager({
      store: new MemoryStore(),
      keys: [generateKey()],
      cookie: { secure: false },
      storeTimeoutMs: 1000,
    })
    const session = await manager.load({})
    session.set('user', 'ann')
    expect((await manager.commit(session)).setCookie).toMatch(/^sid=/)
  })

  test.each([0, -1, 1.5, 60_001, '5000'])('storeTimeoutMs %j is a ConfigError naming it', (value) => {
    let error: unknown
    try {
      createSessionManager({
        store: new MemoryStore(),
        keys: [generateKey()],
        storeTimeoutMs: value as number,
      })
    } catch (thrown) {
      error = thrown
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).option).toBe('storeTimeoutMs')
  })
})

import { randomBytes } from 'node:crypto'
import mysql, { type Pool, type RowDataPacket } from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { cookieHeader, startRemoteManager } from '../../../test/support/remote.js'
import { describeWithService, SERVICE_URLS, service } from '../../../test/support/services.js'
import { harness } from '../../../test/support/setup.js'
import { closedPort, startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy.js'
import { defineTwoProcessTests } from '../../../test/support/two-processes.js'
import { ManualClock } from '../../core/clock.js'
import { generateKey } from '../../core/crypto.js'
import { ConfigError, StoreError } from '../../core/errors.js'
import { defineStoreConformance, makeRecord, randomStoreKey } from '../../testing/conformance.js'
import { PRUNE_BATCH_SIZE } from '../sql/queries.js'
import { MySqlStore, type MySqlStoreOptions } from './index.js'

const URI = SERVICE_URLS.mysql
const status = await service('MariaDB', URI, async () => {
  const connection = await mysql.createConnection({ uri: URI, connectTimeout: 4000 })
  try {
    await connection.query('SELECT 1')
  } finally {
    await connection.end().catch(() => {})
  }
})

/** Every table of this run is `latchkey_t<run>_<n>`, dropped at the end. */
const run = randomBytes(4).toString('hex')
let tables = 0
const freshTable = () => `latchkey_t${run}_${++tables}`
const serverPort = Number(new URL(URI).port || 3306)

/** The test server's URI with another port. */
function uriWith(port: number): string {
  const url = new URL(URI)
  url.port = String(port)
  return url.href
}

const quiet = { onWarning: () => {} }

describeWithService(status, 'MySqlStore', () => {
  let admin: Pool
  const proxies: TcpProxy[] = []
  beforeAll(() => {
    admin = mysql.createPool({ uri: URI, connectionLimit: 4 })
  })
  afterAll(async () => {
    for (const proxy of proxies) await proxy.close()
    const names = Array.from({ length: tables }, (_, i) => `latchkey_t${run}_${i + 1}`)
    for (const name of names) await admin.query(`DROP TABLE IF EXISTS \`${name}\``)
    await admin.query('DELETE FROM latchkey_schema WHERE table_name IN (?)', [names]).catch(() => {})
    await admin.end()
  })

  const open = (options: Partial<MySqlStoreOptions> = {}) =>
    new MySqlStore({ uri: URI, tableName: freshTable(), ...quiet, ...options })

  async function rows(sql: string, values: unknown[] = []): Promise<RowDataPacket[]> {
    return (await admin.query<RowDataPacket[]>(sql, values))[0]
  }

  defineStoreConformance(
    { describe, test },
    {
      name: 'MySqlStore',
      createStore: (clock) => open({ clock }),
      createUnavailableStore: async (clock) => open({ clock, uri: uriWith(await closedPort()) }),
      // Down behind a proxy that cuts every connection until restore().
      async createRecoveringStore(clock) {
        const proxy = await startTcpProxy(serverPort, { up: false })
        proxies.push(proxy)
        return { store: open({ clock, uri: uriWith(proxy.port) }), restore: () => proxy.up() }
      },
    },
  )

  describe('schema', () => {
    test('ascii_bin key, utf8mb4 user and payload, indexes on expires_at and user_id, version 1 recorded', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      try {
        await store.count()
        const columns = await rows(
          `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, COLLATION_NAME AS collation
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`,
          [tableName],
        )
        const byName = Object.fromEntries(
          columns.map((column) => [column.name, [column.type, column.collation]]),
        )
        expect(byName).toMatchObject({
          key: ['varchar(64)', 'ascii_bin'],
          user_id: ['varchar(255)', 'utf8mb4_bin'],
          payload: ['longtext', 'utf8mb4_bin'],
          expires_at: ['bigint(20)', null],
        })
        const indexes = await rows(
          `SELECT INDEX_NAME AS name, COLUMN_NAME AS columnName FROM information_schema.STATISTICS
           WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`,
          [tableName],
        )
        expect(indexes.map((index) => index.columnName).sort()).toEqual(['expires_at', 'key', 'user_id'])
        expect(await rows('SELECT version FROM latchkey_schema WHERE table_name = ?', [tableName])).toEqual([
          { version: 1 },
        ])
      } finally {
        await store.close()
      }
    })

    test('schemaSql applied by hand is what the store uses, and migrate() then changes nothing', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      const multi = await mysql.createConnection({ uri: URI, multipleStatements: true })
      try {
        const sql = store.schemaSql()
        expect(sql).toContain(`CREATE TABLE IF NOT EXISTS \`${tableName}\``)
        expect(sql).toContain(`VALUES ('${tableName}', 1)`)
        await multi.query(sql)
        const clock = new ManualClock()
        const record = makeRecord(clock, { userId: 'alice' })
        const other = open({ tableName, clock })
        try {
          expect(await other.create(record)).toBe(true)
          await other.migrate()
          expect(await other.get(record.key)).toEqual(record)
        } finally {
          await other.close()
        }
      } finally {
        await multi.end()
        await store.close()
      }
    })

    test('a table at a newer schema version than this code knows is refused with StoreError', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      await store.migrate()
      await store.close()
      await admin.query('UPDATE latchkey_schema SET version = 2 WHERE table_name = ?', [tableName])
      const newer = open({ tableName })
      try {
        await expect(newer.count()).rejects.toThrow(/schema version 2; this latchkey knows up to 1/)
        await expect(newer.migrate()).rejects.toMatchObject({ operation: 'migrate', store: 'MySqlStore' })
      } finally {
        await newer.close()
      }
    })

    test('stores migrating one fresh table at once all succeed and record it once', async () => {
      const tableName = freshTable()
      const stores = Array.from({ length: 4 }, () => open({ tableName }))
      try {
        await Promise.all(stores.map((store) => store.migrate()))
        expect(await rows('SELECT version FROM latchkey_schema WHERE table_name = ?', [tableName])).toEqual([
          { version: 1 },
        ])
      } finally {
        for (const store of stores) await store.close()
      }
    })
  })

  describe('exact matching', () => {
    test('user IDs that differ only by trailing spaces are different users', async () => {
      const clock = new ManualClock()
      const store = open({ clock })
      try {
        const alice = makeRecord(clock, { userId: 'alice' })
        const spaced = makeRecord(clock, { userId: 'alice  ' })
        for (const record of [alice, spaced]) expect(await store.create(record)).toBe(true)
        expect((await store.listByUser('alice')).map((record) => record.key)).toEqual([alice.key])
        expect((await store.listByUser('alice  ')).map((record) => record.key)).toEqual([spaced.key])
        expect(await store.listByUser('alice ')).toEqual([])
        expect(await store.destroyByUser('alice')).toBe(1)
        expect(await store.get(spaced.key)).toEqual(spaced)
      } finally {
        await store.close()
      }
    })

    test('a key the ascii key column cannot hold exactly reads as missing and is never written', async () => {
      const clock = new ManualClock()
      const store = open({ clock })
      try {
        const stored = makeRecord(clock)
        expect(await store.create(stored)).toBe(true)
        for (const key of [
          `${stored.key.slice(0, 42)}\u00e9`,
          `${stored.key}${'x'.repeat(22)}`,
          `${stored.key} `,
        ]) {
          expect(await store.get(key)).toBeNull()
          expect(await store.create(makeRecord(clock, { key }))).toBe(false)
          expect(await store.update(makeRecord(clock, { key, version: 2 }), 1)).toBe(false)
          await store.touch(key, clock.now(), clock.now() + 1)
          await store.destroy(key)
        }
        expect(await store.count()).toBe(1)
        expect(await store.get(stored.key)).toEqual(stored)
        expect(await store.get(randomStoreKey())).toBeNull()
      } finally {
        await store.close()
      }
    })
  })

  describe('options', () => {
    test.each([
      'sessions`; DROP TABLE users; --',
      'sessions"',
      "sessions'",
      'a;b',
      'a--b',
      'test..sessions',
      'test.sessions',
      'a/b',
      'my sessions',
      '',
      'latchkey_schema',
      'a'.repeat(54),
    ])('refuses the table name %j with a ConfigError', (tableName) => {
      const build = () => new MySqlStore({ uri: URI, tableName })
      expect(build).toThrow(ConfigError)
      expect(build).toThrow(expect.objectContaining({ option: 'tableName' }))
    })

    test.each([
      ['pool', {}],
      ['pool', { uri: URI, pool: mysql.createPool({ uri: URI }) }],
      ['pool', { pool: {} as Pool }],
      ['uri', { uri: 'postgres://localhost/test' }],
      ['poolOptions', { poolOptions: 'host=localhost' }],
      ['pruneIntervalMs', { uri: URI, pruneIntervalMs: -1 }],
      ['onWarning', { uri: URI, onWarning: 42 }],
    ])('refuses a bad %s with a ConfigError', (option, options) => {
      expect(() => new MySqlStore(options as MySqlStoreOptions)).toThrow(expect.objectContaining({ option }))
    })

    test('a mariadb:// URI, and pool options on their own, open the same server', async () => {
      const clock = new ManualClock()
      const { hostname, port, username, pathname } = new URL(URI)
      const tableName = freshTable()
      const record = makeRecord(clock)
      const byUri = open({ clock, tableName, uri: URI.replace(/^mysql:/, 'mariadb:') })
      const byOptions = open({
        clock,
        tableName,
        uri: undefined,
        poolOptions: {
          host: hostname,
          port: Number(port || 3306),
          user: username,
          database: pathname.slice(1),
        },
      })
      try {
        expect(await byUri.create(record)).toBe(true)
        expect(await byOptions.get(record.key)).toEqual(record)
      } finally {
        await byUri.close()
        await byOptions.close()
      }
    })

    test('a pool the user owns stays open after close(), and the closed store rejects', async () => {
      const pool = mysql.createPool({ uri: URI })
      const clock = new ManualClock()
      const store = new MySqlStore({ pool, tableName: freshTable(), clock })
      try {
        const record = makeRecord(clock)
        expect(await store.create(record)).toBe(true)
        await store.close()
        await expect(store.get(record.key)).rejects.toMatchObject({ operation: 'get', store: 'MySqlStore' })
        expect((await pool.query<RowDataPacket[]>('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }])
      } finally {
        await pool.end()
      }
    })
  })

  describe('prune', () => {
    test('deletes a large backlog in batches of PRUNE_BATCH_SIZE, one short statement each', async () => {
      const pool = mysql.createPool({ uri: URI })
      const clock = new ManualClock()
      const tableName = freshTable()
      const store = new MySqlStore({ pool, tableName, clock })
      try {
        await store.migrate()
        const expired = 2 * PRUNE_BATCH_SIZE + 500
        const now = clock.now()
        const values = Array.from({ length: expired }, (_, i) => [
          `k${i}`,
          1,
          now,
          now,
          now + 1,
          now + 1,
          now + 1,
          '',
        ])
        await admin.query(
          `INSERT INTO \`${tableName}\` (\`key\`, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload) VALUES ?`,
          [values],
        )
        const live = makeRecord(clock)
        await store.create(live)
        clock.advance(1)
        const execute = vi.spyOn(pool, 'execute')
        expect(await store.prune()).toBe(expired)
        const deletes = execute.mock.calls.filter(([options]) =>
          /^DELETE/.test((options as { sql: string }).sql),
        )
        expect(deletes).toHaveLength(3)
        expect(await store.count()).toBe(1)
        expect(await store.get(live.key)).toEqual(live)
      } finally {
        await store.close()
        await pool.end()
      }
    })

    test('list() pages through more rows than fit in one page, in key order', async () => {
      const clock = new ManualClock()
      const tableName = freshTable()
      const store = open({ clock, tableName })
      try {
        await store.migrate()
        const now = clock.now()
        const later = now + 60_000
        const values = Array.from({ length: 1234 }, (_, i) => [
          `k${String(i).padStart(5, '0')}`,
          1,
          now,
          now,
          later,
          later,
          later,
          'x',
        ])
        await admin.query(
          `INSERT INTO \`${tableName}\` (\`key\`, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload) VALUES ?`,
          [values],
        )
        const keys: string[] = []
        for await (const record of store.list()) keys.push(record.key)
        expect(keys).toHaveLength(1234)
        expect(keys).toEqual([...keys].sort())
        expect(new Set(keys).size).toBe(1234)
      } finally {
        await store.close()
      }
    })

    test('scheduled pruning deletes expired rows; its failures go to onWarning', async () => {
      const proxy = await startTcpProxy(serverPort)
      proxies.push(proxy)
      const clock = new ManualClock()
      const tableName = freshTable()
      const warnings: Error[] = []
      const store = open({
        clock,
        tableName,
        uri: uriWith(proxy.port),
        pruneIntervalMs: 20,
        onWarning: (warning) => warnings.push(warning),
      })
      try {
        await store.create(makeRecord(clock, { idleExpiresAt: clock.now() + 1000 }))
        clock.advance(1000)
        await vi.waitFor(
          async () => expect(await rows(`SELECT COUNT(*) AS n FROM \`${tableName}\``)).toEqual([{ n: 0 }]),
          { timeout: 5000, interval: 20 },
        )
        proxy.down()
        await vi.waitFor(() => expect(warnings.length).toBeGreaterThan(1), { timeout: 5000, interval: 20 })
        for (const warning of warnings)
          expect(warning).toMatchObject({ store: 'MySqlStore', operation: 'prune' })
        expect(warnings[0]).toBeInstanceOf(StoreError)
      } finally {
        // Back up first: ending a pool whose connections the proxy cut may report the lost connection.
        proxy.up()
        await store.close().catch(() => {})
      }
    })
  })

  describe('two processes', () => {
    defineTwoProcessTests(() => {
      const tableName = freshTable()
      const options = { uri: URI, tableName, pruneIntervalMs: 0 }
      return {
        local: (clock) => new MySqlStore({ ...options, clock }),
        remote: { module: 'src/stores/mysql/index.ts', exportName: 'MySqlStore', options },
      }
    })
  })

  describe('faults', () => {
    test('bad credentials reject every operation with a StoreError carrying the server error', async () => {
      const url = new URL(URI)
      url.password = 'not-the-password'
      const clock = new ManualClock()
      const store = open({ clock, uri: url.href })
      try {
        const failure = {
          code: 'ERR_LATCHKEY_STORE',
          store: 'MySqlStore',
          cause: expect.objectContaining({ code: 'ER_ACCESS_DENIED_ERROR' }),
        }
        await expect(store.get(makeRecord(clock).key)).rejects.toMatchObject({ ...failure, operation: 'get' })
        await expect(store.create(makeRecord(clock))).rejects.toMatchObject({
          ...failure,
          operation: 'create',
        })
        await expect(store.migrate()).rejects.toMatchObject({ ...failure, operation: 'migrate' })
      } finally {
        await store.close()
      }
    })

    test('connections killed under requests: 503s, the process stays up, service resumes, nothing acknowledged is lost', async () => {
      const pool = mysql.createPool({ uri: URI })
      const threads = new Set<number>()
      pool.on('connection', (connection) => threads.add(connection.threadId))
      const tableName = freshTable()
      const clock = new ManualClock()
      const store = new MySqlStore({ pool, tableName, clock })
      const h = await harness({ store, clock })
      const locker = await admin.getConnection()
      const waiting = async () =>
        (
          await rows(
            `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID IN (?) AND STATE LIKE 'Waiting for table%'`,
            [[...threads]],
          )
        )[0]?.n
      try {
        const clients = Array.from({ length: 8 }, () => h.client())
        for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
        // Hold the table, so the next requests are inside the store when their connections die.
        await locker.query(`LOCK TABLES \`${tableName}\` WRITE`)
        const inFlight = clients.map((client) => client.request('/inc'))
        await vi.waitFor(async () => expect(await waiting()).toBe(clients.length), {
          timeout: 10_000,
          interval: 20,
        })
        for (const thread of threads) await admin.query('KILL CONNECTION ?', [thread])
        expect((await Promise.all(inFlight)).map((response) => response.status)).toEqual(
          clients.map(() => 503),
        )
        expect(h.errors).toHaveLength(clients.length)
        for (const error of h.errors) {
          expect(error).toMatchObject({ code: 'ERR_LATCHKEY_STORE', store: 'MySqlStore', operation: 'get' })
        }
        await locker.query('UNLOCK TABLES')
        // The pool reconnects by itself: the next request of every client succeeds.
        for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
        // Each acknowledged increment is there, and none of the failed ones.
        for (const client of clients) expect((await client.json('/state')).body.n).toBe(2)
      } finally {
        await locker.query('UNLOCK TABLES')
        locker.release()
        await h.close()
        await pool.end()
      }
    })

    test('a second process whose connections are cut stays up and answers again', async () => {
      const proxy = await startTcpProxy(serverPort)
      proxies.push(proxy)
      const tableName = freshTable()
      const options = { uri: uriWith(proxy.port), tableName, pruneIntervalMs: 0 }
      const local = open({ tableName, pruneIntervalMs: 0 })
      const remote = await startRemoteManager({
        path: '',
        keys: [generateKey()],
        time: Date.now(),
        dataKeys: ['n'],
        store: { module: 'src/stores/mysql/index.ts', exportName: 'MySqlStore', options },
      })
      try {
        const { ref } = await remote.load(undefined)
        await remote.act(ref, { kind: 'set', key: 'n', value: 1 })
        const cookie = cookieHeader((await remote.commit(ref)).setCookie)
        proxy.down()
        await expect(remote.load(cookie)).rejects.toMatchObject({ code: 'ERR_LATCHKEY_STORE' })
        proxy.up()
        await vi.waitFor(async () => expect(await remote.load(cookie)).toMatchObject({ data: { n: 1 } }), {
          timeout: 5000,
          interval: 50,
        })
        expect(() => process.kill(remote.pid, 0)).not.toThrow()
        expect(await local.count()).toBe(1)
      } finally {
        await remote.close()
        await local.close()
      }
    })
  })
})

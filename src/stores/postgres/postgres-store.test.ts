import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { cookieHeader, startRemoteManager } from '../../../test/support/remote.js'
import { describeWithService, SERVICE_URLS, service } from '../../../test/support/services.js'
import { harness } from '../../../test/support/setup.js'
import { closedPort, startTcpProxy, type TcpProxy } from '../../../test/support/tcp-proxy.js'
import { defineTwoProcessTests } from '../../../test/support/two-processes.js'
import { ManualClock } from '../../core/clock.js'
import { generateKey } from '../../core/crypto.js'
import { ConfigError, StoreError } from '../../core/errors.js'
import { defineStoreConformance, makeRecord } from '../../testing/conformance.js'
import { PRUNE_BATCH_SIZE } from '../sql/queries.js'
import { PostgresStore, type PostgresStoreOptions } from './index.js'

const URL_ = SERVICE_URLS.postgres
const status = await service('PostgreSQL', URL_, async () => {
  const client = new pg.Client({ connectionString: URL_, connectionTimeoutMillis: 4000 })
  try {
    await client.connect()
    await client.query('SELECT 1')
  } finally {
    await client.end().catch(() => {})
  }
})

/** Every table of this run is `latchkey_t<run>_<n>`, dropped at the end. */
const run = randomBytes(4).toString('hex')
let tables = 0
const freshTable = () => `latchkey_t${run}_${++tables}`

/** The test server's URL with another port or query parameters. */
function urlWith(change: { port?: number; params?: Record<string, string> }): string {
  const url = new URL(URL_)
  if (change.port !== undefined) url.port = String(change.port)
  for (const [name, value] of Object.entries(change.params ?? {})) url.searchParams.set(name, value)
  return url.href
}

const quiet = { onWarning: () => {} }

describeWithService(status, 'PostgresStore', () => {
  let admin: pg.Pool
  const proxies: TcpProxy[] = []
  beforeAll(() => {
    admin = new pg.Pool({ connectionString: URL_, max: 4 })
  })
  afterAll(async () => {
    for (const proxy of proxies) await proxy.close()
    const names = Array.from({ length: tables }, (_, i) => `latchkey_t${run}_${i + 1}`)
    for (const name of names) await admin.query(`DROP TABLE IF EXISTS "${name}"`)
    await admin.query('DELETE FROM latchkey_schema WHERE table_name = ANY($1)', [names]).catch(() => {})
    await admin.query(`DROP SCHEMA IF EXISTS "latchkey_s${run}" CASCADE`)
    await admin.end()
  })

  const open = (options: Partial<PostgresStoreOptions> = {}) =>
    new PostgresStore({ connectionString: URL_, tableName: freshTable(), ...quiet, ...options })

  defineStoreConformance(
    { describe, test },
    {
      name: 'PostgresStore',
      createStore: (clock) => open({ clock }),
      createUnavailableStore: async (clock) =>
        open({ clock, connectionString: urlWith({ port: await closedPort() }) }),
      // Down behind a proxy that cuts every connection until restore().
      async createRecoveringStore(clock) {
        const proxy = await startTcpProxy(Number(new URL(URL_).port || 5432), { up: false })
        proxies.push(proxy)
        return {
          store: open({ clock, connectionString: urlWith({ port: proxy.port }) }),
          restore: () => proxy.up(),
        }
      },
    },
  )

  describe('schema', () => {
    test('payload as bytea, indexes on expires_at and user_id, schema version 1 recorded', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      try {
        await store.count()
        const columns = await admin.query(
          'SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1',
          [tableName],
        )
        expect(Object.fromEntries(columns.rows.map((row) => [row.column_name, row.data_type]))).toMatchObject(
          {
            key: 'text',
            payload: 'bytea',
            expires_at: 'bigint',
            user_id: 'text',
          },
        )
        const indexes = await admin.query('SELECT indexdef FROM pg_indexes WHERE tablename = $1', [tableName])
        const defs = indexes.rows.map((row) => String(row.indexdef)).join('\n')
        expect(defs).toMatch(/UNIQUE INDEX .* \(key\)/)
        expect(defs).toMatch(/INDEX .* \(expires_at\)/)
        expect(defs).toMatch(/INDEX .* \(user_id\)/)
        const version = await admin.query('SELECT version FROM latchkey_schema WHERE table_name = $1', [
          tableName,
        ])
        expect(version.rows).toEqual([{ version: '1' }])
      } finally {
        await store.close()
      }
    })

    test('schemaSql applied by hand is what the store uses, and migrate() then changes nothing', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      try {
        const sql = store.schemaSql()
        expect(sql).toContain(`CREATE TABLE IF NOT EXISTS "${tableName}"`)
        expect(sql).toContain(`VALUES ('${tableName}', 1)`)
        await admin.query(sql)
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
        await store.close()
      }
    })

    test('a table in its own schema', async () => {
      const schema = `latchkey_s${run}`
      await admin.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
      const tableName = freshTable()
      const clock = new ManualClock()
      const store = open({ tableName, schema, clock })
      try {
        expect(store.schemaSql()).toContain(`"${schema}"."${tableName}"`)
        const record = makeRecord(clock)
        expect(await store.create(record)).toBe(true)
        const found = await admin.query(`SELECT count(*)::int AS n FROM "${schema}"."${tableName}"`)
        expect(found.rows).toEqual([{ n: 1 }])
        const version = await admin.query(`SELECT version FROM "${schema}".latchkey_schema`)
        expect(version.rows).toEqual([{ version: '1' }])
      } finally {
        await store.close()
      }
    })

    test('a table at a newer schema version than this code knows is refused with StoreError', async () => {
      const tableName = freshTable()
      const store = open({ tableName })
      await store.migrate()
      await store.close()
      await admin.query('UPDATE latchkey_schema SET version = 2 WHERE table_name = $1', [tableName])
      const newer = open({ tableName })
      try {
        await expect(newer.count()).rejects.toThrow(/schema version 2; this latchkey knows up to 1/)
        await expect(newer.migrate()).rejects.toMatchObject({ operation: 'migrate', store: 'PostgresStore' })
      } finally {
        await newer.close()
      }
    })

    test('stores migrating one fresh table at once all succeed and record it once', async () => {
      const tableName = freshTable()
      const stores = Array.from({ length: 4 }, () => open({ tableName }))
      try {
        await Promise.all(stores.map((store) => store.migrate()))
        const rows = await admin.query('SELECT version FROM latchkey_schema WHERE table_name = $1', [
          tableName,
        ])
        expect(rows.rows).toEqual([{ version: '1' }])
      } finally {
        for (const store of stores) await store.close()
      }
    })
  })

  describe('options', () => {
    test.each([
      'sessions"; DROP TABLE users; --',
      "sessions'",
      'a;b',
      'a--b',
      'public..sessions',
      'public.sessions',
      'a/b',
      'my sessions',
      ' sessions',
      '',
      'latchkey_schema',
      'a'.repeat(53),
    ])('refuses the table name %j with a ConfigError', (tableName) => {
      const build = () => new PostgresStore({ connectionString: URL_, tableName })
      expect(build).toThrow(ConfigError)
      expect(build).toThrow(expect.objectContaining({ option: 'tableName' }))
    })

    test.each(['public"', 'a;b', 'a--b', 'a..b', 'a/b', 'my schema'])(
      'refuses the schema %j with a ConfigError',
      (schema) => {
        expect(() => new PostgresStore({ connectionString: URL_, schema })).toThrow(
          expect.objectContaining({ option: 'schema' }),
        )
      },
    )

    test.each([
      ['pool', {}],
      ['pool', { connectionString: URL_, pool: new pg.Pool() }],
      ['pool', { pool: {} as pg.Pool }],
      ['connectionString', { connectionString: '' }],
      ['pruneIntervalMs', { connectionString: URL_, pruneIntervalMs: -1 }],
      ['pruneIntervalMs', { connectionString: URL_, pruneIntervalMs: 1.5 }],
      ['onWarning', { connectionString: URL_, onWarning: 'yes' }],
    ])('refuses a bad %s with a ConfigError', (option, options) => {
      expect(() => new PostgresStore(options as PostgresStoreOptions)).toThrow(
        expect.objectContaining({ option }),
      )
    })

    test('a pool the user owns stays open after close(), and the closed store rejects', async () => {
      const pool = new pg.Pool({ connectionString: URL_ })
      const clock = new ManualClock()
      const store = new PostgresStore({ pool, tableName: freshTable(), clock })
      try {
        const record = makeRecord(clock)
        expect(await store.create(record)).toBe(true)
        await store.close()
        await expect(store.get(record.key)).rejects.toMatchObject({
          operation: 'get',
          store: 'PostgresStore',
        })
        expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
      } finally {
        await pool.end()
      }
    })
  })

  describe('prune', () => {
    test('deletes a large backlog in batches of PRUNE_BATCH_SIZE, one short statement each', async () => {
      const pool = new pg.Pool({ connectionString: URL_ })
      const clock = new ManualClock()
      const tableName = freshTable()
      const store = new PostgresStore({ pool, tableName, clock })
      try {
        await store.migrate()
        const expired = 2 * PRUNE_BATCH_SIZE + 500
        const now = clock.now()
        await admin.query(
          `INSERT INTO "${tableName}" (key, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload)
           SELECT 'k' || i, 1, $1::bigint, $1::bigint, $1::bigint + 1, $1::bigint + 1, $1::bigint + 1, '\\x00'::bytea FROM generate_series(1, $2::int) AS i`,
          [now, expired],
        )
        const live = makeRecord(clock)
        await store.create(live)
        clock.advance(1)
        const query = vi.spyOn(pool, 'query')
        expect(await store.prune()).toBe(expired)
        const deletes = query.mock.calls.filter(([config]) =>
          /^DELETE/.test(String((config as unknown as pg.QueryConfig).text)),
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
        const later = clock.now() + 60_000
        await admin.query(
          `INSERT INTO "${tableName}" (key, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload)
           SELECT 'k' || lpad(i::text, 5, '0'), 1, $1::bigint, $1::bigint, $2::bigint, $2::bigint, $2::bigint, 'x'::bytea FROM generate_series(1, 1234) AS i`,
          [clock.now(), later],
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
      const proxy = await startTcpProxy(Number(new URL(URL_).port || 5432))
      proxies.push(proxy)
      const clock = new ManualClock()
      const tableName = freshTable()
      const warnings: Error[] = []
      const store = open({
        clock,
        tableName,
        connectionString: urlWith({ port: proxy.port }),
        pruneIntervalMs: 20,
        onWarning: (warning) => warnings.push(warning),
      })
      try {
        await store.create(makeRecord(clock, { idleExpiresAt: clock.now() + 1000 }))
        clock.advance(1000)
        await vi.waitFor(
          async () => {
            const rows = await admin.query(`SELECT count(*)::int AS n FROM "${tableName}"`)
            expect(rows.rows).toEqual([{ n: 0 }])
          },
          { timeout: 5000, interval: 20 },
        )
        proxy.down()
        // Every failing run of the schedule is reported (and so may be the cut idle connection).
        const prunes = () => warnings.filter((warning) => (warning as StoreError).operation === 'prune')
        await vi.waitFor(() => expect(prunes().length).toBeGreaterThan(1), { timeout: 5000, interval: 20 })
        for (const warning of warnings) expect(warning).toBeInstanceOf(StoreError)
      } finally {
        await store.close()
      }
    })
  })

  describe('two processes', () => {
    defineTwoProcessTests(() => {
      const tableName = freshTable()
      const options = { connectionString: URL_, tableName, pruneIntervalMs: 0 }
      return {
        local: (clock) => new PostgresStore({ ...options, clock }),
        remote: { module: 'src/stores/postgres/index.ts', exportName: 'PostgresStore', options },
      }
    })
  })

  describe('faults', () => {
    test('bad credentials reject every operation with a StoreError carrying the server error', async () => {
      const url = new URL(URL_)
      url.username = `latchkey_nobody_${run}`
      const clock = new ManualClock()
      const store = open({ clock, connectionString: url.href })
      try {
        const failure = {
          code: 'ERR_LATCHKEY_STORE',
          store: 'PostgresStore',
          cause: expect.objectContaining({ code: '28000' }),
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

    /** Backends of `applicationName` waiting for a lock. */
    async function waiting(applicationName: string): Promise<number> {
      const rows = await admin.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [applicationName],
      )
      return rows.rows[0].n as number
    }

    async function terminate(applicationName: string): Promise<number> {
      const killed = await admin.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
        [applicationName],
      )
      return killed.rowCount ?? 0
    }

    test('backends killed under requests: 503s, the process stays up, service resumes, nothing acknowledged is lost', async () => {
      const applicationName = `latchkey_fault_${run}`
      const tableName = freshTable()
      const clock = new ManualClock()
      const warnings: Error[] = []
      const store = open({
        clock,
        tableName,
        connectionString: urlWith({ params: { application_name: applicationName } }),
        onWarning: (warning) => warnings.push(warning),
      })
      const h = await harness({ store, clock })
      const locker = await admin.connect()
      try {
        const clients = Array.from({ length: 8 }, () => h.client())
        for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
        // Hold the table, so the next requests are inside the store when their backends die.
        await locker.query('BEGIN')
        await locker.query(`LOCK TABLE "${tableName}" IN ACCESS EXCLUSIVE MODE`)
        const inFlight = clients.map((client) => client.request('/inc'))
        await vi.waitFor(async () => expect(await waiting(applicationName)).toBe(clients.length), {
          timeout: 10_000,
          interval: 20,
        })
        expect(await terminate(applicationName)).toBeGreaterThanOrEqual(clients.length)
        expect((await Promise.all(inFlight)).map((response) => response.status)).toEqual(
          clients.map(() => 503),
        )
        expect(h.errors).toHaveLength(clients.length)
        for (const error of h.errors) {
          expect(error).toMatchObject({
            code: 'ERR_LATCHKEY_STORE',
            store: 'PostgresStore',
            operation: 'get',
          })
        }
        await locker.query('ROLLBACK')
        // The pool reconnects by itself: the next request of every client succeeds.
        for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
        // Each acknowledged increment is there, and none of the failed ones.
        for (const client of clients) expect((await client.json('/state')).body.n).toBe(2)
      } finally {
        // Ending the connection ends its transaction, whatever happened.
        locker.release(true)
        await h.close()
      }
    })

    test('a second process whose idle connections are all terminated stays up and answers again', async () => {
      const applicationName = `latchkey_remote_${run}`
      const tableName = freshTable()
      const options = {
        connectionString: urlWith({ params: { application_name: applicationName } }),
        tableName,
        pruneIntervalMs: 0,
      }
      const local = open({ tableName, pruneIntervalMs: 0 })
      const remote = await startRemoteManager({
        path: '',
        keys: [generateKey()],
        time: Date.now(),
        dataKeys: ['n'],
        store: { module: 'src/stores/postgres/index.ts', exportName: 'PostgresStore', options },
      })
      try {
        const { ref } = await remote.load(undefined)
        await remote.act(ref, { kind: 'set', key: 'n', value: 1 })
        const cookie = cookieHeader((await remote.commit(ref)).setCookie)
        expect(await terminate(applicationName)).toBeGreaterThan(0)
        // Idle clients learn of it asynchronously: a request may fail once, never the process.
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

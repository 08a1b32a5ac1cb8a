/**
 * The tests the server SQL stores (PostgresStore, MySqlStore) share, written once: the same scenarios
 * run on each, and what differs between them (the driver, SQL text, placeholders, quoting, error
 * codes, how a connection is cut) comes from the store's {@link ServerStoreDialect}. A store's test
 * file keeps only what is its own, through {@link ServerStoreSpecifics}.
 *
 *     await defineServerStoreTests({ name: 'PostgresStore', server: 'PostgreSQL', ... }, {
 *       schema(ctx) { test('a table in its own schema', ...) },
 *     })
 *
 * A server that does not answer skips the suite, or fails it under `CI=true` (services.ts).
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import { ManualClock } from '../../src/core/clock.js'
import { generateKey } from '../../src/core/crypto.js'
import { ConfigError, isUnavailableError, StoreError } from '../../src/core/errors.js'
import { PRUNE_BATCH_SIZE } from '../../src/stores/sql/queries.js'
import type { SqlStore, SqlStoreOptions } from '../../src/stores/sql/sql-store.js'
import { defineStoreConformance, makeRecord } from '../../src/testing/conformance.js'
import { expiryIndexScenario } from './expiry-index.js'
import { cookieHeader, startRemoteManager } from './remote.js'
import { describeWithService, service } from './services.js'
import { harness } from './setup.js'
import { closedPort, startTcpProxy, type TcpProxy } from './tcp-proxy.js'
import { defineTwoProcessCapTests, defineTwoProcessTests, type SharedStore } from './two-processes.js'

/** One row as the admin client reads it. */
export type Row = Record<string, unknown>

/** A store opened so that its connections can be killed from outside while requests wait in them. */
export interface KillableStore<S> {
  store: S
  /** How many of the store's connections wait for the table lock (as the server reports it). */
  waiting(): Promise<unknown>
  /** Kills every connection of the store; resolves how many it killed. */
  kill(): Promise<number>
  /** Releases what `open` made besides the store (a pool it handed in). */
  close(): Promise<void>
}

/** An admin connection that can hold the sessions table locked. */
export interface TableLocker {
  /** Locks the table: every statement on it waits. */
  lock(table: string): Promise<void>
  unlock(): Promise<void>
  /** Ends the lock whatever happened and gives the connection back. */
  release(): Promise<void>
}

/** How the store under test, its driver and its SQL differ from the other server stores'. */
export interface ServerStoreDialect<O extends SqlStoreOptions & { pool?: P }, S extends SqlStore, P> {
  /** The store class's name, as every `StoreError` carries it: `'PostgresStore'`. */
  name: string
  /** Its module from the repository root, for the child process: `'src/stores/postgres/index.ts'`. */
  module: string
  /** The server, in skip messages: `'PostgreSQL'`, `'MariaDB'`. */
  server: string
  /** The test server (services.ts). */
  url: string
  /** The server's port when the URL names none. */
  defaultPort: number
  /** Connects, runs `SELECT 1`, disconnects: rejects when the server does not answer. */
  ping(): Promise<void>
  /** `new TheStore(options)`. */
  create(options: Partial<O>): S
  /** The options pointing a store at `url`: `{ uri }`, `{ connectionString }`. */
  connect(url: string): Partial<O>
  /** Pools of the driver on the test server: the suite's admin pool, and pools handed to stores. */
  pools: {
    /** A new pool, of at most `max` connections when given (the driver's default otherwise). */
    open(max?: number): P
    /** Runs one statement on `pool`, with values in the dialect's placeholder syntax; resolves its rows. */
    rows(pool: P, sql: string, values?: unknown[]): Promise<Row[]>
    end(pool: P): Promise<void>
    /** Spies on what the store runs on `pool`; the function returns the SQL text of each statement so far. */
    spyStatements(pool: P): () => string[]
  }
  /** SQL text. */
  sql: {
    /** The one bound parameter: `?`, `$1`. */
    placeholder: string
    /** An identifier quoted: `"name"`, `` `name` ``. */
    quote(identifier: string): string
    /** Deletes the `latchkey_schema` rows of the tables named in its one parameter (an array of names). */
    forgetTables: string
    /** One row `{ n }`, `n` the number of rows of `table`, as a JavaScript number. */
    countRows(table: string): string
    /** How the admin client reads version 1 from `latchkey_schema` (a bigint, read as a string by pg). */
    version1: unknown
    /** Runs a script of several statements (what `schemaSql()` prints). */
    runScript(ctx: ServerStoreContext<O, S, P>, script: string): Promise<void>
    /**
     * Inserts `count` sessions straight into `table`, keys `k00000`, `k00001`, ...: created and last
     * seen at `createdAt`, every deadline at `expiresAt`.
     */
    insertSessions(
      ctx: ServerStoreContext<O, S, P>,
      table: string,
      rows: { count: number; createdAt: number; expiresAt: number },
    ): Promise<void>
  }
  /** The table the store creates. */
  schema: {
    /** What {@link check} checks of columns, for the test's name: `'payload as bytea'`. */
    columns: string
    /** Checks the columns of `table`, and its indexes: the key, `expires_at` and `user_id`. */
    check(ctx: ServerStoreContext<O, S, P>, table: string): Promise<void>
  }
  /** Table names refused by this store besides those no server store takes (quoting, qualified names, length). */
  badTableNames: string[]
  /** `[option, options]`: options refused with a `ConfigError` naming `option`. */
  badOptions: [string, unknown][]
  /** Failures. */
  faults: {
    /** Changes `url` (of the test server) so that the server refuses it; `run` names this run. */
    badCredentials(url: URL, run: string): void
    /** The `code` of the driver's error then. */
    accessDenied: string
    /** Operations besides `'prune'` that a store warns of when its connections are cut (`'idle connection'`). */
    cutWarnings: string[]
    /** True when `close()` may reject after the store's connections were cut (the lost connection reported). */
    closeMayFailAfterCut: boolean
    /** What the server kills, in the test's name: `'connections'`, `'backends'`. */
    killed: string
    /** A store on `table` whose connections can be killed. */
    killable(ctx: ServerStoreContext<O, S, P>, table: string, clock: ManualClock): Promise<KillableStore<S>>
    /** An admin connection for locking the table. */
    locker(ctx: ServerStoreContext<O, S, P>): Promise<TableLocker>
    /** How a second process loses its connections, for the test's name: `'connections are cut'`. */
    cutRemote: string
    /**
     * The URL the second process connects with, and how to cut its connections: `cut` may check what
     * a `load()` of the remote does meanwhile, and must leave the server reachable again.
     */
    remoteCut(
      ctx: ServerStoreContext<O, S, P>,
    ): Promise<{ url: string; cut(load: () => Promise<unknown>): Promise<void> }>
  }
}

/** What the suite hands to a store's own code. */
export interface ServerStoreContext<O extends SqlStoreOptions, S extends SqlStore, P> {
  /** Names this run: every table is `latchkey_t<run>_<n>`, dropped at the end. */
  readonly run: string
  /** A new table name of this run. */
  freshTable(): string
  /** A store on the test server and a fresh table, quiet (`onWarning` ignores warnings); `options` win. */
  open(options?: Partial<O>): S
  /** The suite's admin pool (open from `beforeAll` to `afterAll`). */
  readonly admin: P
  /** One statement on the admin pool: its rows. */
  rows(sql: string, values?: unknown[]): Promise<Row[]>
  /** The test server's URL with another port or query parameters. */
  urlWith(change: { port?: number; params?: Record<string, string> }): string
  /** A TCP proxy to the test server (up unless `{ up: false }`), closed at the end. */
  proxy(options?: { up?: boolean }): Promise<TcpProxy>
}

/** A store's own tests, registered inside the shared groups. */
export interface ServerStoreSpecifics<O extends SqlStoreOptions, S extends SqlStore, P> {
  /** More tests in `schema`. */
  schema?(ctx: ServerStoreContext<O, S, P>): void
  /** More tests in `options`. */
  options?(ctx: ServerStoreContext<O, S, P>): void
  /** Groups of the store's own. */
  groups?(ctx: ServerStoreContext<O, S, P>): void
  /** Drops what the store's own tests made besides the run's tables, before the admin pool ends. */
  cleanup?(ctx: ServerStoreContext<O, S, P>): Promise<void>
}

/** Table names no server store takes. */
const BAD_TABLE_NAMES = ["sessions'", 'a;b', 'a--b', 'a/b', 'my sessions', '', 'latchkey_schema']

const quiet = { onWarning: () => {} }

/** Registers the suite of `dialect`'s store, with `specifics` in it, once its server answered (or did not). */
export async function defineServerStoreTests<O extends SqlStoreOptions & { pool?: P }, S extends SqlStore, P>(
  d: ServerStoreDialect<O, S, P>,
  specifics: ServerStoreSpecifics<O, S, P> = {},
): Promise<void> {
  const status = await service(d.server, d.url, () => d.ping())

  const run = randomBytes(4).toString('hex')
  let tables = 0
  const freshTable = () => `latchkey_t${run}_${++tables}`
  const serverPort = Number(new URL(d.url).port || d.defaultPort)
  const proxies: TcpProxy[] = []
  let admin: P | undefined

  const ctx: ServerStoreContext<O, S, P> = {
    run,
    freshTable,
    open: (options = {}) => d.create({ ...d.connect(d.url), tableName: freshTable(), ...quiet, ...options }),
    get admin(): P {
      if (admin === undefined) throw new Error('the admin pool opens in beforeAll')
      return admin
    },
    rows: (sql, values) => d.pools.rows(ctx.admin, sql, values),
    urlWith(change) {
      const url = new URL(d.url)
      if (change.port !== undefined) url.port = String(change.port)
      for (const [name, value] of Object.entries(change.params ?? {})) url.searchParams.set(name, value)
      return url.href
    },
    async proxy(options) {
      const proxy = await startTcpProxy(serverPort, options)
      proxies.push(proxy)
      return proxy
    },
  }
  const { rows, urlWith } = ctx
  /** `d.create` with options every server store takes. */
  const make = (options: SqlStoreOptions & { pool?: P }) => d.create(options as Partial<O>)
  /** `ctx.open` with options every server store takes, at `url` (the test server by default). */
  const open = (options: SqlStoreOptions = {}, url = d.url) =>
    make({ ...d.connect(url), tableName: freshTable(), ...quiet, ...options })
  const versions = (tableName: string) =>
    rows(`SELECT version FROM latchkey_schema WHERE table_name = ${d.sql.placeholder}`, [tableName])

  describeWithService(status, d.name, () => {
    beforeAll(() => {
      admin = d.pools.open(4)
    })
    afterAll(async () => {
      for (const proxy of proxies) await proxy.close()
      const names = Array.from({ length: tables }, (_, i) => `latchkey_t${run}_${i + 1}`)
      for (const name of names) await rows(`DROP TABLE IF EXISTS ${d.sql.quote(name)}`)
      await rows(d.sql.forgetTables, [names]).catch(() => {})
      await specifics.cleanup?.(ctx)
      await d.pools.end(ctx.admin)
    })

    defineStoreConformance(
      { describe, test },
      {
        name: d.name,
        createStore: (clock) => open({ clock }),
        createUnavailableStore: async (clock) => open({ clock }, urlWith({ port: await closedPort() })),
        // Down behind a proxy that cuts every connection until restore().
        async createRecoveringStore(clock) {
          const proxy = await ctx.proxy({ up: false })
          return {
            store: open({ clock }, urlWith({ port: proxy.port })),
            restore: () => proxy.up(),
          }
        },
      },
    )

    describe('schema', () => {
      test(`${d.schema.columns}, indexes on expires_at and user_id, schema version 1 recorded`, async () => {
        const tableName = freshTable()
        const store = open({ tableName })
        try {
          await store.count()
          await d.schema.check(ctx, tableName)
          expect(await versions(tableName)).toEqual([{ version: d.sql.version1 }])
        } finally {
          await store.close()
        }
      })

      test('schemaSql applied by hand is what the store uses, and migrate() then changes nothing', async () => {
        const tableName = freshTable()
        const store = open({ tableName })
        try {
          const sql = store.schemaSql()
          expect(sql).toContain(`CREATE TABLE IF NOT EXISTS ${d.sql.quote(tableName)}`)
          expect(sql).toContain(`VALUES ('${tableName}', 1)`)
          await d.sql.runScript(ctx, sql)
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

      test('a table at a newer schema version than this code knows is refused with StoreError', async () => {
        const tableName = freshTable()
        const store = open({ tableName })
        await store.migrate()
        await store.close()
        await rows(`UPDATE latchkey_schema SET version = 2 WHERE table_name = ${d.sql.placeholder}`, [
          tableName,
        ])
        const newer = open({ tableName })
        try {
          await expect(newer.count()).rejects.toThrow(/schema version 2; this latchkey knows up to 1/)
          await expect(newer.migrate()).rejects.toMatchObject({ operation: 'migrate', store: d.name })
        } finally {
          await newer.close()
        }
      })

      test('stores migrating one fresh table at once all succeed and record it once', async () => {
        const tableName = freshTable()
        const stores = Array.from({ length: 4 }, () => open({ tableName }))
        try {
          await Promise.all(stores.map((store) => store.migrate()))
          expect(await versions(tableName)).toEqual([{ version: d.sql.version1 }])
        } finally {
          for (const store of stores) await store.close()
        }
      })

      specifics.schema?.(ctx)
    })

    describe('options', () => {
      test.each([...d.badTableNames, ...BAD_TABLE_NAMES])(
        'refuses the table name %j with a ConfigError',
        (tableName) => {
          const build = () => make({ ...d.connect(d.url), tableName })
          expect(build).toThrow(ConfigError)
          expect(build).toThrow(expect.objectContaining({ option: 'tableName' }))
        },
      )

      test.each(d.badOptions)('refuses a bad %s with a ConfigError', (option, options) => {
        expect(() => d.create(options as Partial<O>)).toThrow(expect.objectContaining({ option }))
      })

      test('a pool the user owns stays open after close(), and the closed store rejects', async () => {
        const pool = d.pools.open()
        const clock = new ManualClock()
        const store = make({ pool, tableName: freshTable(), clock })
        try {
          const record = makeRecord(clock)
          expect(await store.create(record)).toBe(true)
          await store.close()
          await expect(store.get(record.key)).rejects.toMatchObject({ operation: 'get', store: d.name })
          expect(await d.pools.rows(pool, 'SELECT 1 AS one')).toEqual([{ one: 1 }])
        } finally {
          await d.pools.end(pool)
        }
      })

      specifics.options?.(ctx)
    })

    describe('prune', () => {
      test('deletes a large backlog in batches of PRUNE_BATCH_SIZE, one short statement each', async () => {
        const pool = d.pools.open()
        const clock = new ManualClock()
        const tableName = freshTable()
        const store = make({ pool, tableName, clock })
        try {
          await store.migrate()
          const expired = 2 * PRUNE_BATCH_SIZE + 500
          const now = clock.now()
          await d.sql.insertSessions(ctx, tableName, { count: expired, createdAt: now, expiresAt: now + 1 })
          const live = makeRecord(clock)
          await store.create(live)
          clock.advance(1)
          const statements = d.pools.spyStatements(pool)
          expect(await store.prune()).toBe(expired)
          const deletes = statements().filter((sql) => /^DELETE/.test(sql))
          expect(deletes).toHaveLength(3)
          expect(await store.count()).toBe(1)
          expect(await store.get(live.key)).toEqual(live)
        } finally {
          await store.close()
          await d.pools.end(pool)
        }
      })

      test('expires_at moves about once per EXPIRY_SLACK_MS of writes, never before the exact deadline', async () => {
        const clock = new ManualClock()
        const tableName = freshTable()
        const store = open({ clock, tableName })
        try {
          await store.migrate()
          const column = d.sql.quote('expires_at')
          const select = `SELECT ${column} AS e FROM ${d.sql.quote(tableName)} WHERE ${d.sql.quote('key')} = ${d.sql.placeholder}`
          await expiryIndexScenario(store, clock, async (key) =>
            Number((await ctx.rows(select, [key]))[0]?.e),
          )
        } finally {
          await store.close()
        }
      })

      test('list() pages through more rows than fit in one page, in key order', async () => {
        const clock = new ManualClock()
        const tableName = freshTable()
        const store = open({ clock, tableName })
        try {
          await store.migrate()
          const now = clock.now()
          await d.sql.insertSessions(ctx, tableName, { count: 1234, createdAt: now, expiresAt: now + 60_000 })
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
        const proxy = await ctx.proxy()
        const clock = new ManualClock()
        const tableName = freshTable()
        const warnings: Error[] = []
        const store = open(
          { clock, tableName, pruneIntervalMs: 20, onWarning: (warning) => warnings.push(warning) },
          urlWith({ port: proxy.port }),
        )
        try {
          await store.create(makeRecord(clock, { idleExpiresAt: clock.now() + 1000 }))
          clock.advance(1000)
          await vi.waitFor(async () => expect(await rows(d.sql.countRows(tableName))).toEqual([{ n: 0 }]), {
            timeout: 5000,
            interval: 20,
          })
          proxy.down()
          // Every failing run of the schedule is reported (and, by a store watching its pool, the cut idle connections).
          const prunes = () => warnings.filter((warning) => (warning as StoreError).operation === 'prune')
          await vi.waitFor(() => expect(prunes().length).toBeGreaterThan(1), { timeout: 5000, interval: 20 })
          for (const warning of warnings) {
            expect(warning).toBeInstanceOf(StoreError)
            expect(warning).toMatchObject({ store: d.name })
            expect(['prune', ...d.faults.cutWarnings]).toContain((warning as StoreError).operation)
          }
        } finally {
          proxy.up()
          const closing = store.close()
          await (d.faults.closeMayFailAfterCut ? closing.catch(() => {}) : closing)
        }
      })
    })

    describe('two processes', () => {
      const shared = (): SharedStore => {
        const options = { ...d.connect(d.url), tableName: freshTable(), pruneIntervalMs: 0 }
        return {
          local: (clock) => make({ ...options, clock }),
          remote: { module: d.module, exportName: d.name, options: options as Record<string, unknown> },
        }
      }
      defineTwoProcessTests(shared)
      defineTwoProcessCapTests(shared)
    })

    describe('faults', () => {
      test('bad credentials reject every operation with a ConfigError carrying the server error (not retryable)', async () => {
        const url = new URL(d.url)
        d.faults.badCredentials(url, run)
        const clock = new ManualClock()
        const store = open({ clock }, url.href)
        try {
          const failure = {
            code: 'ERR_LATCHKEY_CONFIG',
            option: 'store',
            message: expect.stringContaining('refused the connection'),
            cause: expect.objectContaining({ code: d.faults.accessDenied }),
          }
          const calls: [string, () => Promise<unknown>][] = [
            ['get', () => store.get(makeRecord(clock).key)],
            ['create', () => store.create(makeRecord(clock))],
            ['migrate', () => store.migrate()],
          ]
          for (const [operation, call] of calls) {
            const error = await call().then(
              () => undefined,
              (rejected: unknown) => rejected,
            )
            expect(error, operation).toBeInstanceOf(ConfigError)
            expect(error, operation).toMatchObject(failure)
            expect(isUnavailableError(error), operation).toBe(false)
          }
        } finally {
          await store.close()
        }
      })

      test(`${d.faults.killed} killed under requests: 503s, the process stays up, service resumes, nothing acknowledged is lost`, async () => {
        const tableName = freshTable()
        const clock = new ManualClock()
        const target = await d.faults.killable(ctx, tableName, clock)
        const h = await harness({ store: target.store, clock })
        const locker = await d.faults.locker(ctx)
        try {
          const clients = Array.from({ length: 8 }, () => h.client())
          for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
          // Hold the table, so the next requests are inside the store when their connections die.
          await locker.lock(tableName)
          const inFlight = clients.map((client) => client.request('/inc'))
          await vi.waitFor(async () => expect(await target.waiting()).toBe(clients.length), {
            timeout: 10_000,
            interval: 20,
          })
          expect(await target.kill()).toBeGreaterThanOrEqual(clients.length)
          expect((await Promise.all(inFlight)).map((response) => response.status)).toEqual(
            clients.map(() => 503),
          )
          expect(h.errors).toHaveLength(clients.length)
          for (const error of h.errors) {
            expect(error).toMatchObject({ code: 'ERR_LATCHKEY_STORE', store: d.name, operation: 'get' })
          }
          await locker.unlock()
          // The pool reconnects by itself: the next request of every client succeeds.
          for (const client of clients) expect((await client.request('/inc')).status).toBe(200)
          // Each acknowledged increment is there, and none of the failed ones.
          for (const client of clients) expect((await client.json('/state')).body.n).toBe(2)
        } finally {
          await locker.release()
          await h.close()
          await target.close()
        }
      })

      test(`a second process whose ${d.faults.cutRemote} stays up and answers again`, async () => {
        const cut = await d.faults.remoteCut(ctx)
        const tableName = freshTable()
        const options = { ...d.connect(cut.url), tableName, pruneIntervalMs: 0 }
        const local = open({ tableName, pruneIntervalMs: 0 })
        const remote = await startRemoteManager({
          path: '',
          keys: [generateKey()],
          time: Date.now(),
          dataKeys: ['n'],
          store: { module: d.module, exportName: d.name, options: options as Record<string, unknown> },
        })
        try {
          const { ref } = await remote.load(undefined)
          await remote.act(ref, { kind: 'set', key: 'n', value: 1 })
          const cookie = cookieHeader((await remote.commit(ref)).setCookie)
          await cut.cut(() => remote.load(cookie))
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

    specifics.groups?.(ctx)
  })
}

import mysql, { type Pool, type RowDataPacket } from 'mysql2/promise'
import { describe, expect, test, vi } from 'vitest'
import { defineServerStoreTests } from '../../../test/support/server-store-tests.js'
import { SERVICE_URLS } from '../../../test/support/services.js'
import { ManualClock } from '../../core/clock.js'
import { makeRecord, randomStoreKey } from '../../testing/conformance.js'
import { MySqlStore, type MySqlStoreOptions } from './index.js'

const URI = SERVICE_URLS.mysql

/** Runs one statement on `pool` (text protocol: an array value expands to a list); resolves its rows. */
async function rows(pool: Pool, sql: string, values: unknown[] = []): Promise<RowDataPacket[]> {
  return (await pool.query<RowDataPacket[]>(sql, values))[0]
}

// What MySqlStore shares with PostgresStore; then its own: exact matching of user IDs and keys under
// MariaDB's collations (trailing spaces, the ascii key column), and mariadb:// URIs.
await defineServerStoreTests<MySqlStoreOptions, MySqlStore, Pool>(
  {
    name: 'MySqlStore',
    module: 'src/stores/mysql/index.ts',
    server: 'MariaDB',
    url: URI,
    defaultPort: 3306,
    async ping() {
      const connection = await mysql.createConnection({ uri: URI, connectTimeout: 4000 })
      try {
        await connection.query('SELECT 1')
      } finally {
        await connection.end().catch(() => {})
      }
    },
    create: (options) => new MySqlStore(options),
    connect: (uri) => ({ uri }),
    pools: {
      open: (max) => mysql.createPool(max === undefined ? { uri: URI } : { uri: URI, connectionLimit: max }),
      rows,
      end: (pool) => pool.end(),
      spyStatements(pool) {
        // The store runs each statement on a connection of its own: spy on each one it takes.
        const statements: string[] = []
        const getConnection = pool.getConnection.bind(pool)
        vi.spyOn(pool, 'getConnection').mockImplementation(async () => {
          const connection = await getConnection()
          const execute = connection.execute.bind(connection)
          connection.execute = ((options: { sql: string }, values: unknown) => {
            statements.push(options.sql)
            return execute(options, values as never)
          }) as typeof connection.execute
          return connection
        })
        return () => [...statements]
      },
    },
    sql: {
      placeholder: '?',
      quote: (identifier) => `\`${identifier}\``,
      forgetTables: 'DELETE FROM latchkey_schema WHERE table_name IN (?)',
      countRows: (table) => `SELECT COUNT(*) AS n FROM \`${table}\``,
      version1: 1,
      // The pools run one statement per query; a script needs a connection allowing several.
      async runScript(_ctx, script) {
        const multi = await mysql.createConnection({ uri: URI, multipleStatements: true })
        try {
          await multi.query(script)
        } finally {
          await multi.end()
        }
      },
      async insertSessions(ctx, table, { count, createdAt, expiresAt }) {
        const values = Array.from({ length: count }, (_, i) => [
          `k${String(i).padStart(5, '0')}`,
          1,
          createdAt,
          createdAt,
          expiresAt,
          expiresAt,
          expiresAt,
          'x',
        ])
        await ctx.rows(
          `INSERT INTO \`${table}\` (\`key\`, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload) VALUES ?`,
          [values],
        )
      },
    },
    schema: {
      columns: 'ascii_bin key, utf8mb4 user ID and payload',
      async check(ctx, table) {
        const columns = await ctx.rows(
          `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, COLLATION_NAME AS collation
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`,
          [table],
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
        const indexes = await ctx.rows(
          `SELECT INDEX_NAME AS name, COLUMN_NAME AS columnName FROM information_schema.STATISTICS
           WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`,
          [table],
        )
        expect(indexes.map((index) => index.columnName).sort()).toEqual(['expires_at', 'key', 'user_id'])
      },
    },
    badTableNames: [
      'sessions`; DROP TABLE users; --',
      'sessions"',
      'test..sessions',
      'test.sessions',
      'a'.repeat(54),
    ],
    badOptions: [
      ['pool', {}],
      ['pool', { uri: URI, pool: mysql.createPool({ uri: URI }) }],
      ['pool', { pool: {} as Pool }],
      ['uri', { uri: 'postgres://localhost/test' }],
      ['poolOptions', { poolOptions: 'host=localhost' }],
      ['pruneIntervalMs', { uri: URI, pruneIntervalMs: -1 }],
      ['onWarning', { uri: URI, onWarning: 42 }],
    ],
    faults: {
      badCredentials(url) {
        url.password = 'not-the-password'
      },
      accessDenied: 'ER_ACCESS_DENIED_ERROR',
      cutWarnings: [],
      // Ending a pool whose connections the proxy cut may report the lost connection.
      closeMayFailAfterCut: true,
      killed: 'connections',
      async killable(ctx, tableName, clock) {
        const pool = mysql.createPool({ uri: URI })
        const threads = new Set<number>()
        pool.on('connection', (connection) => threads.add(connection.threadId))
        return {
          store: new MySqlStore({ pool, tableName, clock }),
          waiting: async () =>
            (
              await ctx.rows(
                `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID IN (?) AND STATE LIKE 'Waiting for table%'`,
                [[...threads]],
              )
            )[0]?.n,
          async kill() {
            for (const thread of threads) await ctx.rows('KILL CONNECTION ?', [thread])
            return threads.size
          },
          close: () => pool.end(),
        }
      },
      async locker(ctx) {
        const locker = await ctx.admin.getConnection()
        return {
          async lock(tableName) {
            await locker.query(`LOCK TABLES \`${tableName}\` WRITE`)
          },
          async unlock() {
            await locker.query('UNLOCK TABLES')
          },
          async release() {
            await locker.query('UNLOCK TABLES')
            locker.release()
          },
        }
      },
      cutRemote: 'connections are cut',
      async remoteCut(ctx) {
        const proxy = await ctx.proxy()
        return {
          url: ctx.urlWith({ port: proxy.port }),
          async cut(load) {
            proxy.down()
            await expect(load()).rejects.toMatchObject({ code: 'ERR_LATCHKEY_STORE' })
            proxy.up()
          },
        }
      },
    },
  },
  {
    options({ freshTable, open }) {
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
    },

    groups({ open }) {
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
            // "Sign out everywhere" for alice, as the core does it, leaves the other user alone.
            for (const record of await store.listByUser('alice')) await store.destroy(record.key)
            expect(await store.listByUser('alice')).toEqual([])
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
    },
  },
)

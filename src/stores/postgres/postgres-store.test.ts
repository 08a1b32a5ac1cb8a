import pg from 'pg'
import { expect, test, vi } from 'vitest'
import { defineServerStoreTests, type ServerStoreContext } from '../../../test/support/server-store-tests.js'
import { SERVICE_URLS } from '../../../test/support/services.js'
import { ManualClock } from '../../core/clock.js'
import { makeRecord } from '../../testing/conformance.js'
import { PostgresStore, type PostgresStoreOptions } from './index.js'

const URL_ = SERVICE_URLS.postgres

type Context = ServerStoreContext<PostgresStoreOptions, PostgresStore, pg.Pool>

/** Backends of `applicationName` waiting for a lock. */
async function waiting(ctx: Context, applicationName: string): Promise<unknown> {
  const rows = await ctx.rows(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
    [applicationName],
  )
  return rows[0]?.n
}

/** Terminates every backend of `applicationName`; resolves how many. */
async function terminate(ctx: Context, applicationName: string): Promise<number> {
  const killed = await ctx.admin.query(
    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
    [applicationName],
  )
  return killed.rowCount ?? 0
}

// What PostgresStore shares with MySqlStore; then its own: tables in another schema (`schema`).
await defineServerStoreTests<PostgresStoreOptions, PostgresStore, pg.Pool>(
  {
    name: 'PostgresStore',
    module: 'src/stores/postgres/index.ts',
    server: 'PostgreSQL',
    url: URL_,
    defaultPort: 5432,
    async ping() {
      const client = new pg.Client({ connectionString: URL_, connectionTimeoutMillis: 4000 })
      try {
        await client.connect()
        await client.query('SELECT 1')
      } finally {
        await client.end().catch(() => {})
      }
    },
    create: (options) => new PostgresStore(options),
    connect: (connectionString) => ({ connectionString }),
    pools: {
      open: (max) =>
        new pg.Pool(max === undefined ? { connectionString: URL_ } : { connectionString: URL_, max }),
      rows: async (pool, sql, values = []) => (await pool.query(sql, values)).rows,
      end: (pool) => pool.end(),
      spyStatements(pool) {
        const query = vi.spyOn(pool, 'query')
        return () => query.mock.calls.map(([config]) => String((config as unknown as pg.QueryConfig).text))
      },
    },
    sql: {
      placeholder: '$1',
      quote: (identifier) => `"${identifier}"`,
      forgetTables: 'DELETE FROM latchkey_schema WHERE table_name = ANY($1)',
      countRows: (table) => `SELECT count(*)::int AS n FROM "${table}"`,
      version1: '1',
      runScript: async (ctx, script) => {
        await ctx.rows(script)
      },
      async insertSessions(ctx, table, { count, createdAt, expiresAt }) {
        await ctx.rows(
          `INSERT INTO "${table}" (key, version, created_at, last_seen_at, idle_expires_at, absolute_expires_at, expires_at, payload)
           SELECT 'k' || lpad(i::text, 5, '0'), 1, $1::bigint, $1::bigint, $2::bigint, $2::bigint, $2::bigint, 'x'::bytea
           FROM generate_series(0, $3::int - 1) AS i`,
          [createdAt, expiresAt, count],
        )
      },
    },
    schema: {
      columns: 'payload as bytea',
      async check(ctx, table) {
        const columns = await ctx.rows(
          'SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1',
          [table],
        )
        expect(Object.fromEntries(columns.map((row) => [row.column_name, row.data_type]))).toMatchObject({
          key: 'text',
          payload: 'bytea',
          expires_at: 'bigint',
          user_id: 'text',
        })
        const indexes = await ctx.rows('SELECT indexdef FROM pg_indexes WHERE tablename = $1', [table])
        const defs = indexes.map((row) => String(row.indexdef)).join('\n')
        expect(defs).toMatch(/UNIQUE INDEX .* \(key\)/)
        expect(defs).toMatch(/INDEX .* \(expires_at\)/)
        expect(defs).toMatch(/INDEX .* \(user_id\)/)
      },
    },
    badTableNames: [
      'sessions"; DROP TABLE users; --',
      'public..sessions',
      'public.sessions',
      ' sessions',
      'a'.repeat(53),
    ],
    badOptions: [
      ['pool', {}],
      ['pool', { connectionString: URL_, pool: new pg.Pool() }],
      ['pool', { pool: {} as pg.Pool }],
      ['connectionString', { connectionString: '' }],
      ['pruneIntervalMs', { connectionString: URL_, pruneIntervalMs: -1 }],
      ['pruneIntervalMs', { connectionString: URL_, pruneIntervalMs: 1.5 }],
      ['onWarning', { connectionString: URL_, onWarning: 'yes' }],
    ],
    faults: {
      badCredentials(url, run) {
        url.username = `latchkey_nobody_${run}`
      },
      accessDenied: '28000',
      // The store's own pool reports its idle connections the server dropped.
      cutWarnings: ['idle connection'],
      closeMayFailAfterCut: false,
      killed: 'backends',
      async killable(ctx, tableName, clock) {
        const applicationName = `latchkey_fault_${ctx.run}`
        return {
          store: ctx.open({
            clock,
            tableName,
            connectionString: ctx.urlWith({ params: { application_name: applicationName } }),
          }),
          waiting: () => waiting(ctx, applicationName),
          kill: () => terminate(ctx, applicationName),
          close: async () => {},
        }
      },
      async locker(ctx) {
        const locker = await ctx.admin.connect()
        return {
          async lock(tableName) {
            await locker.query('BEGIN')
            await locker.query(`LOCK TABLE "${tableName}" IN ACCESS EXCLUSIVE MODE`)
          },
          async unlock() {
            await locker.query('ROLLBACK')
          },
          // Ending the connection ends its transaction, whatever happened.
          async release() {
            locker.release(true)
          },
        }
      },
      cutRemote: 'idle connections are all terminated',
      async remoteCut(ctx) {
        const applicationName = `latchkey_remote_${ctx.run}`
        return {
          url: ctx.urlWith({ params: { application_name: applicationName } }),
          // Idle clients learn of it asynchronously: a request may fail once, never the process.
          async cut() {
            expect(await terminate(ctx, applicationName)).toBeGreaterThan(0)
          },
        }
      },
    },
  },
  {
    schema({ run, freshTable, open, rows }) {
      test('a table in its own schema', async () => {
        const schema = `latchkey_s${run}`
        await rows(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
        const tableName = freshTable()
        const clock = new ManualClock()
        const store = open({ tableName, schema, clock })
        try {
          expect(store.schemaSql()).toContain(`"${schema}"."${tableName}"`)
          const record = makeRecord(clock)
          expect(await store.create(record)).toBe(true)
          expect(await rows(`SELECT count(*)::int AS n FROM "${schema}"."${tableName}"`)).toEqual([{ n: 1 }])
          expect(await rows(`SELECT version FROM "${schema}".latchkey_schema`)).toEqual([{ version: '1' }])
        } finally {
          await store.close()
        }
      })
    },

    options() {
      test.each(['public"', 'a;b', 'a--b', 'a..b', 'a/b', 'my schema'])(
        'refuses the schema %j with a ConfigError',
        (schema) => {
          expect(() => new PostgresStore({ connectionString: URL_, schema })).toThrow(
            expect.objectContaining({ option: 'schema' }),
          )
        },
      )
    },

    async cleanup({ run, rows }) {
      await rows(`DROP SCHEMA IF EXISTS "latchkey_s${run}" CASCADE`)
    },
  },
)

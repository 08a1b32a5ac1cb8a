// The move to a latchkey store on the real servers: from connect-redis 9 (node-redis) to latchkey's
// SqliteStore and to its RedisStore (another key prefix), from connect-pg-simple 10 to its
// PostgresStore, and from express-mysql-session 3 to its MySqlStore. Users signed in under express-session stay signed in after the switch to the drop-in
// with `moveFrom`; the moved record is sealed (no plaintext of the data) and keyed by the hash (the raw
// ID appears nowhere in the new store, dumped raw); `latchkey import-express-sessions` (run in this
// process) copies the rest with the right counts, never over a session already moved, deletes from the
// old store only with --delete-source, and reads connect-pg-simple's table (it has no all()) in pages.
// Prefixes, tables and folders are unique to the run and removed afterwards.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import Database from 'better-sqlite3'
import pgSimple from 'connect-pg-simple'
import { RedisStore as ConnectRedis } from 'connect-redis'
import { sign } from 'cookie-signature'
import mysqlSession from 'express-mysql-session'
import realSession from 'express-session'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createClient } from 'redis'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { run } from '../../src/cli/program.js'
import { generateKey } from '../../src/core/crypto.js'
import { storeKeyOf } from '../../src/core/id.js'
import type { SessionStore } from '../../src/core/store.js'
import dropIn from '../../src/express-session/index.js'
import { MySqlStore } from '../../src/stores/mysql/index.js'
import { PostgresStore } from '../../src/stores/postgres/index.js'
import { RedisStore } from '../../src/stores/redis/index.js'
import { SqliteStore } from '../../src/stores/sqlite/index.js'
import { describeWithService, SERVICE_URLS, serverServices } from '../support/services.js'
import { startApp } from './app.js'

const SECRET = 'keyboard cat'
const KEYS = [generateKey()]
const MARKER = 'plaintext-marker-7f3a'
const services = await serverServices()
const suffix = randomBytes(6).toString('hex')
const dir = mkdtempSync(join(tmpdir(), 'latchkey-es-move-stores-'))
const servers: Array<{ close(): void }> = []
afterAll(() => {
  for (const server of servers) server.close()
  rmSync(dir, { recursive: true, force: true })
})

type Data = Record<string, unknown>
type OldStore = realSession.Store

const app = (middleware: unknown) => startApp(middleware, servers)

async function get(base: string, path: string, cookie = ''): Promise<{ text: string; cookie: string }> {
  const response = await fetch(`${base}${path}`, { headers: { cookie } })
  expect(response.status).toBe(200)
  const set = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { text: await response.text(), cookie: set || cookie }
}

function sidOf(cookie: string): string {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1))
  return value.slice(2, value.lastIndexOf('.'))
}

const cookieOf = (sid: string): string => `connect.sid=${encodeURIComponent(`s:${sign(sid, SECRET)}`)}`

const common = { secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: 600_000 } }

function oldGet(store: OldStore, sid: string): Promise<Data | undefined> {
  return new Promise((resolve, reject) =>
    store.get(sid, (error, session) =>
      error ? reject(error) : resolve((session ?? undefined) as Data | undefined),
    ),
  )
}

function oldSet(store: OldStore, sid: string, session: Data): Promise<void> {
  return new Promise((resolve, reject) =>
    store.set(sid, session as never, (error) => (error ? reject(error) : resolve())),
  )
}

/** Runs `latchkey args` in this process, with the keys. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString()
  })
  const env = { LATCHKEY_KEYS: KEYS.join(',') }
  const code = await run(args, { stdout, stderr, env, signal: new AbortController().signal })
  return { code, stdout: out, stderr: err }
}

let modules = 0
/** A module for --from-module whose exports are `exports` (handed over through a global). */
function moduleOf(exports: Record<string, unknown>): string {
  const name = `latchkey-test-old-store-${suffix}-${++modules}`
  ;(globalThis as Record<string, unknown>)[name] = exports
  const path = join(dir, `${name}.mjs`)
  const lines = Object.keys(exports).map((key) =>
    key === 'default'
      ? `export default globalThis[${JSON.stringify(name)}].default`
      : `export const ${key} = globalThis[${JSON.stringify(name)}].${key}`,
  )
  writeFileSync(path, `${lines.join('\n')}\n`)
  return path
}

/** A latchkey store for the tests: how to open it, dump it raw, and its CLI arguments. */
interface Target {
  readonly store: SessionStore
  /** Every byte of the store that could hold an ID or data, as text. */
  dump(): Promise<string>
  readonly cliArgs: string[]
}

/** The switch: signed in under express-session on `old`, still signed in on the drop-in moving to `target`. */
function switchSuite(title: string, makeOld: () => OldStore, target: () => Target): void {
  test(`${title}: a user signed in under the old store stays signed in; the record is sealed and keyed by the hash`, async () => {
    const old = makeOld()
    const { store, dump } = target()
    const before = await app(realSession({ ...common, store: old }))
    const after = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old }))
    const { cookie } = await get(before, '/login?name=ada')
    await get(before, `/set?key=cart&value=${MARKER}`, cookie)
    const sid = sidOf(cookie)
    expect(await oldGet(old, sid)).toMatchObject({ user: 'ada', cart: MARKER })

    const me = await get(after, '/me', cookie)
    expect(me.text).toBe('ada')
    expect(me.cookie).toBe(cookie)
    expect(await oldGet(old, sid)).toBeUndefined()
    const record = await store.get(storeKeyOf(sid))
    expect(record).toMatchObject({ key: storeKeyOf(sid), version: 1, userId: 'ada' })
    expect((await get(after, '/set?key=theme&value=dark', cookie)).text).toBe('ok')
    expect(JSON.parse((await get(after, '/dump', cookie)).text)).toMatchObject({
      user: 'ada',
      cart: MARKER,
      theme: 'dark',
    })
    const raw = await dump()
    expect(raw).toContain(storeKeyOf(sid))
    expect(raw).not.toContain(sid)
    expect(raw).not.toContain(MARKER)
    expect(raw).not.toContain('dark')
  })
}

/** The import command from `old` (listed by `all`, or by a module's `all`) into `target`. */
function importSuite(
  title: string,
  makeOld: () => OldStore,
  target: () => Target,
  seedRaw: (sid: string, json: string) => Promise<void>,
  extraExports: (old: OldStore) => Record<string, unknown> = () => ({}),
): void {
  test(`${title}: the import command copies the rest, never over a moved session, and counts right`, async () => {
    const old = makeOld()
    const { store, cliArgs } = target()
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old }))
    const future = new Date(Date.now() + 600_000).toISOString()
    const sids = Array.from({ length: 4 }, (_, i) => `import-${suffix}-${i}`)
    for (const [i, sid] of sids.entries()) {
      await oldSet(old, sid, {
        cookie: { originalMaxAge: 600_000, expires: future, path: '/' },
        user: `u${i}`,
      })
    }
    // One moved by a request and changed since, its old copy left behind (a failed clean-up).
    const moved = `import-${suffix}-moved`
    const movedData = { cookie: { originalMaxAge: 600_000, expires: future, path: '/' }, user: 'mover' }
    await oldSet(old, moved, movedData)
    await get(moving, '/set?key=after&value=1', cookieOf(moved))
    await oldSet(old, moved, movedData)
    // One expired (its cookie), one that no express-session wrote (no cookie).
    const past = new Date(Date.now() - 1000).toISOString()
    await seedRaw(
      `import-${suffix}-expired`,
      JSON.stringify({ cookie: { expires: past, path: '/' }, user: 'x' }),
    )
    await seedRaw(`import-${suffix}-broken`, JSON.stringify({ user: 'nobody knows' }))

    const from = moduleOf({ default: old, ...extraExports(old) })
    const first = await cli(['import-express-sessions', '--from-module', from, ...cliArgs, '--json'])
    expect(first.code, first.stderr).toBe(5)
    expect(JSON.parse(first.stdout)).toMatchObject({
      ok: false,
      partial: { copied: 4, alreadyThere: 1, expired: 1, failed: 1, deleted: 0 },
      error: { code: 'ERR_LATCHKEY_PARTIAL' },
    })
    expect(first.stderr).toContain('no cookie field')
    for (const [i, sid] of sids.entries()) {
      expect(await oldGet(old, sid)).toMatchObject({ user: `u${i}` })
      expect((await store.get(storeKeyOf(sid)))?.userId).toBe(`u${i}`)
      expect((await get(moving, '/me', cookieOf(sid))).text).toBe(`u${i}`)
    }
    // The moved session kept what it wrote after its move.
    expect(JSON.parse((await get(moving, '/dump', cookieOf(moved))).text)).toMatchObject({ after: '1' })
    expect(await store.get(storeKeyOf(`import-${suffix}-expired`))).toBeNull()

    await new Promise<void>((resolve, reject) =>
      old.destroy(`import-${suffix}-broken`, (error) => (error ? reject(error) : resolve())),
    )
    for (const sid of sids) await oldSet(old, sid, { cookie: { expires: future }, user: 'overwritten?' })
    const second = await cli([
      'import-express-sessions',
      '--from-module',
      from,
      ...cliArgs,
      '--delete-source',
    ])
    expect(second.code, second.stderr).toBe(0)
    expect(second.stdout.trim()).toBe(
      'copied 0, already there 5, skipped expired 1, failed 0, deleted from the old store 6',
    )
    for (const [i, sid] of sids.entries()) {
      expect(await oldGet(old, sid)).toBeUndefined()
      expect((await get(moving, '/me', cookieOf(sid))).text).toBe(`u${i}`)
    }
    expect(JSON.parse((await get(moving, '/dump', cookieOf(moved))).text)).toMatchObject({ after: '1' })
  })
}

describeWithService(services.redis, 'moving from connect-redis 9', () => {
  const oldPrefix = `latchkey-test-move-old-${suffix}:`
  const newPrefix = `latchkey-test-move-new-${suffix}:`
  const client = createClient({ url: SERVICE_URLS.redis })
  const closing: Array<() => Promise<unknown>> = []
  let sqliteCount = 0

  beforeAll(async () => {
    await client.connect()
  })

  afterAll(async () => {
    for (const close of closing) await close()
    for (const prefix of [oldPrefix, newPrefix]) {
      const keys: string[] = []
      for await (const batch of client.scanIterator({ MATCH: `${prefix}*` })) keys.push(...batch)
      if (keys.length > 0) await client.del(keys)
    }
    await client.close()
  })

  const makeOld = (): OldStore => new ConnectRedis({ client, prefix: oldPrefix }) as unknown as OldStore
  const seedRaw = async (sid: string, json: string): Promise<void> => {
    await client.set(`${oldPrefix}${sid}`, json, { EX: 600 })
  }

  const sqlite = (): Target => {
    const path = join(dir, `moved-${++sqliteCount}.db`)
    const store = new SqliteStore({ path })
    closing.push(() => store.close())
    return {
      store,
      async dump() {
        const db = new Database(path, { readonly: true })
        try {
          const rows = db.prepare('SELECT * FROM latchkey_sessions').all() as Record<string, unknown>[]
          return JSON.stringify(
            rows.map((row) =>
              Object.fromEntries(
                Object.entries(row).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString() : v]),
              ),
            ),
          )
        } finally {
          db.close()
        }
      },
      cliArgs: ['--store', `sqlite:${path}`],
    }
  }

  const redis = (): Target => {
    const store = new RedisStore({ url: SERVICE_URLS.redis, prefix: newPrefix })
    closing.push(() => store.close())
    return {
      store,
      async dump() {
        const parts: string[] = []
        for await (const batch of client.scanIterator({ MATCH: `${newPrefix}*` })) {
          for (const key of batch) {
            const type = await client.type(key)
            const value =
              type === 'hash'
                ? await client.hGetAll(key)
                : type === 'set'
                  ? await client.sMembers(key)
                  : type === 'zset'
                    ? await client.zRange(key, 0, -1)
                    : type === 'string'
                      ? await client.get(key)
                      : type
            parts.push(key, JSON.stringify(value))
          }
        }
        return parts.join('\n')
      },
      cliArgs: ['--store', SERVICE_URLS.redis, '--store-option', `prefix=${newPrefix}`],
    }
  }

  switchSuite('to SqliteStore', makeOld, sqlite)
  switchSuite('to RedisStore (another prefix)', makeOld, redis)
  importSuite('to SqliteStore', makeOld, sqlite, seedRaw)
  importSuite('to RedisStore', makeOld, redis, seedRaw)
})

/**
 * connect-pg-simple has no all() and no ids(): the import command reads its table through the store's own
 * query(), or through an `all` the module exports. Each way gets its own tables.
 */
function pgSimpleSuite(listing: 'its table' | 'an `all` export', tag: string): void {
  describeWithService(services.postgres, `moving from connect-pg-simple 10 (listed by ${listing})`, () => {
    const oldTable = `latchkey_move_old_${tag}_${suffix}`
    const newTable = `latchkey_move_new_${tag}_${suffix}`
    const pool = new pg.Pool({ connectionString: SERVICE_URLS.postgres, max: 4 })
    const stores: PostgresStore[] = []

    beforeAll(async () => {
      await pool.query(`CREATE TABLE "${oldTable}" (
      "sid" varchar NOT NULL COLLATE "default" PRIMARY KEY,
      "sess" json NOT NULL,
      "expire" timestamp(6) NOT NULL
    )`)
    })

    afterAll(async () => {
      for (const store of stores) await store.close()
      await pool.query(`DROP TABLE IF EXISTS "${oldTable}"`)
      await pool.query(`DROP TABLE IF EXISTS "${newTable}"`)
      await pool.end()
    })

    const makeOld = (): OldStore => {
      const PGStore = pgSimple(realSession)
      const settings = { pool, tableName: oldTable, pruneSessionInterval: false as const }
      return new PGStore(settings) as unknown as OldStore
    }
    const postgres = (): Target => {
      const store = new PostgresStore({ connectionString: SERVICE_URLS.postgres, tableName: newTable })
      stores.push(store)
      return {
        store,
        async dump() {
          const { rows } = await pool.query(
            `SELECT key, user_id, convert_from(payload, 'UTF8') AS payload FROM "${newTable}"`,
          )
          return JSON.stringify(rows)
        },
        cliArgs: ['--store', SERVICE_URLS.postgres, '--store-option', `tableName=${newTable}`],
      }
    }
    const seedRaw = async (sid: string, json: string): Promise<void> => {
      await pool.query(
        `INSERT INTO "${oldTable}" (sid, sess, expire) VALUES ($1, $2, now() + interval '1 hour')`,
        [sid, json],
      )
    }

    if (listing === 'its table') {
      switchSuite('to PostgresStore', makeOld, postgres)
      importSuite('to PostgresStore', makeOld, postgres, seedRaw)

      test('its table is read in pages, without the rows connect-pg-simple counts as expired', async () => {
        // Runs after importSuite's --delete-source emptied the old table.
        const future = new Date(Date.now() + 600_000).toISOString()
        await pool.query(
          `INSERT INTO "${oldTable}" (sid, sess, expire)
           SELECT 'paged-' || lpad(n::text, 5, '0'), json_build_object('cookie', json_build_object('expires', $1::text, 'path', '/'), 'user', 'p' || n), now() + interval '1 hour'
           FROM generate_series(1, 1203) AS n`,
          [future],
        )
        await seedRaw('paged-gone', JSON.stringify({ cookie: { expires: future, path: '/' }, user: 'gone' }))
        await pool.query(
          `UPDATE "${oldTable}" SET expire = now() - interval '1 minute' WHERE sid = 'paged-gone'`,
        )
        const from = moduleOf({ default: makeOld() })
        const { store, cliArgs } = postgres()
        const result = await cli(['import-express-sessions', '--from-module', from, ...cliArgs, '--json'])
        expect(result.code, result.stderr).toBe(0)
        expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, copied: 1203, expired: 0, failed: 0 })
        for (const n of [1, 500, 501, 1000, 1001, 1203]) {
          const sid = `paged-${String(n).padStart(5, '0')}`
          expect((await store.get(storeKeyOf(sid)))?.userId, sid).toBe(`p${n}`)
        }
        expect(await store.get(storeKeyOf('paged-gone'))).toBeNull()
      })
    } else {
      importSuite('to PostgresStore, with an `all` export', makeOld, postgres, seedRaw, () => ({
        async all() {
          const { rows } = await pool.query(`SELECT sid, sess FROM "${oldTable}" WHERE expire > now()`)
          return Object.fromEntries(rows.map((row: { sid: string; sess: unknown }) => [row.sid, row.sess]))
        },
      }))
    }
  })
}
pgSimpleSuite('its table', 'table')
pgSimpleSuite('an `all` export', 'export')

describeWithService(services.mariadb, 'moving from express-mysql-session 3', () => {
  const oldTable = `latchkey_move_old_${suffix}`
  const newTable = `latchkey_move_new_${suffix}`
  const url = new URL(SERVICE_URLS.mysql)
  const olds: Array<OldStore & { close(): Promise<void>; onReady(): Promise<void> }> = []
  const stores: MySqlStore[] = []
  let connection: mysql.Connection

  const makeOld = (): OldStore => {
    const MySQLStore = mysqlSession(realSession)
    const settings = {
      host: url.hostname,
      port: Number(url.port || 3306),
      user: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
      database: url.pathname.slice(1),
      connectionLimit: 2,
      clearExpired: false,
      createDatabaseTable: true,
      schema: { tableName: oldTable },
    }
    const store = new MySQLStore(settings) as unknown as (typeof olds)[number]
    olds.push(store)
    return store
  }

  beforeAll(async () => {
    connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql })
    await (makeOld() as (typeof olds)[number]).onReady()
  })

  afterAll(async () => {
    await Promise.all(olds.map((store) => store.close()))
    for (const store of stores) await store.close()
    await connection.query('DROP TABLE IF EXISTS ??', [oldTable])
    await connection.query('DROP TABLE IF EXISTS ??', [newTable])
    await connection.end()
  })

  const mysqlTarget = (): Target => {
    const store = new MySqlStore({ uri: SERVICE_URLS.mysql, tableName: newTable })
    stores.push(store)
    return {
      store,
      async dump() {
        const [rows] = await connection.query('SELECT * FROM ??', [newTable])
        return JSON.stringify(rows)
      },
      cliArgs: ['--store', SERVICE_URLS.mysql, '--store-option', `tableName=${newTable}`],
    }
  }
  const seedRaw = async (sid: string, json: string): Promise<void> => {
    await connection.query('INSERT INTO ?? (session_id, expires, data) VALUES (?, ?, ?)', [
      oldTable,
      sid,
      Math.round(Date.now() / 1000) + 3600,
      json,
    ])
  }

  switchSuite('to MySqlStore', makeOld, mysqlTarget)
  importSuite('to MySqlStore (its all())', makeOld, mysqlTarget, seedRaw)
})

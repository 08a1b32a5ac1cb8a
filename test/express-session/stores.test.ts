// Existing stores, unchanged, with the real packages on the real servers: connect-pg-simple 10 on
// PostgreSQL, express-mysql-session 3 on MariaDB, connect-redis 9 on Redis (node-redis),
// session-file-store 1.5 in a folder, and
// express-session's own MemoryStore. For each: a session written by express-session 1.19 through the
// store is read by the drop-in and the other way round (the switch, and a rolling deploy); the drop-in's
// basic flow (set, read back, regenerate, destroy); and its guarantees with a store that has only get
// and set (two requests changing different keys both keep theirs; a destroyed session is not written
// back). Each store package is built the way an app builds it: `require('pkg')(session)` with
// express-session's module before the switch and the drop-in after. Tables and folders are unique to
// the run and removed afterwards.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pgSimple from 'connect-pg-simple'
import { RedisStore } from 'connect-redis'
import mysqlSession from 'express-mysql-session'
import realSession from 'express-session'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createClient } from 'redis'
import fileStore from 'session-file-store'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import dropIn, { STARTED_AT } from '../../src/express-session/index.js'
import { describeWithService, SERVICE_URLS, serverServices } from '../support/services.js'
import { type Gate, gate, startApp } from './app.js'

const SECRET = ['new secret first', 'keyboard cat']
const services = await serverServices()

/** A store package as an app uses it: built on a session module, then one instance per middleware. */
type AnyStore = realSession.Store
type Module = typeof realSession | typeof dropIn

interface StoreKind {
  /** A store instance for an app whose session module is `module`. */
  make(module: Module): AnyStore
  /** The record of `sid` as the store keeps it, or undefined when there is none. */
  read(sid: string): Promise<Record<string, unknown> | undefined>
}

const servers: Array<{ close(): void }> = []
afterAll(() => {
  for (const server of servers) server.close()
})

const app = (middleware: unknown, slow?: Gate) => startApp(middleware, servers, { slow })

const options = (store: AnyStore) => ({
  secret: SECRET,
  store,
  resave: false,
  saveUninitialized: false,
  cookie: { maxAge: 60_000 },
})

const realApp = (kind: StoreKind, slow?: Gate) => app(realSession(options(kind.make(realSession))), slow)
const dropInApp = (kind: StoreKind, slow?: Gate, absoluteTimeoutMs?: number) =>
  app(dropIn({ ...options(kind.make(dropIn)), absoluteTimeoutMs } as never), slow)

async function get(base: string, path: string, cookie = ''): Promise<{ text: string; cookie: string }> {
  const response = await fetch(`${base}${path}`, { headers: { cookie } })
  expect(response.status).toBe(200)
  const set = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { text: await response.text(), cookie: set || cookie }
}

/** The session ID inside a `connect.sid=s%3A<id>.<signature>` cookie. */
function sidOf(cookie: string): string {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1))
  expect(value).toMatch(/^s:/)
  return value.slice(2, value.lastIndexOf('.'))
}

/** The suite every store runs. */
function storeSuite(kind: StoreKind): void {
  test('signed in under express-session, still signed in under the drop-in', async () => {
    const before = await realApp(kind)
    const after = await dropInApp(kind)
    const { cookie } = await get(before, '/login?name=ada')
    expect(cookie).toMatch(/^connect\.sid=s%3A/)
    expect((await get(after, '/me', cookie)).text).toBe('ada')
    await get(after, '/set?key=cart&value=book', cookie)
    expect(await kind.read(sidOf(cookie))).toMatchObject({ user: 'ada', cart: 'book' })
    expect((await get(before, '/me', cookie)).text).toBe('ada')
  })

  test('signed in under the drop-in, still signed in under express-session (a rolling deploy)', async () => {
    const after = await dropInApp(kind)
    const before = await realApp(kind)
    const { cookie } = await get(after, '/login?name=grace')
    expect((await get(before, '/me', cookie)).text).toBe('grace')
    await get(before, '/set?key=theme&value=dark', cookie)
    expect(await kind.read(sidOf(cookie))).toMatchObject({ user: 'grace', theme: 'dark' })
    expect((await get(after, '/me', cookie)).text).toBe('grace')
    expect((await get(after, '/me', 'connect.sid=s%3Aforged.sig')).text).toBe('nobody')
  })

  test("the drop-in's flow: set a value, read it back, regenerate, destroy", async () => {
    const base = await dropInApp(kind)
    const first = await get(base, '/login?name=ada')
    const sid = first.text
    expect(sidOf(first.cookie)).toBe(sid)
    expect(await kind.read(sid)).toMatchObject({ user: 'ada', cookie: { originalMaxAge: 60_000 } })
    expect((await get(base, '/me', first.cookie)).text).toBe('ada')

    const second = await get(base, '/regenerate', first.cookie)
    expect(second.text).not.toBe(sid)
    expect(sidOf(second.cookie)).toBe(second.text)
    expect(await kind.read(sid)).toBeUndefined()
    expect((await get(base, '/me', first.cookie)).text).toBe('nobody')
    expect((await get(base, '/me', second.cookie)).text).toBe('after regenerate')

    expect((await get(base, '/logout', second.cookie)).text).toBe('bye')
    expect(await kind.read(second.text)).toBeUndefined()
    expect((await get(base, '/me', second.cookie)).text).toBe('nobody')
  })

  test('two concurrent requests changing different keys both keep their change', async () => {
    const slow = gate()
    const base = await dropInApp(kind, slow)
    const { cookie } = await get(base, '/login?name=ada')
    const a = get(base, '/slow?key=a&value=1', cookie)
    await new Promise((resolve) => setTimeout(resolve, 50))
    await get(base, '/set?key=b&value=2', cookie)
    slow.open()
    await a
    expect(await kind.read(sidOf(cookie))).toMatchObject({ user: 'ada', a: '1', b: '2' })
  })

  test('a session destroyed meanwhile is not written back by a request that loaded it earlier', async () => {
    const slow = gate()
    const base = await dropInApp(kind, slow)
    const { cookie } = await get(base, '/login?name=ada')
    const late = get(base, '/slow?key=cart&value=book', cookie)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await get(base, '/logout', cookie)).text).toBe('bye')
    slow.open()
    await late
    expect(await kind.read(sidOf(cookie))).toBeUndefined()
    expect((await get(base, '/me', cookie)).text).toBe('nobody')
  })

  test('a request that only read a session destroyed meanwhile succeeds, and writes nothing back', async () => {
    const slow = gate()
    const base = await dropInApp(kind, slow)
    const { cookie } = await get(base, '/login?name=ada')
    const late = get(base, '/slow-read', cookie)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await get(base, '/logout', cookie)).text).toBe('bye')
    slow.open()
    expect((await late).text).toBe('ada')
    expect(await kind.read(sidOf(cookie))).toBeUndefined()
  })

  test('absoluteTimeoutMs: express-session keeps the start through the store; past it, the session is destroyed', async () => {
    const timeout = 600
    const base = await dropInApp(kind, undefined, timeout)
    const old = await realApp(kind)
    const started = Date.now()
    const { cookie } = await get(base, '/login?name=ada')
    const sid = sidOf(cookie)
    const startedAt = (await kind.read(sid))?.[STARTED_AT]
    expect(startedAt).toBeGreaterThanOrEqual(started)
    await get(old, '/set?key=cart&value=book', cookie)
    expect(await kind.read(sid)).toMatchObject({ cart: 'book', [STARTED_AT]: startedAt })
    expect((await get(base, '/me', cookie)).text).toBe('ada')
    await new Promise((resolve) => setTimeout(resolve, (startedAt as number) + timeout - Date.now() + 20))
    expect((await get(base, '/me', cookie)).text).toBe('nobody')
    expect(await kind.read(sid)).toBeUndefined()
  })
}

/** `store.get` as a promise; a missing record (session-file-store answers ENOENT) is undefined. */
function readFrom(store: AnyStore, sid: string): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve, reject) =>
    store.get(sid, (error, data) => {
      if (error && (error as { code?: unknown }).code !== 'ENOENT') return reject(error)
      resolve((data ?? undefined) as Record<string, unknown> | undefined)
    }),
  )
}

const suffix = randomBytes(6).toString('hex')

describeWithService(services.postgres, 'the drop-in and express-session on connect-pg-simple 10', () => {
  const table = `latchkey_es_${suffix}`
  const pool = new pg.Pool({ connectionString: SERVICE_URLS.postgres, max: 4 })
  const stores: AnyStore[] = []
  const kind: StoreKind = {
    make(module) {
      const PGStore = pgSimple(module as typeof realSession)
      const settings = { pool, tableName: table, pruneSessionInterval: false }
      const store = new PGStore(settings)
      stores.push(store)
      return store
    },
    read: (sid) => readFrom(stores[0] ?? kind.make(realSession), sid),
  }

  beforeAll(async () => {
    // The table connect-pg-simple documents (its table.sql), under a name unique to this run.
    await pool.query(`CREATE TABLE "${table}" (
      "sid" varchar NOT NULL COLLATE "default",
      "sess" json NOT NULL,
      "expire" timestamp(6) NOT NULL
    ) WITH (OIDS=FALSE)`)
    await pool.query(
      `ALTER TABLE "${table}" ADD CONSTRAINT "${table}_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE`,
    )
    await pool.query(`CREATE INDEX "IDX_${table}_expire" ON "${table}" ("expire")`)
  })

  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS "${table}"`)
    await pool.end()
  })

  storeSuite(kind)
})

describeWithService(services.mariadb, 'the drop-in and express-session on express-mysql-session 3', () => {
  const table = `latchkey_es_${suffix}`
  const url = new URL(SERVICE_URLS.mysql)
  const stores: Array<AnyStore & { close(): Promise<void>; onReady(): Promise<void> }> = []
  const kind: StoreKind = {
    make(module) {
      const MySQLStore = mysqlSession(module as typeof realSession)
      const settings = {
        host: url.hostname,
        port: Number(url.port || 3306),
        user: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
        connectionLimit: 2,
        clearExpired: false,
        createDatabaseTable: true,
        schema: { tableName: table },
      }
      const store = new MySQLStore(settings) as unknown as (typeof stores)[number]
      stores.push(store)
      return store
    },
    read: (sid) => readFrom(stores[0] ?? kind.make(realSession), sid),
  }

  beforeAll(async () => {
    // The package creates its own table (createDatabaseTable), under a name unique to this run.
    await (kind.make(realSession) as (typeof stores)[number]).onReady()
  })

  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close()))
    const connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql })
    await connection.query('DROP TABLE IF EXISTS ??', [table])
    await connection.end()
  })

  storeSuite(kind)
})

describeWithService(services.redis, 'the drop-in and express-session on connect-redis 9', () => {
  // connect-redis extends express-session's Store itself (not a function of the session module).
  const prefix = `latchkey-test-es-${suffix}:`
  const client = createClient({ url: SERVICE_URLS.redis })
  const kind: StoreKind = {
    make: () => new RedisStore({ client, prefix }),
    read: (sid) => readFrom(kind.make(realSession), sid),
  }

  beforeAll(async () => {
    await client.connect()
  })

  afterAll(async () => {
    const keys: string[] = []
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*` })) keys.push(...batch)
    if (keys.length > 0) await client.del(keys)
    await client.close()
  })

  storeSuite(kind)
})

describe('the drop-in and express-session on session-file-store 1.5', () => {
  const folder = mkdtempSync(join(tmpdir(), 'latchkey-es-files-'))
  const kind: StoreKind = {
    make(module) {
      const FileStore = fileStore(module as typeof realSession)
      const settings = { path: folder, retries: 0, reapInterval: -1, logFn: () => {} }
      return new FileStore(settings)
    },
    read: (sid) => readFrom(kind.make(realSession), sid),
  }

  afterAll(() => {
    rmSync(folder, { recursive: true, force: true })
  })

  storeSuite(kind)
})

describe("the drop-in and express-session on express-session's MemoryStore", () => {
  // One process: each app gets its own MemoryStore instance (as each middleware sets the store's
  // generate), all of them over one table of sessions, as two versions of an app share a server.
  const sessions = Object.create(null) as Record<string, string>
  const kind: StoreKind = {
    make() {
      const store = new realSession.MemoryStore()
      Object.assign(store, { sessions })
      return store
    },
    read: (sid) => readFrom(kind.make(realSession), sid),
  }

  storeSuite(kind)
})

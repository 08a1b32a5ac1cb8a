// Stores where they used to be silent or wrong, built directly or through openStore: a server that
// refuses is a configuration error (500, never 503 + Retry-After), a Redis prefix nobody set up is
// "no such prefix", an option the URL sets is refused, a local path or driver setting that is wrong
// is a configuration error naming it, and unknown constructor options name the nearest one.
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'redis'
import { afterAll, describe, expect, test } from 'vitest'
import { withSessions } from '../src/adapters/node.js'
import { generateKey } from '../src/core/crypto.js'
import { ConfigError, isUnavailableError, type SessionError, StoreError } from '../src/core/errors.js'
import { generateId } from '../src/core/id.js'
import { createSessionManager } from '../src/core/manager.js'
import { isClosableStore, type SessionStore } from '../src/core/store.js'
import { FileStore } from '../src/stores/file/index.js'
import { openStore } from '../src/stores/index.js'
import { MySqlStore } from '../src/stores/mysql/index.js'
import { PostgresStore } from '../src/stores/postgres/index.js'
import { RedisStore } from '../src/stores/redis/index.js'
import { makeRecord } from '../src/testing/conformance.js'
import {
  changedUrl,
  describeWithService,
  dropRedisPrefixes,
  SERVICE_URLS,
  serverServices,
} from './support/services.js'

const dir = mkdtempSync(join(tmpdir(), 'latchkey-store-edges-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const { postgres, mariadb, redis } = await serverServices()

async function close(store: SessionStore): Promise<void> {
  if (isClosableStore(store)) await store.close()
}

/** What `call` rejects with (it must reject). */
async function rejection(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call()
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}

/**
 * The status and `Retry-After` of a request bringing a session cookie to a node:http app whose
 * manager uses `store`: the manager reads the store, so the store's error is what the app answers.
 */
async function answerOf(store: SessionStore): Promise<{ status: number; retryAfter: string | null }> {
  const manager = createSessionManager({ store, keys: [generateKey()], cookie: { secure: false } })
  const server: Server = createServer(
    withSessions(manager, (_req, res) => res.end('ok'), { onError: () => {} }),
  )
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const { port } = server.address() as AddressInfo
    const response = await fetch(`http://127.0.0.1:${port}/`, { headers: { cookie: `sid=${generateId()}` } })
    await response.text()
    return { status: response.status, retryAfter: response.headers.get('retry-after') }
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/**
 * A store built directly whose server refuses: every operation rejects with a `ConfigError` naming the
 * server's reason (not a retryable `StoreError`), again on the next call, and the app answers 500.
 */
async function expectRefused(make: () => SessionStore, reason: string): Promise<void> {
  const store = make()
  try {
    for (let call = 0; call < 2; call++) {
      const error = await rejection(() => store.get('A'.repeat(43)))
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).code).toBe('ERR_LATCHKEY_CONFIG')
      expect((error as Error).message).toContain(reason)
      expect((error as Error).message).toContain('retrying will not help')
      expect(isUnavailableError(error)).toBe(false)
    }
  } finally {
    await close(store)
  }
  const again = make()
  try {
    expect(await answerOf(again)).toEqual({ status: 500, retryAfter: null })
  } finally {
    await close(again)
  }
}

describeWithService(postgres, 'PostgresStore built directly, refused by the server', () => {
  test('a role that does not exist: a ConfigError with the reason, answered 500', async () => {
    const connectionString = changedUrl(SERVICE_URLS.postgres, { user: 'latchkey_no_such_role' })
    await expectRefused(
      () => new PostgresStore({ connectionString, pruneIntervalMs: 0 }),
      'PostgreSQL refused the connection: role "latchkey_no_such_role" does not exist',
    )
  })

  test('a database that does not exist', async () => {
    const connectionString = changedUrl(SERVICE_URLS.postgres, { path: '/latchkey_no_such_db' })
    await expectRefused(
      () => new PostgresStore({ connectionString, pruneIntervalMs: 0 }),
      'database "latchkey_no_such_db" does not exist',
    )
  })

  test('a server that does not answer is still a StoreError (503)', async () => {
    const store = new PostgresStore({
      connectionString: 'postgres://root@127.0.0.1:1/test',
      pruneIntervalMs: 0,
    })
    try {
      const error = await rejection(() => store.get('A'.repeat(43)))
      expect(error).toBeInstanceOf(StoreError)
      expect(isUnavailableError(error)).toBe(true)
    } finally {
      await close(store)
    }
  })
})

describeWithService(mariadb, 'MySqlStore built directly, refused by the server', () => {
  test('a user that does not exist: a ConfigError with the reason, answered 500', async () => {
    const uri = changedUrl(SERVICE_URLS.mysql, { user: 'latchkey_no_such_user' })
    await expectRefused(
      () => new MySqlStore({ uri, pruneIntervalMs: 0 }),
      'MySQL/MariaDB refused the connection: Access denied',
    )
  })

  test('a database that does not exist', async () => {
    const uri = changedUrl(SERVICE_URLS.mysql, { path: '/latchkey_no_such_db' })
    await expectRefused(
      () => new MySqlStore({ uri, pruneIntervalMs: 0 }),
      "Unknown database 'latchkey_no_such_db'",
    )
  })
})

describeWithService(redis, 'RedisStore built directly, refused by the server', () => {
  test('a wrong password: a ConfigError with the reason, answered 500', async () => {
    const url = changedUrl(SERVICE_URLS.redis, { password: 'wrong' })
    await expectRefused(() => new RedisStore({ url }), 'Redis refused the connection')
  })

  test('a DB index out of range', async () => {
    const url = changedUrl(SERVICE_URLS.redis, { path: '/99' })
    await expectRefused(() => new RedisStore({ url }), 'DB index is out of range')
  })
})

describeWithService(
  redis,
  'a Redis prefix is set up (its marker key), so a mistyped one is not an empty store',
  () => {
    const run = randomBytes(4).toString('hex')
    const prefixes: string[] = []
    const prefix = (name: string) => {
      const made = `latchkey-edges-${run}-${name}:`
      prefixes.push(made)
      return made
    }
    const admin = createClient({ url: SERVICE_URLS.redis })
    admin.on('error', () => {})

    afterAll(async () => {
      await dropRedisPrefixes(...prefixes)
      if (admin.isOpen) await admin.close()
    })

    async function marker(of: string): Promise<string | null> {
      if (!admin.isOpen) await admin.connect()
      return admin.get(`${of}schema`)
    }

    test('createSchema: false on a prefix with nothing under it: no such prefix (ERR_LATCHKEY_NO_SCHEMA)', async () => {
      const unused = prefix('unused')
      const store = new RedisStore({ url: SERVICE_URLS.redis, prefix: unused, createSchema: false })
      try {
        const error = await rejection(() => store.count())
        expect(error).toBeInstanceOf(StoreError)
        const cause = (error as StoreError).cause as SessionError
        expect(cause.code).toBe('ERR_LATCHKEY_NO_SCHEMA')
        expect(cause.message).toContain(`no such prefix ${unused}`)
        expect(cause.message).toContain('latchkey migrate')
      } finally {
        await close(store)
      }
      expect(await marker(unused)).toBeNull()
      const opened = await rejection(() =>
        openStore(SERVICE_URLS.redis, { storeOptions: { prefix: unused, createSchema: false } }),
      )
      expect((opened as SessionError).code).toBe('ERR_LATCHKEY_NO_SCHEMA')
      expect((opened as Error).message).toContain(`no such prefix ${unused}`)
    })

    test('a store that may create writes the marker on its first operation; then createSchema: false opens it', async () => {
      const used = prefix('used')
      const store = new RedisStore({ url: SERVICE_URLS.redis, prefix: used })
      try {
        expect(await store.get('A'.repeat(43))).toBeNull()
        expect(await marker(used)).toBe('1')
      } finally {
        await close(store)
      }
      const reader = new RedisStore({ url: SERVICE_URLS.redis, prefix: used, createSchema: false })
      try {
        expect(await reader.count()).toBe(0)
      } finally {
        await close(reader)
      }
    })

    test('a prefix of a deployment from before the marker (sessions, no marker) is read, and not written', async () => {
      const legacy = prefix('legacy')
      const writer = new RedisStore({ url: SERVICE_URLS.redis, prefix: legacy })
      try {
        expect(await writer.create(makeRecord({ now: () => Date.now() }))).toBe(true)
      } finally {
        await close(writer)
      }
      await admin.del(`${legacy}schema`)
      const reader = new RedisStore({ url: SERVICE_URLS.redis, prefix: legacy, createSchema: false })
      try {
        expect(await reader.count()).toBe(1)
      } finally {
        await close(reader)
      }
      expect(await marker(legacy)).toBeNull()
    })

    test('runMigration writes the marker, then finds it', async () => {
      const fresh = prefix('migrate')
      const store = new RedisStore({ url: SERVICE_URLS.redis, prefix: fresh, createSchema: false })
      try {
        expect(await store.runMigration()).toEqual({
          prefix: fresh,
          key: `${fresh}schema`,
          outcome: 'created',
          from: 0,
          to: 1,
        })
        expect(await store.runMigration()).toMatchObject({ outcome: 'current', from: 1, to: 1 })
        expect(await store.count()).toBe(0)
      } finally {
        await close(store)
      }
    })

    test('createSchema must be a boolean', () => {
      expect(() => new RedisStore({ url: SERVICE_URLS.redis, createSchema: 'no' as never })).toThrow(
        'createSchema: must be true or false',
      )
    })
  },
)

describe('openStore refuses a store option that the URL sets, never drops it', () => {
  test.each([
    ['sqlite:./sessions.db', { path: './other.db' }, 'path: the database file is set by the store URL'],
    ['file:./sessions', { directory: './other' }, 'directory: the folder is set by the store URL'],
    [
      'postgres://root@127.0.0.1:5432/test',
      { connectionString: 'postgres://other@127.0.0.1/db' },
      'connectionString: the server and database is set by the store URL',
    ],
    ['postgresql://root@127.0.0.1:5432/test', { pool: {} }, 'new PostgresStore({ pool })'],
    ['mysql://root@127.0.0.1:3306/test', { uri: 'mysql://other@127.0.0.1/db' }, 'uri: the server'],
    ['mariadb://root@127.0.0.1:3306/test', { pool: {} }, 'new MySqlStore({ pool })'],
    ['redis://127.0.0.1:6379', { url: 'redis://127.0.0.1:6380' }, 'url: the server is set by the store URL'],
    ['rediss://127.0.0.1:6379', { client: {} }, 'new RedisStore({ client })'],
    [
      'redis+cluster://127.0.0.1:1,127.0.0.1:2',
      { url: 'redis://x:1' },
      'url: the cluster is set by the store URL',
    ],
  ])('%s with %o', async (url, storeOptions, expected) => {
    const error = await rejection(() => openStore(url, { check: false, storeOptions }))
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain(expected)
  })

  test('the URL is shown with its password masked', async () => {
    const error = await rejection(() =>
      openStore('postgres://u:s3cret@127.0.0.1:1/db', { storeOptions: { connectionString: 'x' } }),
    )
    expect((error as Error).message).toContain(
      'connectionString: the server and database is set by the store URL postgres://u:***@127.0.0.1:1/db',
    )
    expect((error as Error).message).not.toContain('s3cret')
  })

  test('a clock given both to openStore and in storeOptions', async () => {
    const clock = { now: () => 0 }
    await expect(openStore('memory:', { clock, storeOptions: { clock } })).rejects.toThrow(
      'clock: given twice',
    )
    await expect(openStore('memory:', { storeOptions: 5 as never })).rejects.toThrow(
      'storeOptions: must be an object',
    )
  })
})

describe('a local path or a driver setting that is wrong is a ConfigError naming it, not "does not answer"', () => {
  test('sqlite: a file that is not a database', async () => {
    const path = join(dir, 'notdb.txt')
    writeFileSync(path, 'not a database, only text. '.repeat(10))
    for (const createSchema of [true, false]) {
      const error = await rejection(() => openStore(`sqlite:${path}`, { storeOptions: { createSchema } }))
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as Error).message).toContain('the file is not a SQLite database')
      expect((error as Error).message).not.toContain('does not answer')
    }
  })

  test('sqlite: a folder', async () => {
    const path = join(dir, 'adir')
    mkdirSync(path)
    for (const createSchema of [true, false]) {
      const error = await rejection(() => openStore(`sqlite:${path}`, { storeOptions: { createSchema } }))
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as Error).message).toContain(`${path} is a folder, not a database file`)
    }
  })

  test('sqlite: a folder of the path that does not exist', async () => {
    const error = await rejection(() => openStore(`sqlite:${join(dir, 'no-such-folder', 'x.db')}`))
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain('a folder of the path does not exist')
  })

  test('file: a file where the folder should be', async () => {
    const path = join(dir, 'plain-file')
    writeFileSync(path, 'x')
    const error = await rejection(() => openStore(`file:${path}`))
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain(`${path} is a file, not a folder`)
  })

  test('mysql: an ssl setting mysql2 does not know (no server needed)', async () => {
    const error = await rejection(() => openStore('mysql://root@127.0.0.1:1/test?ssl=nonsense'))
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toContain("Unknown SSL profile 'nonsense'")
    expect(() => new MySqlStore({ uri: 'mysql://root@127.0.0.1:1/test?ssl=nonsense' })).toThrow(ConfigError)
  })
})

describe("unknown options of a store's constructor are refused, naming the nearest one", () => {
  test.each([
    [
      'PostgresStore',
      () => new PostgresStore({ connectionString: SERVICE_URLS.postgres, tablename: 'x' } as never),
      'tablename',
      'tableName',
    ],
    [
      'MySqlStore',
      () => new MySqlStore({ uri: SERVICE_URLS.mysql, poolOption: {} } as never),
      'poolOption',
      'poolOptions',
    ],
    [
      'RedisStore',
      () => new RedisStore({ url: SERVICE_URLS.redis, prefx: 'a:' } as never),
      'prefx',
      'prefix',
    ],
    [
      'FileStore',
      () => new FileStore({ directory: join(dir, 'files'), createDirectoy: false } as never),
      'createDirectoy',
      'createDirectory',
    ],
  ])('%s', (store, make, option, nearest) => {
    let caught: unknown
    try {
      make()
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(ConfigError)
    expect((caught as ConfigError).option).toBe(option)
    expect((caught as Error).message).toBe(
      `${option}: is not an option of ${store}: did you mean ${nearest}?`,
    )
  })
})

describe('a callback where a promise is returned', () => {
  test('the TypeError names the promise form and the drop-in, latchkey/express-session', async () => {
    const store = await openStore('memory:')
    const manager = createSessionManager({ store, keys: [generateKey()] })
    const callback = () => {}
    expect(() => manager.revoke('handle', callback as never)).toThrow(/await manager\.revoke\(\.\.\.\)/)
    expect(() => manager.revoke('handle', callback as never)).toThrow(/latchkey\/express-session/)
    expect(() => manager.listUserSessions('alice', callback as never)).toThrow(/latchkey\/express-session/)
  })
})

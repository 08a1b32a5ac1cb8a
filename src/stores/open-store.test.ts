import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test, vi } from 'vitest'
import { SERVICE_URLS } from '../../test/support/services.js'
import { ConfigError, StoreError } from '../core/errors.js'
import { isClosableStore, type SessionStore } from '../core/store.js'
import { makeRecord } from '../testing/conformance.js'
import { ManualClock } from '../testing/index.js'
import { maskStoreUrl, openStore } from './index.js'

const dir = mkdtempSync(join(tmpdir(), 'latchkey-open-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Drops a test table and its schema-version row. */
async function dropTable(url: string, table: string): Promise<void> {
  if (url.startsWith('postgres')) {
    const { default: pg } = await import('pg')
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    await client.query(`DROP TABLE IF EXISTS "${table}"`)
    await client.query('DELETE FROM latchkey_schema WHERE table_name = $1', [table])
    await client.end()
  } else {
    const { default: mysql } = await import('mysql2/promise')
    const connection = await mysql.createConnection(url)
    await connection.query(`DROP TABLE IF EXISTS \`${table}\``)
    await connection.query('DELETE FROM latchkey_schema WHERE table_name = ?', [table])
    await connection.end()
  }
}

async function roundTrip(store: SessionStore): Promise<void> {
  const clock = new ManualClock()
  const record = makeRecord({ now: () => Date.now() })
  try {
    expect(await store.create(record)).toBe(true)
    expect((await store.get(record.key))?.payload).toBe(record.payload)
    await store.destroy(record.key)
  } finally {
    if (isClosableStore(store)) await store.close()
  }
  expect(clock).toBeDefined()
}

describe('openStore', () => {
  test.each([
    ['memory:', 'MemoryStore'],
    [`file:${join(dir, 'sessions')}`, 'FileStore'],
    [`file://${join(dir, 'absolute')}`, 'FileStore'],
    [`sqlite:${join(dir, 'a.db')}`, 'SqliteStore'],
    [`sqlite://${join(dir, 'b.db')}`, 'SqliteStore'],
    ['sqlite::memory:', 'SqliteStore'],
  ])('%s opens a working %s', async (url, name) => {
    const store = await openStore(url)
    expect(store.constructor.name).toBe(name)
    await roundTrip(store)
  })

  test.each([
    [SERVICE_URLS.postgres, 'PostgresStore'],
    [SERVICE_URLS.mysql, 'MySqlStore'],
    [SERVICE_URLS.redis, 'RedisStore'],
  ])('%s opens a working %s (when the server answers)', async (url, name) => {
    let store: SessionStore
    // Its own table or prefix, removed afterwards, so nothing is left in the shared test servers.
    const table = `open_test_${Math.random().toString(36).slice(2, 10)}`
    try {
      store = await openStore(url, {
        storeOptions: name === 'RedisStore' ? { prefix: `${table}:` } : { tableName: table },
      })
    } catch (error) {
      if (process.env.CI === 'true') throw error
      console.warn(`skipped: openStore(${maskStoreUrl(url)}): ${String(error)}`)
      return
    }
    expect(store.constructor.name).toBe(name)
    await roundTrip(store)
    if (name !== 'RedisStore') await dropTable(url, table)
  })

  test('an unknown scheme or a malformed URL is a ConfigError naming the known schemes', async () => {
    await expect(openStore('mongodb://db/sessions')).rejects.toThrow(ConfigError)
    await expect(openStore('mongodb://db/sessions')).rejects.toThrow(/memory: file: sqlite:/)
    await expect(openStore('no scheme at all')).rejects.toThrow(ConfigError)
    await expect(openStore('file:')).rejects.toThrow(/a path is missing/)
    await expect(openStore('redis+cluster://no-port')).rejects.toThrow(ConfigError)
  })

  test('an unreachable server is a StoreError naming the URL with its password masked', async () => {
    for (const url of [
      'postgres://alice:s3cret@127.0.0.1:9/test',
      'mysql://alice:s3cret@127.0.0.1:9/test',
      'redis://alice:s3cret@127.0.0.1:9',
    ]) {
      const error = await openStore(url).then(
        () => null,
        (e: unknown) => e,
      )
      expect(error, url).toBeInstanceOf(StoreError)
      const text = `${(error as Error).message} ${String((error as Error).cause)}`
      expect(text).toContain(':***@127.0.0.1:9')
      expect(text).not.toContain('s3cret')
    }
  })

  test('maskStoreUrl hides passwords and leaves the rest alone', () => {
    expect(maskStoreUrl('postgres://u:p%40ss@h:5432/db')).toBe('postgres://u:***@h:5432/db')
    expect(maskStoreUrl('redis://:secret@h:6379')).toBe('redis://:***@h:6379')
    expect(maskStoreUrl('redis://h:6379')).toBe('redis://h:6379')
    expect(maskStoreUrl('sqlite:./a.db')).toBe('sqlite:./a.db')
    expect(maskStoreUrl('redis+cluster://:one@a:7000,u:two@b:7001,c:7002')).toBe(
      'redis+cluster://:***@a:7000,u:***@b:7001,c:7002',
    )
    expect(maskStoreUrl('mysql://u:pa/ss@h/db?x=1')).toBe('mysql://u:***@h/db?x=1')
    expect(maskStoreUrl('postgres://u@h/db?application_name=a@b')).toBe(
      'postgres://u@h/db?application_name=a@b',
    )
  })

  test('a missing driver package is a ConfigError saying what to install', async () => {
    vi.resetModules()
    vi.doMock('./postgres/index.js', () => {
      throw Object.assign(new Error("Cannot find package 'pg'"), { code: 'ERR_MODULE_NOT_FOUND' })
    })
    try {
      const { openStore: open } = await import('./index.js')
      const error = await open('postgres://u:pw@127.0.0.1/db').then(
        () => null,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(Error)
      expect((error as ConfigError).code).toBe('ERR_LATCHKEY_CONFIG')
      expect((error as Error).message).toContain('npm install pg')
      expect((error as Error).message).toContain('postgres://u:***@127.0.0.1/db')
    } finally {
      vi.doUnmock('./postgres/index.js')
      vi.resetModules()
    }
  })
})

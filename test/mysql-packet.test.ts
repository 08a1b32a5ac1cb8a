/**
 * A record larger than the server's `max_allowed_packet` is the request's own fault: MySqlStore must
 * refuse it with an error that is not "the store is down" (answered 500, never 503 with Retry-After),
 * and MariaDB closing that connection must not reach the next request on the same pool.
 */
import mysql, { type RowDataPacket } from 'mysql2/promise'
import { expect, test } from 'vitest'
import { systemClock } from '../src/core/clock.js'
import { isUnavailableError, SessionError } from '../src/core/errors.js'
import { MySqlStore } from '../src/stores/mysql/index.js'
import { makeRecord, randomStoreKey } from '../src/testing/conformance.js'
import { describeWithService, SERVICE_URLS, service } from './support/services.js'

const URI = SERVICE_URLS.mysql
/** One connection: the refused statement and the next ones share it unless the pool drops it. */
const POOL_SIZE = 1

const mariadb = await service('MariaDB', URI, async () => {
  const connection = await mysql.createConnection({ uri: URI, connectTimeout: 4000 })
  await connection.end()
})

/** The server's `max_allowed_packet`, in bytes. */
async function maxAllowedPacket(): Promise<number> {
  const connection = await mysql.createConnection({ uri: URI })
  try {
    const [rows] = await connection.query<RowDataPacket[]>('SELECT @@max_allowed_packet AS max')
    return Number(rows[0]?.max)
  } finally {
    await connection.end()
  }
}

describeWithService(mariadb, 'MySqlStore and a record past max_allowed_packet', () => {
  test('is refused as the request’s own fault, and the pool’s next operations succeed', async () => {
    const limit = await maxAllowedPacket()
    const pool = mysql.createPool({ uri: URI, connectionLimit: POOL_SIZE })
    const store = new MySqlStore({
      pool,
      tableName: `latchkey_packet_${randomStoreKey()
        .slice(0, 10)
        .replace(/[^A-Za-z0-9]/g, '_')}`,
      pruneIntervalMs: 0,
      commandTimeoutMs: 30_000,
    })
    try {
      const small = makeRecord(systemClock)
      expect(await store.create(small)).toBe(true)

      const huge = makeRecord(systemClock, { payload: 'x'.repeat(limit + 1024) })
      const error = await store.create(huge).then(
        () => new Error('stored a record past max_allowed_packet'),
        (rejection: unknown) => rejection,
      )
      expect(error).toBeInstanceOf(SessionError)
      expect(isUnavailableError(error)).toBe(false)
      expect((error as SessionError).code).toBe('ERR_LATCHKEY_SESSION_TOO_LARGE')
      expect((error as Error).message).toMatch(/max_allowed_packet/)

      // Same pool, one connection: what comes next must not meet the connection MariaDB closed.
      expect(await store.get(small.key)).toEqual(small)
      const other = makeRecord(systemClock)
      expect(await store.create(other)).toBe(true)
      expect(await store.update({ ...huge, payload: 'x' }, 1)).toBe(false)
      expect(await store.get(huge.key)).toBeNull()
    } finally {
      await store.close()
      await pool.end()
    }
  }, 60_000)
})

import { describe, expect, test } from 'vitest'
import { ManualClock } from '../../core/clock.js'
import { ConfigError } from '../../core/errors.js'
import { makeRecord } from '../../testing/conformance.js'
import { mysqlDialect, postgresDialect, type SqlDialect, sqliteDialect } from './dialects.js'
import type { SqlPort, SqlValue } from './port.js'
import { EXPIRY_SLACK_MS, PRUNE_BATCH_SIZE, SessionQueries } from './queries.js'

const dialects: [string, SqlDialect][] = [
  ['SQLite', sqliteDialect],
  ['PostgreSQL', postgresDialect],
  ['MySQL', mysqlDialect],
]

/** A port that records every statement and answers `run` with the counts it is given, in turn. */
function recordingPort(
  changes: number[] = [],
): SqlPort & { calls: { sql: string; params: readonly SqlValue[] }[] } {
  const calls: { sql: string; params: readonly SqlValue[] }[] = []
  return {
    calls,
    run: async (sql, params) => {
      calls.push({ sql, params })
      return changes.shift() ?? 0
    },
    one: async (sql, params) => {
      calls.push({ sql, params })
      return undefined
    },
    all: async (sql, params) => {
      calls.push({ sql, params })
      return []
    },
  }
}

describe('SessionQueries', () => {
  test.each(
    dialects.flatMap(([name, dialect]) =>
      [
        'x"; DROP TABLE y; --',
        'x`; DROP TABLE y; --',
        "x'",
        'a;b',
        'a--b',
        'a..b',
        'schema.table',
        '../etc',
        'a/b',
        'a b',
        ' a',
        'a\u0000',
        '1table',
        '',
        'LATCHKEY_SCHEMA',
      ].map((tableName) => [name, tableName, dialect] as const),
    ),
  )('%s refuses the table name %j with a ConfigError', (_, tableName, dialect) => {
    const build = () => new SessionQueries(dialect, tableName)
    expect(build).toThrow(ConfigError)
    expect(build).toThrow(expect.objectContaining({ option: 'tableName' }))
  })

  test.each(dialects)('%s: the longest table name still leaves room for its index names', (_, dialect) => {
    const longest = Math.min(63, dialect.maxIdentifierLength - '_expires_at'.length)
    expect(() => new SessionQueries(dialect, 'a'.repeat(longest))).not.toThrow()
    if (longest < 63) {
      expect(() => new SessionQueries(dialect, 'a'.repeat(longest + 1))).toThrow(
        expect.objectContaining({ option: 'tableName' }),
      )
    }
  })

  test.each(dialects)(
    '%s: every value is bound as a parameter, never written into the SQL',
    async (_, dialect) => {
      const clock = new ManualClock()
      const queries = new SessionQueries(dialect, 'Sessions')
      const port = recordingPort([1, 1, 1, 1, 1, 1])
      const record = makeRecord(clock, { userId: 'o\'brien "; --', payload: "payload'; DROP TABLE x; --" })
      await queries.create(port, record, clock.now())
      await queries.update(port, { ...record, version: 2 }, 1, clock.now())
      await queries.touch(port, record.key, clock.now(), clock.now() + 1, clock.now())
      await queries.get(port, record.key, clock.now())
      await queries.listByUser(port, 'o\'brien "; --', clock.now())
      await queries.destroy(port, record.key, clock.now())
      for (const { sql, params } of port.calls) {
        expect(sql).not.toContain(record.key)
        expect(sql).not.toContain('brien')
        expect(sql).not.toContain('DROP')
        expect(sql).not.toContain(String(clock.now()))
        expect(sql).toContain(dialect.quote('Sessions'))
        expect(params.length).toBeGreaterThan(0)
      }
    },
  )

  test('a MySQL create deletes the expired row of its key, then inserts with INSERT IGNORE', async () => {
    const clock = new ManualClock()
    const queries = new SessionQueries(mysqlDialect, 'sessions')
    const record = makeRecord(clock)
    const port = recordingPort([1, 0])
    expect(await queries.create(port, record, clock.now())).toBe(false)
    expect(port.calls.map((call) => call.sql.split(' ').slice(0, 2).join(' '))).toEqual([
      'DELETE FROM',
      'INSERT IGNORE',
    ])
    // Expired by the exact deadline, not by `expires_at` (which may run ahead of it).
    expect(port.calls[0]?.sql).toMatch(
      /WHERE `key` = \? AND LEAST\(`sessions`\.`idle_expires_at`, `sessions`\.`absolute_expires_at`\) <= \?$/,
    )
    expect(port.calls[0]?.params).toEqual([record.key, clock.now()])
    // The answer is the insert's: a deleted expired row and a refused insert is a collision.
    expect(await queries.create(recordingPort([0, 1]), record, clock.now())).toBe(true)
  })

  test('SQLite tries an update and a touch that assign no indexed column first; the others send one statement', async () => {
    const clock = new ManualClock()
    const record = makeRecord(clock)
    const assigns = (sql: string | undefined, column: string) =>
      new RegExp(`(SET |, )"?${column}"? =`).test((sql ?? '').split(' WHERE ')[0] ?? '')
    const sqlite = new SessionQueries(sqliteDialect, 'sessions')
    // Answered by the quick statement: one call, assigning neither user_id nor expires_at.
    let port = recordingPort([1])
    expect(await sqlite.update(port, record, 1, clock.now())).toBe(true)
    expect(port.calls).toHaveLength(1)
    expect(assigns(port.calls[0]?.sql, 'user_id')).toBe(false)
    expect(assigns(port.calls[0]?.sql, 'expires_at')).toBe(false)
    // It changed nothing: the full statement decides.
    for (const answer of [0, 1]) {
      port = recordingPort([0, answer])
      expect(await sqlite.update(port, record, 1, clock.now())).toBe(answer === 1)
      expect(port.calls).toHaveLength(2)
      expect(assigns(port.calls[1]?.sql, 'user_id')).toBe(true)
      expect(assigns(port.calls[1]?.sql, 'expires_at')).toBe(true)
    }
    port = recordingPort([0, 1])
    await sqlite.touch(port, record.key, clock.now(), clock.now() + 1000, clock.now())
    expect(port.calls.map((call) => assigns(call.sql, 'expires_at'))).toEqual([false, true])
    for (const dialect of [postgresDialect, mysqlDialect]) {
      const queries = new SessionQueries(dialect, 'sessions')
      port = recordingPort([0])
      expect(await queries.update(port, record, 1, clock.now())).toBe(false)
      expect(port.calls).toHaveLength(1)
      port = recordingPort([0])
      await queries.touch(port, record.key, clock.now(), clock.now() + 1000, clock.now())
      expect(port.calls).toHaveLength(1)
    }
  })

  test('PostgreSQL binds the payload as UTF-8 bytes and reads bytes back as the same string', async () => {
    const clock = new ManualClock()
    const queries = new SessionQueries(postgresDialect, 'sessions')
    const payload = 'nul \u0000 and \u{1f510}'
    const port = recordingPort([1])
    await queries.create(port, makeRecord(clock, { payload }), clock.now())
    const bound = port.calls[0]?.params.find((param) => param instanceof Uint8Array)
    expect(Buffer.from(bound as Uint8Array).toString('utf8')).toBe(payload)
  })

  test('prune deletes in batches of PRUNE_BATCH_SIZE, letting the event loop run between them', async () => {
    const queries = new SessionQueries(sqliteDialect, 'sessions')
    const turns: number[] = []
    let turn = 0
    const port = recordingPort([PRUNE_BATCH_SIZE, PRUNE_BATCH_SIZE, 17])
    const run = port.run
    port.run = async (sql, params) => {
      turns.push(turn)
      return run(sql, params)
    }
    let pruning = true
    const tick = () => {
      turn++
      if (pruning) setImmediate(tick)
    }
    setImmediate(tick)
    const deleted = await queries.prune(port, 1234)
    pruning = false
    expect(deleted).toBe(2 * PRUNE_BATCH_SIZE + 17)
    expect(port.calls.map((call) => call.params)).toEqual([
      [1234 + EXPIRY_SLACK_MS, 1234, PRUNE_BATCH_SIZE],
      [1234 + EXPIRY_SLACK_MS, 1234, PRUNE_BATCH_SIZE],
      [1234 + EXPIRY_SLACK_MS, 1234, PRUNE_BATCH_SIZE],
    ])
    // Other work ran between every two batches.
    expect(turns[1]).toBeGreaterThan(turns[0] as number)
    expect(turns[2]).toBeGreaterThan(turns[1] as number)
  })

  test('upgrade refuses a schema newer than this code, and does nothing at the current version', () => {
    const queries = new SessionQueries(sqliteDialect, 'sessions')
    expect(queries.upgrade(1)).toEqual([])
    expect(() => queries.upgrade(2)).toThrow(/schema version 2; this latchkey knows up to 1/)
    const steps = queries.upgrade(0)
    expect(steps.at(-1)?.params).toEqual(['sessions', 1])
  })
})

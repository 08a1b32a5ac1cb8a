import Database from 'better-sqlite3'
import { afterEach, describe, expect, test, vi } from 'vitest'
import { ManualClock } from '../../core/clock.js'
import { StoreError } from '../../core/errors.js'
import { makeRecord } from '../../testing/conformance.js'
import { SqliteStore, type SqliteStoreOptions } from '../sqlite/index.js'
import { DEFAULT_PRUNE_INTERVAL_MS } from './sql-store.js'

// The schedule is shared by every SQL store; SQLite in memory stands in for all of them here.

afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

function sqlite(options: Partial<SqliteStoreOptions> = {}) {
  const clock = new ManualClock()
  const store = new SqliteStore({ path: ':memory:', clock, ...options })
  return { clock, store, prune: vi.spyOn(store, 'prune') }
}

/** Closes the store's database underneath it, so every statement fails in the driver. */
function breakDatabase(store: SqliteStore): void {
  const db = (store as unknown as { db?: unknown }).db
  if (!(db instanceof Database)) throw new Error('SqliteStore no longer keeps its database in `db`')
  db.close()
}

describe('scheduled pruning of the SQL stores', () => {
  test('starts when the store opens, runs every interval give or take a quarter, and deletes what expired', async () => {
    vi.useFakeTimers()
    const { clock, store, prune } = sqlite({ pruneIntervalMs: 1000 })
    await vi.advanceTimersByTimeAsync(10_000)
    expect(prune).not.toHaveBeenCalled()
    await store.create(makeRecord(clock, { idleExpiresAt: clock.now() + 1 }))
    await store.create(makeRecord(clock))
    clock.advance(1)
    await vi.advanceTimersByTimeAsync(749)
    expect(prune).not.toHaveBeenCalled()
    await vi.advanceTimersByTimeAsync(501)
    expect(prune).toHaveBeenCalledTimes(1)
    expect(await prune.mock.results[0]?.value).toBe(1)
    await vi.advanceTimersByTimeAsync(10_000)
    // 10 s at 0.75 s to 1.25 s apart.
    expect(prune.mock.calls.length).toBeGreaterThanOrEqual(1 + 8)
    expect(prune.mock.calls.length).toBeLessThanOrEqual(1 + 14)
    expect(await store.count()).toBe(1)
    await store.close()
  })

  test(`runs every ${DEFAULT_PRUNE_INTERVAL_MS} ms by default`, async () => {
    vi.useFakeTimers()
    const { store, prune } = sqlite()
    await store.count()
    await vi.advanceTimersByTimeAsync(DEFAULT_PRUNE_INTERVAL_MS * 0.75 - 1)
    expect(prune).not.toHaveBeenCalled()
    await vi.advanceTimersByTimeAsync(DEFAULT_PRUNE_INTERVAL_MS / 2 + 1)
    expect(prune).toHaveBeenCalledTimes(1)
    await store.close()
  })

  test('pruneIntervalMs 0 schedules nothing', async () => {
    vi.useFakeTimers()
    const { store, prune } = sqlite({ pruneIntervalMs: 0 })
    await store.count()
    expect(vi.getTimerCount()).toBe(0)
    await vi.advanceTimersByTimeAsync(24 * 3_600_000)
    expect(prune).not.toHaveBeenCalled()
    await store.close()
  })

  test('close() stops it', async () => {
    vi.useFakeTimers()
    const { store, prune } = sqlite({ pruneIntervalMs: 1000 })
    await store.count()
    await vi.advanceTimersByTimeAsync(1250)
    expect(prune).toHaveBeenCalledTimes(1)
    await store.close()
    expect(vi.getTimerCount()).toBe(0)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(prune).toHaveBeenCalledTimes(1)
  })

  test('the timer never keeps the process alive', async () => {
    const timeouts = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
    const before = timeouts()
    const { store } = sqlite({ pruneIntervalMs: 60_000 })
    await store.count()
    expect(timeouts()).toBe(before)
    await store.close()
  })

  test('a failing run goes to onWarning as a StoreError and the schedule goes on, even if onWarning throws', async () => {
    vi.useFakeTimers()
    const warnings: Error[] = []
    const { store, prune } = sqlite({
      pruneIntervalMs: 1000,
      onWarning: (warning) => {
        warnings.push(warning)
        throw new Error('the hook itself fails')
      },
    })
    await store.count()
    breakDatabase(store)
    await vi.advanceTimersByTimeAsync(1250)
    await vi.advanceTimersByTimeAsync(1250)
    expect(prune).toHaveBeenCalledTimes(2)
    expect(warnings).toHaveLength(2)
    expect(warnings[0]).toBeInstanceOf(StoreError)
    expect(warnings[0]).toMatchObject({ store: 'SqliteStore', operation: 'prune', cause: expect.any(Error) })
    await store.close()
  })

  test('by default a failing run is one line on console.warn', async () => {
    vi.useFakeTimers()
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    const { store } = sqlite({ pruneIntervalMs: 1000 })
    await store.count()
    breakDatabase(store)
    await vi.advanceTimersByTimeAsync(1250)
    expect(warn).toHaveBeenCalledTimes(1)
    expect(warn.mock.calls[0]).toEqual([expect.stringMatching(/^latchkey: SqliteStore\.prune failed: /)])
    await store.close()
  })
})

import { afterEach, describe, expect, test, vi } from 'vitest'
import { ConfigError } from '../../core/errors.js'
import { defineStoreConformance, makeRecord } from '../../testing/conformance.js'
import { ManualClock } from '../../testing/index.js'
import { MemoryStore, type MemoryStoreOptions } from './index.js'

defineStoreConformance(
  { describe, test },
  {
    name: 'MemoryStore',
    createStore: (clock) => new MemoryStore({ clock }),
    // A closed store is the memory store's only way to be "down".
    async createUnavailableStore(clock) {
      const store = new MemoryStore({ clock })
      await store.close()
      return store
    },
  },
)

describe('MemoryStore', () => {
  afterEach(() => {
    vi.restoreAllMocks()
    vi.unstubAllEnvs()
    vi.useRealTimers()
  })

  test('a full store evicts the record closest to expiry', async () => {
    const clock = new ManualClock()
    const store = new MemoryStore({ clock, maxSessions: 3 })
    const soon = makeRecord(clock, { idleExpiresAt: clock.now() + 60_000 })
    const later = makeRecord(clock, { idleExpiresAt: clock.now() + 120_000 })
    const third = makeRecord(clock)
    for (const record of [later, soon, third]) expect(await store.create(record)).toBe(true)

    clock.advance(1)
    const fourth = makeRecord(clock)
    expect(await store.create(fourth)).toBe(true)
    expect(await store.get(soon.key)).toBeNull()
    expect(await store.count()).toBe(3)

    // A touch moves a record away from eviction: now `third` is closest to expiry.
    await store.touch(later.key, clock.now(), clock.now() + 3_600_000)
    const fifth = makeRecord(clock)
    expect(await store.create(fifth)).toBe(true)
    expect(await store.get(third.key)).toBeNull()
    for (const record of [later, fourth, fifth]) expect((await store.get(record.key))?.key).toBe(record.key)
    await store.close()
  })

  test('a full store drops expired records before evicting a live one', async () => {
    const clock = new ManualClock()
    const store = new MemoryStore({ clock, maxSessions: 3 })
    const expiring = makeRecord(clock, { idleExpiresAt: clock.now() + 1000 })
    const destroyed = makeRecord(clock, { idleExpiresAt: clock.now() + 1000 })
    const live = makeRecord(clock, { idleExpiresAt: clock.now() + 2000 })
    for (const record of [expiring, destroyed, live]) expect(await store.create(record)).toBe(true)
    await store.destroy(destroyed.key)
    clock.advance(1000)
    const first = makeRecord(clock)
    const second = makeRecord(clock)
    expect(await store.create(first)).toBe(true)
    expect(await store.create(second)).toBe(true)
    for (const record of [live, first, second]) expect((await store.get(record.key))?.key).toBe(record.key)
    expect(await store.prune()).toBe(0)
    await store.close()
  })

  test('many creates past the bound keep the size at maxSessions', async () => {
    const clock = new ManualClock()
    const store = new MemoryStore({ clock, maxSessions: 100 })
    for (let i = 0; i < 1000; i++) {
      clock.advance(1)
      await store.create(makeRecord(clock))
      if (i % 7 === 0) await store.touch(makeRecord(clock).key, clock.now(), clock.now() + 1)
    }
    expect(await store.count()).toBe(100)
    await store.close()
  })

  test('records are frozen: a caller cannot change stored state through a returned record', async () => {
    const clock = new ManualClock()
    const store = new MemoryStore({ clock })
    const record = makeRecord(clock)
    await store.create(record)
    const got = await store.get(record.key)
    expect(Object.isFrozen(got)).toBe(true)
    expect(() => Object.assign(got as object, { payload: 'changed' })).toThrow(TypeError)
    expect((await store.get(record.key))?.payload).toBe(record.payload)
    await store.close()
  })

  test("an unref'd timer sweeps expired records; close() stops it; 0 turns it off", async () => {
    vi.useFakeTimers()
    const clock = new ManualClock()
    const store = new MemoryStore({ clock, sweepIntervalMs: 1000 })
    await store.create(makeRecord(clock, { idleExpiresAt: clock.now() + 10 }))
    await store.create(makeRecord(clock))
    expect(vi.getTimerCount()).toBe(1)
    clock.advance(10)
    vi.advanceTimersByTime(1000)
    // The sweep already removed the expired record: an explicit prune finds nothing left.
    expect(await store.prune()).toBe(0)
    expect(await store.count()).toBe(1)
    await store.close()
    expect(vi.getTimerCount()).toBe(0)
    new MemoryStore({ clock, sweepIntervalMs: 0 })
    expect(vi.getTimerCount()).toBe(0)
  })

  test('warns once per process when constructed in production', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    new MemoryStore({ sweepIntervalMs: 0 })
    expect(warn).not.toHaveBeenCalled()
    vi.stubEnv('NODE_ENV', 'production')
    new MemoryStore({ sweepIntervalMs: 0 })
    new MemoryStore({ sweepIntervalMs: 0 })
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/MemoryStore/)
  })

  test.each<[keyof MemoryStoreOptions, unknown]>([
    ['maxSessions', 0],
    ['maxSessions', 1.5],
    ['maxSessions', Number.NaN],
    ['maxSessions', '10'],
    ['sweepIntervalMs', -1],
    ['sweepIntervalMs', 2 ** 31],
    ['sweepIntervalMs', Number.POSITIVE_INFINITY],
    ['clock', {}],
  ])('refuses %s = %o with a ConfigError naming the option', (option, value) => {
    const build = () => new MemoryStore({ [option]: value } as MemoryStoreOptions)
    expect(build).toThrow(ConfigError)
    expect(build).toThrow(expect.objectContaining({ option }))
  })
})

describe('MemoryStore prune', () => {
  test('removes a large backlog in steps, letting the event loop run between them', async () => {
    const clock = new ManualClock()
    const store = new MemoryStore({ clock, sweepIntervalMs: 0 })
    for (let i = 0; i < 12_000; i++) store.createSync(makeRecord(clock))
    const live = makeRecord(clock, { idleExpiresAt: clock.now() + 10 * 3_600_000 })
    store.createSync(live)
    clock.advance(31 * 60_000)
    let turned = false
    const pruning = store.prune().then((removed) => ({ removed, turned }))
    setImmediate(() => {
      turned = true
    })
    const { removed, turned: turnedBeforeDone } = await pruning
    expect(removed).toBe(12_000)
    // Another task ran while the prune was under way: it did not hold the event loop to the end.
    expect(turnedBeforeDone).toBe(true)
    expect(await store.count()).toBe(1)
    expect(store.getSync(live.key)).not.toBeNull()
    await store.close()
  })
})

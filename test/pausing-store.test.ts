import { describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import type { SessionRecord, SessionStore } from '../src/core/store.js'
import { isCountableStore, isListableStore, isUserIndexedStore } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { pausable } from './support/pausing-store.js'

const KEY = 'k'.repeat(43)
const OTHER = 'o'.repeat(43)

function record(key: string, version = 1, userId: string | null = 'ann'): SessionRecord {
  const now = Date.UTC(2026, 0, 1)
  return {
    key,
    version,
    userId,
    createdAt: now,
    lastSeenAt: now,
    idleExpiresAt: now + 60_000,
    absoluteExpiresAt: now + 120_000,
    payload: `payload-${version}`,
  }
}

/** True once `promise` has settled (checked after the pending microtasks ran). */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false
  promise.then(
    () => {
      done = true
    },
    () => {
      done = true
    },
  )
  await new Promise((resolve) => setImmediate(resolve))
  return done
}

async function memory() {
  const real = new MemoryStore({ clock: new ManualClock() })
  await real.create(record(KEY))
  return { real, ...pausable(real) }
}

describe('pausable store', () => {
  test('an unpaused call returns the real store’s own promise, and every call is logged', async () => {
    const answer = Promise.resolve(null)
    const fake = { get: () => answer } as unknown as SessionStore
    const { store, calls } = pausable(fake)
    expect(store.get(KEY)).toBe(answer)
    expect(store.get(OTHER)).toBe(answer)
    expect(calls).toEqual(['get', 'get'])
  })

  test('keeps the optional capabilities and the real store’s `this`', async () => {
    const { store, calls } = await memory()
    expect(isUserIndexedStore(store) && isCountableStore(store) && isListableStore(store)).toBe(true)
    expect(await store.count()).toBe(1)
    expect((await store.listByUser('ann')).map((r) => r.key)).toEqual([KEY])
    expect(calls).toEqual(['count', 'listByUser'])
  })

  test('`before` holds the call before it reaches the store', async () => {
    const { real, store, pause } = await memory()
    const held = pause('update', { when: 'before' })
    const slow = store.update(record(KEY, 2), 1)
    await held.reached
    expect((await real.get(KEY))?.version).toBe(1)
    expect(await store.update(record(KEY, 2), 1)).toBe(true)
    expect(await settled(slow)).toBe(false)
    held.release()
    expect(await slow).toBe(false)
  })

  test('`after` lets the store answer but holds the answer', async () => {
    const { real, store, pause } = await memory()
    const held = pause('update', { when: 'after' })
    const slow = store.update(record(KEY, 2), 1)
    await held.reached
    expect((await real.get(KEY))?.version).toBe(2)
    expect(await settled(slow)).toBe(false)
    held.release()
    expect(await slow).toBe(true)
  })

  test('`after` holds a rejection too', async () => {
    const { real, store, pause } = await memory()
    await real.close()
    const held = pause('get', { when: 'after' })
    const failing = store.get(KEY)
    await held.reached
    expect(await settled(failing)).toBe(false)
    held.release()
    await expect(failing).rejects.toMatchObject({ code: 'ERR_LATCHKEY_STORE' })
  })

  test('pauses are one-shot, several may be armed, and `match` picks the call', async () => {
    const { store, pause, calls } = await memory()
    const onOther = pause('get', { match: ([key]) => key === OTHER })
    const onKey = pause('get', { match: ([key]) => key === KEY })
    const first = store.get(KEY)
    await onKey.reached
    expect((await store.get(KEY))?.version).toBe(1) // the pause was used up
    const second = store.get(OTHER)
    await onOther.reached
    onKey.release()
    onOther.release()
    expect((await first)?.version).toBe(1)
    expect(await second).toBeNull()
    expect(calls).toEqual(['get', 'get', 'get'])
  })

  test('a pause on list() holds the iteration', async () => {
    const { store, pause } = await memory()
    const held = pause('list', { when: 'after' })
    const keys: string[] = []
    const listing = (async () => {
      for await (const r of store.list()) keys.push(r.key)
    })()
    await held.reached
    expect(keys).toEqual([KEY])
    expect(await settled(listing)).toBe(false)
    held.release()
    await listing
  })

  test('releaseAll lets every held call go and disarms the rest', async () => {
    const { store, pause, releaseAll } = await memory()
    const held = pause('get')
    pause('count')
    const pending = store.get(KEY)
    await held.reached
    releaseAll()
    expect((await pending)?.version).toBe(1)
    expect(await store.count()).toBe(1)
  })

  test('orders two managers’ commits on one store: the held one conflicts, rebases, loses nothing', async () => {
    const clock = new ManualClock()
    const { store, pause } = pausable(new MemoryStore({ clock }))
    const keys = [generateKey()]
    const a = createSessionManager({ store, keys, clock, cookie: { secure: false } })
    const b = createSessionManager({ store, keys, clock, cookie: { secure: false } })
    const created = await a.load({})
    created.set('n', 0)
    const cookie = (await a.commit(created)).setCookie?.split(';')[0]

    const [first, second] = [await a.load({ cookie }), await b.load({ cookie })]
    first.update('n', (n = 0) => (n as number) + 1)
    second.update('n', (n = 0) => (n as number) + 1)
    const held = pause('update')
    const committing = a.commit(first)
    await held.reached
    await b.commit(second)
    held.release()
    await committing
    expect((await a.load({ cookie })).get('n')).toBe(2)
  })
})

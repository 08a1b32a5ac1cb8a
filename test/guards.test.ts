/**
 * Holes a refactor of the lifecycle could slip through, each closed by a test that fails when the
 * planted bug is there: a sign-in that keeps the anonymous session's deadline, an expiry check that
 * trusts only the deadline the record was stored with, and an end that stops at a forwarder of a
 * session nobody signed in to (no user index to sweep afterwards).
 */
import { describe, expect, test } from 'vitest'
import { generateKey } from '../src/core/crypto.js'
import { ConfigError, SessionError, StoreError } from '../src/core/errors.js'
import { storeKeyOf } from '../src/core/id.js'
import { isEnded } from '../src/core/lifecycle/record-state.js'
import type { SessionManager } from '../src/core/manager.js'
import type { SessionRecord } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { cookieOf, type Data, load, MINUTE, RENEWAL_DUE, setup } from './support/managers.js'

const HOUR = 60 * MINUTE

/** Stores an anonymous session holding `data` and resolves its ID. */
async function anonymous(manager: SessionManager<Data>, data: Data = { cart: 1 }): Promise<string> {
  const session = await load(manager, undefined)
  for (const [key, value] of Object.entries(data)) session.set(key, value)
  const id = cookieOf(await manager.commit(session))
  if (!id) throw new Error('the session was not stored')
  return id
}

/** Loads `id` and commits a read: the session is seen (touched), its ID renewed when due. Resolves the ID to use next. */
async function visit(manager: SessionManager<Data>, id: string): Promise<string> {
  const session = await load(manager, id)
  expect(session.isNew, 'the session should still be live').toBe(false)
  return cookieOf(await manager.commit(session)) ?? id
}

describe('a sign-in near the absolute deadline', () => {
  test('starts the session clock afresh: the signed-in session outlives the anonymous one’s deadline', async () => {
    const { clock, memory, make } = setup()
    const manager = make({ renewalIntervalMs: 13 * HOUR })
    let id = await anonymous(manager)
    // Keep the anonymous session active until a minute before its 12-hour deadline.
    for (let passed = 0; passed < 12 * HOUR - 20 * MINUTE; passed += 20 * MINUTE) {
      clock.advance(20 * MINUTE)
      id = await visit(manager, id)
    }
    clock.advance(19 * MINUTE)
    const session = await load(manager, id)
    expect(session.isNew).toBe(false)
    session.login('alice')
    const signedIn = cookieOf(await manager.commit(session))
    expect(signedIn).toBeDefined()
    const record = (await memory.get(storeKeyOf(signedIn as string))) as SessionRecord
    expect(record.createdAt).toBe(clock.now())
    expect(record.absoluteExpiresAt).toBe(clock.now() + manager.options.absoluteTimeoutMs)
    // Past the anonymous session's deadline, the signed-in one is still there.
    clock.advance(10 * MINUTE)
    const after = await load(manager, signedIn)
    expect(after.isNew).toBe(false)
    expect(after.userId).toBe('alice')
    expect(after.get('cart')).toBe(1)
  })
})

describe('a manager whose timeouts are shorter than the ones a session was stored with', () => {
  async function storedUnderLongTimeouts() {
    const context = setup()
    const long = context.make({ renewalIntervalMs: 13 * HOUR })
    let id = await anonymous(long)
    // Two hours of activity under the 12-hour absolute timeout.
    for (let passed = 0; passed < 2 * HOUR; passed += 20 * MINUTE) {
      context.clock.advance(20 * MINUTE)
      id = await visit(long, id)
    }
    const shortOptions = { absoluteTimeoutMs: HOUR, idleTimeoutMs: 30 * MINUTE }
    const short = context.make(shortOptions)
    // On the store itself (the pausing wrapper answers only asynchronously): the synchronous path.
    const shortSync = context.make({ ...shortOptions, store: context.memory })
    return { ...context, long, short, shortSync, id }
  }

  test('load: a session older than the new absolute timeout is expired, whatever deadline it was stored with', async () => {
    const { short, memory, id } = await storedUnderLongTimeouts()
    expect((await memory.get(storeKeyOf(id)))?.absoluteExpiresAt).toBeGreaterThan(
      Date.UTC(2026, 0, 1) + 11 * HOUR,
    )
    const session = await load(short, id)
    expect(session.isNew).toBe(true)
    // It was ended, not merely skipped: the long-lived manager cannot open it either.
    expect((await load(setup().make(), id)).isNew).toBe(true)
    expect(await memory.get(storeKeyOf(id))).toBeNull()
  })

  test('loadSync answers the same (it never opens a session past the new absolute timeout)', async () => {
    const { shortSync, id } = await storedUnderLongTimeouts()
    const session = shortSync.loadSync({ cookie: `sid=${id}` })
    // `null` sends the request down the asynchronous path, which ends the session (the test above).
    expect(session).toBeNull()
  })

  test('a shorter idle timeout is applied to the last activity too', async () => {
    const { clock, make, memory, id } = await storedUnderLongTimeouts()
    clock.advance(6 * MINUTE)
    expect(make({ idleTimeoutMs: 5 * MINUTE, store: memory }).loadSync({ cookie: `sid=${id}` })).toBeNull()
    expect((await load(make({ idleTimeoutMs: 5 * MINUTE }), id)).isNew).toBe(true)
  })
})

describe('a logout racing a renewal of a session nobody signed in to', () => {
  // Without a user there is no user index to sweep: only following the forwarder ends the renewed ID.

  test('the renewal commits first: the logout follows the forwarder and ends the renewed ID', async () => {
    const { clock, memory, make } = setup()
    const manager = make()
    const id0 = await anonymous(manager)
    clock.advance(RENEWAL_DUE)
    const reader = await load(manager, id0)
    const leaver = await load(manager, id0)
    const id1 = cookieOf(await manager.commit(reader))
    expect(id1).toBeDefined()
    expect(id1).not.toBe(id0)
    leaver.logout()
    await manager.commit(leaver)
    expect((await load(manager, id0)).isNew).toBe(true)
    expect((await load(manager, id1)).isNew).toBe(true)
    expect(await memory.count()).toBe(0)
  })

  test('the renewal lands while the logout (another process) is ending the old record', async () => {
    const { clock, memory, paused, make } = setup()
    const manager = make()
    const other = make()
    const id0 = await anonymous(manager)
    clock.advance(RENEWAL_DUE)
    const reader = await load(other, id0)
    const leaver = await load(manager, id0)
    const held = paused.pause('update', {
      match: ([record]: [SessionRecord, number]) => isEnded(record),
    })
    leaver.logout()
    const leaving = manager.commit(leaver)
    await held.reached
    const id1 = cookieOf(await other.commit(reader))
    expect(id1).toBeDefined()
    held.release()
    await leaving
    expect((await load(manager, id0)).isNew).toBe(true)
    expect((await load(manager, id1)).isNew).toBe(true)
    expect(await memory.count()).toBe(0)
  })

  test('a retired ID (regenerate) is followed too: the logout ends the successor', async () => {
    const { memory, make } = setup()
    const manager = make()
    const id0 = await anonymous(manager)
    const regenerating = await load(manager, id0)
    const leaver = await load(manager, id0)
    regenerating.regenerate()
    const id1 = cookieOf(await manager.commit(regenerating))
    expect(id1).toBeDefined()
    leaver.logout()
    await manager.commit(leaver)
    expect((await load(manager, id1)).isNew).toBe(true)
    expect(await memory.count()).toBe(0)
  })
})

describe('a write that loaded the session before a renewal', () => {
  test('lands on the renewed record, and its response hands the browser the new ID', async () => {
    const { clock, manager } = setup()
    const id0 = await anonymous(manager)
    clock.advance(RENEWAL_DUE)
    const reader = await load(manager, id0)
    const writer = await load(manager, id0)
    const id1 = cookieOf(await manager.commit(reader))
    expect(id1).toBeDefined()
    writer.set('late', true)
    const result = await manager.commit(writer)
    // The browser of the writing request may hold only the old ID: it must be given the new one.
    expect(cookieOf(result)).toBe(id1)
    const after = await load(manager, id1)
    expect(after.get('late')).toBe(true)
    expect(after.get('cart')).toBe(1)
  })
})

describe('a store whose *Sync methods answer with promises (issue 14)', () => {
  test('is a ConfigError naming the method, never every request silently anonymous', async () => {
    const memory = new MemoryStore()
    // What a generic tracing wrapper does: every method made async, *Sync ones included.
    const traced = new Proxy(memory, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver)
        return typeof value === 'function'
          ? async (...args: unknown[]) => (value as (...a: unknown[]) => unknown).apply(target, args)
          : value
      },
    })
    const manager = createSessionManager<Data>({
      store: traced,
      keys: [generateKey()],
      cookie: { secure: false },
    })
    const id = await anonymous(manager)
    expect(() => manager.loadSync({ cookie: `sid=${id}` })).toThrow(ConfigError)
    expect(() => manager.loadSync({ cookie: `sid=${id}` })).toThrow(
      /\.getSync\(\) answered with a promise, but a \*Sync method must answer synchronously/,
    )
    // Through the asynchronous path, the session is there.
    expect((await load(manager, id)).get('cart')).toBe(1)
  })
})

describe('a session larger than maxPayloadBytes (issue 14)', () => {
  test('its commit fails with the application’s own error, not a store outage, and the stored session stays', async () => {
    const { make, memory } = setup()
    const manager = make({ maxPayloadBytes: 4096 })
    const id = await anonymous(manager)
    const session = await load(manager, id)
    session.set('blob', 'x'.repeat(5000))
    const failure = await manager.commit(session).then(
      () => null,
      (error: unknown) => error,
    )
    expect(failure).toBeInstanceOf(SessionError)
    expect(failure).not.toBeInstanceOf(StoreError)
    expect((failure as SessionError).code).toBe('ERR_LATCHKEY_SESSION_TOO_LARGE')
    expect((failure as Error).message).toMatch(/more than maxPayloadBytes \(4096\)/)
    const after = await load(manager, id)
    expect(after.get('cart')).toBe(1)
    expect(after.get('blob')).toBeUndefined()
    expect((await memory.get(storeKeyOf(id)))?.version).toBe(1)
  })

  test('the synchronous commit and a new session are held to it too; a session within it is stored', async () => {
    const memory = new MemoryStore()
    const manager = createSessionManager<Data>({
      store: memory,
      keys: [generateKey()],
      cookie: { secure: false },
      maxPayloadBytes: 4096,
    })
    const fresh = await load(manager, undefined)
    fresh.set('blob', 'x'.repeat(5000))
    expect(() => manager.commitSync(fresh)).toThrow(/maxPayloadBytes/)
    expect(await memory.count()).toBe(0)
    const small = await load(manager, undefined)
    small.set('blob', 'x'.repeat(2000))
    expect(manager.commitSync(small)?.setCookie).toMatch(/^sid=/)
    expect(() =>
      createSessionManager({ store: memory, keys: [generateKey()], maxPayloadBytes: 100 }),
    ).toThrow(/maxPayloadBytes: must be an integer number of bytes, at least 1024/)
  })
})

describe('a failed request (the manager alone: abandon)', () => {
  /** A signed-in session of alice, stored; resolves its ID. */
  async function signedIn(manager: SessionManager<Data>): Promise<string> {
    const session = await load(manager, undefined)
    session.set('cart', 1)
    session.login('alice')
    const id = cookieOf(await manager.commit(session))
    if (!id) throw new Error('not signed in')
    return id
  }

  test('saves no data change and ends nothing when no end was asked for', async () => {
    const { manager } = setup()
    const id = await signedIn(manager)
    const session = await load(manager, id)
    session.set('cart', 2)
    expect(manager.abandonSync(session)).toEqual({ setCookie: null, private: true })
    expect((await load(manager, id)).get('cart')).toBe(1)
  })

  test('applies a logout: the old cookie loads nobody, the cookie is cleared with Clear-Site-Data', async () => {
    const { manager } = setup({ clearSiteDataOnLogout: ['cookies'] })
    const id = await signedIn(manager)
    const session = await load(manager, id)
    session.logout()
    expect(manager.abandonSync(session)).toBeNull()
    const result = await manager.abandon(session)
    expect(result.setCookie).toMatch(/^sid=;/)
    expect(result.clearSiteData).toBe('"cookies"')
    const after = await load(manager, id)
    expect(after.isNew).toBe(true)
    expect(after.userId).toBeNull()
  })

  test('ends the ID a sign-in or regenerate was to replace, and makes neither the new session nor its data', async () => {
    for (const change of ['login', 'regenerate'] as const) {
      const { manager, memory } = setup()
      const id = await signedIn(manager)
      const session = await load(manager, id)
      session.set('cart', 99)
      if (change === 'login') session.login('mallory')
      else session.regenerate()
      const result = await manager.abandon(session)
      expect(result.setCookie, change).toMatch(/^sid=;/)
      expect(result.clearSiteData, change).toBeUndefined()
      expect((await load(manager, id)).isNew, change).toBe(true)
      for await (const record of memory.list()) {
        expect(record.userId, change).not.toBe('mallory')
        expect(manager.inspect(record), change).not.toBe('live')
      }
    }
  })
})

describe('a callback where latchkey returns a promise', () => {
  test('is a TypeError naming the promise form, thrown before anything is done', async () => {
    const { manager } = setup()
    const callback = (() => {}) as never
    expect(() => manager.listUserSessions('alice', callback)).toThrow(
      /listUserSessions\(\) takes no callback/,
    )
    expect(() => manager.revoke('handle', callback)).toThrow(/revoke\(\) takes no callback.*promise/)
    await expect(manager.revokeUserSessions('alice', callback)).rejects.toThrow(TypeError)
  })
})

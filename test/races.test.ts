/**
 * Lifecycle races at the manager: a logout, a revoke or a sign-in against an ID rotation in flight.
 * Each overlap is forced with a store wrapper that holds one chosen call (no timers, no luck).
 */
import { describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import { storeKeyOf } from '../src/core/id.js'
import { isEnded } from '../src/core/lifecycle/record-state.js'
import type { SessionManager } from '../src/core/manager.js'
import type { SessionManagerOptions } from '../src/core/options.js'
import { MAX_USER_ID_LENGTH } from '../src/core/session.js'
import type { SessionRecord, SessionStore } from '../src/core/store.js'
import { createSessionManager, StoreError } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { cookieOf, type Data, KEYS, load, MINUTE, RENEWAL_DUE, setup } from './support/managers.js'

async function signIn(manager: SessionManager<Data>, userId: string, data: Data = {}): Promise<string> {
  const session = await load(manager, undefined)
  for (const [key, value] of Object.entries(data)) session.set(key, value)
  session.login(userId)
  const id = cookieOf(await manager.commit(session))
  if (!id) throw new Error('sign-in set no cookie')
  return id
}

/**
 * `setup(options)` with alice signed in (her first ID, `id0`), then the clock moved `laterMs` on.
 * `other` is a second manager on the same store: another process.
 */
async function aliceSignedIn(laterMs = 0, options: Partial<SessionManagerOptions> = {}) {
  const context = setup(options)
  const id0 = await signIn(context.manager, 'alice')
  if (laterMs > 0) context.clock.advance(laterMs)
  return { ...context, other: context.another(), id0 }
}

/** What a browser holding `id` gets now: the user and data, or `null` for a fresh anonymous session. */
async function opens(manager: SessionManager<Data>, id: string | undefined) {
  const session = await load(manager, id)
  return session.isNew ? null : { userId: session.userId, id: session.id }
}

const isEnd = ([record]: [SessionRecord, number]) => isEnded(record)
/** The update that retires or ends the record under `key` (a rotation's compare-and-set on its old record). */
const isUpdateOf =
  (key: string) =>
  ([record]: [SessionRecord, number]) =>
    record.key === key
const isForwarderWrite =
  (key: string) =>
  ([record]: [SessionRecord, number]) =>
    record.key === key && !isEnded(record)

describe('a logout racing a renewal', () => {
  test('the renewal commits first: the logout ends the renewed ID too', async () => {
    const { manager, id0 } = await aliceSignedIn(RENEWAL_DUE)
    const reader = await load(manager, id0)
    const leaver = await load(manager, id0)
    const id1 = cookieOf(await manager.commit(reader))
    expect(id1).toBeDefined()
    expect(id1).not.toBe(id0)
    leaver.logout()
    await manager.commit(leaver)
    expect(await opens(manager, id0)).toBeNull()
    expect(await opens(manager, id1)).toBeNull()
    expect(await manager.listUserSessions('alice')).toEqual([])
  })

  // In one process commits on a session queue behind each other; a second manager on the same store
  // (another process) is what lets a logout land in the middle of a rotation.
  test('the logout lands between the renewal creating its new record and retiring the old one', async () => {
    const { manager, other, paused, memory, id0 } = await aliceSignedIn(RENEWAL_DUE)
    const reader = await load(manager, id0)
    const leaver = await load(other, id0)
    const held = paused.pause('update', { match: isForwarderWrite(storeKeyOf(id0)) })
    const renewing = manager.commit(reader)
    await held.reached
    leaver.logout()
    await other.commit(leaver)
    held.release()
    const renewal = await renewing
    // The renewal lost its compare-and-set to the logout: no new ID went out, nothing survives.
    expect(cookieOf(renewal)).toBeUndefined()
    expect(await opens(manager, id0)).toBeNull()
    expect(await memory.count()).toBe(0)
    expect(await manager.listUserSessions('alice')).toEqual([])
  })

  test('the renewal lands while the logout is ending the old record', async () => {
    const { manager, other, paused, memory, id0 } = await aliceSignedIn(RENEWAL_DUE)
    const reader = await load(other, id0)
    const leaver = await load(manager, id0)
    const held = paused.pause('update', { match: isEnd })
    leaver.logout()
    const leaving = manager.commit(leaver)
    await held.reached
    const id1 = cookieOf(await other.commit(reader))
    expect(id1).toBeDefined()
    held.release()
    await leaving
    expect(await opens(manager, id0)).toBeNull()
    expect(await opens(manager, id1)).toBeNull()
    expect(await memory.count()).toBe(0)
    expect(await manager.listUserSessions('alice')).toEqual([])
  })

  test('a logout slower than the grace window still ends the renewed session', async () => {
    const { clock, manager, id0 } = await aliceSignedIn(RENEWAL_DUE)
    const reader = await load(manager, id0)
    const leaver = await load(manager, id0)
    const id1 = cookieOf(await manager.commit(reader))
    clock.advance(manager.options.renewalGraceMs + 1)
    leaver.logout()
    await manager.commit(leaver)
    expect(await opens(manager, id1)).toBeNull()
    expect(await manager.listUserSessions('alice')).toEqual([])
  })
})

describe('a logout racing regenerate()', () => {
  test('regenerate commits first: the regenerated ID dies with the logout', async () => {
    const { manager, id0 } = await aliceSignedIn()
    const elevating = await load(manager, id0)
    const leaver = await load(manager, id0)
    elevating.regenerate()
    elevating.set('admin', true)
    const id1 = cookieOf(await manager.commit(elevating))
    expect(id1).toBeDefined()
    leaver.logout()
    await manager.commit(leaver)
    expect(await opens(manager, id0)).toBeNull()
    expect(await opens(manager, id1)).toBeNull()
    expect(await manager.listUserSessions('alice')).toEqual([])
  })

  test('the logout commits first: the regenerate is dropped and hands out no ID', async () => {
    const { manager, memory, id0 } = await aliceSignedIn()
    const elevating = await load(manager, id0)
    const leaver = await load(manager, id0)
    leaver.logout()
    await manager.commit(leaver)
    elevating.regenerate()
    expect(cookieOf(await manager.commit(elevating))).toBeUndefined()
    expect(await opens(manager, id0)).toBeNull()
    expect(await memory.count()).toBe(0)
  })

  test('the logout lands between regenerate creating its record and retiring the old one', async () => {
    const { manager, other, paused, memory, id0 } = await aliceSignedIn()
    const elevating = await load(manager, id0)
    const leaver = await load(other, id0)
    const held = paused.pause('update', { match: isUpdateOf(storeKeyOf(id0)) })
    elevating.regenerate()
    const regenerating = manager.commit(elevating)
    await held.reached
    leaver.logout()
    await other.commit(leaver)
    held.release()
    expect(cookieOf(await regenerating)).toBeUndefined()
    expect(await opens(manager, id0)).toBeNull()
    expect(await memory.count()).toBe(0)
  })
})

describe('a write racing regenerate()', () => {
  test('a write that loaded before the regenerate lands on the regenerated session; its response gets no new ID', async () => {
    const { manager, id0 } = await aliceSignedIn()
    const elevating = await load(manager, id0)
    const writer = await load(manager, id0)
    elevating.regenerate()
    const id1 = cookieOf(await manager.commit(elevating))
    writer.set('late', 'pears')
    const written = await manager.commit(writer)
    expect(written.setCookie).toBeNull()
    expect((await load(manager, id1)).get('late')).toBe('pears')
    expect(await opens(manager, id0)).toBeNull()
  })

  test('a write that loaded before a login is dropped: the old session ended, the new one is not its to write', async () => {
    const { manager, id0 } = await aliceSignedIn()
    const signingIn = await load(manager, id0)
    const writer = await load(manager, id0)
    signingIn.login('bob')
    const id1 = cookieOf(await manager.commit(signingIn))
    writer.set('planted', 'by the old session')
    expect((await manager.commit(writer)).setCookie).toBeNull()
    expect((await load(manager, id1)).get('planted')).toBeUndefined()
  })
})

describe('revokeUserSessions racing a rotation', () => {
  test.each(['renewal', 'regenerate'] as const)(
    'a %s in flight does not outlive "sign out everywhere"',
    async (kind) => {
      const { manager, paused, memory, id0 } = await aliceSignedIn(kind === 'renewal' ? RENEWAL_DUE : 0)
      const rotating = await load(manager, id0)
      if (kind === 'regenerate') rotating.regenerate()
      // Hold the rotation once its new record exists, before the old one is retired.
      const held = paused.pause('create', { when: 'after' })
      const committing = manager.commit(rotating)
      await held.reached
      const revoking = manager.revokeUserSessions('alice')
      held.release()
      expect(await revoking).toBe(1)
      const result = await committing
      expect(await opens(manager, id0)).toBeNull()
      expect(await opens(manager, cookieOf(result))).toBeNull()
      expect(await manager.listUserSessions('alice')).toEqual([])
      expect(await memory.count()).toBe(0)
    },
  )
})

describe('a revocation that loses the trail', () => {
  test.each(['revokeUserSessions', 'revoke'] as const)(
    '%s lists again when the record it listed was renewed and its forwarder expired',
    async (kind) => {
      const { clock, manager, other, paused, id0 } = await aliceSignedIn()
      const [{ handle } = { handle: '' }] = await manager.listUserSessions('alice')
      clock.advance(RENEWAL_DUE)
      const renewing = await load(other, id0)
      // The revocation has listed the session and is about to end it; the renewal overtakes it.
      const held = paused.pause('update', { match: isEnd })
      const revoking = kind === 'revoke' ? manager.revoke(handle) : manager.revokeUserSessions('alice')
      await held.reached
      const id1 = cookieOf(await other.commit(renewing))
      expect(id1).toBeDefined()
      clock.advance(manager.options.renewalGraceMs + 1)
      held.release()
      expect(await revoking).toBe(kind === 'revoke' ? true : 1)
      expect(await opens(manager, id1)).toBeNull()
      expect(await manager.listUserSessions('alice')).toEqual([])
    },
  )
})

describe('revoke(handle)', () => {
  test('ends the session it named after the device renewed its ID, even past the grace window', async () => {
    const { clock, manager } = setup()
    const phone = await signIn(manager, 'alice')
    const laptop = await signIn(manager, 'alice')
    const listed = await manager.listUserSessions('alice', { current: await load(manager, phone) })
    expect(listed).toHaveLength(2)
    const phoneHandle = listed.find((s) => s.current)?.handle as string
    clock.advance(RENEWAL_DUE)
    const renewedPhone = cookieOf(await manager.commit(await load(manager, phone)))
    const renewedLaptop = cookieOf(await manager.commit(await load(manager, laptop)))
    expect(renewedPhone).toBeDefined()
    expect(renewedLaptop).toBeDefined()
    clock.advance(manager.options.renewalGraceMs + 1)
    expect((await opens(manager, renewedPhone))?.userId).toBe('alice')
    expect(await manager.revoke(phoneHandle)).toBe(true)
    expect(await opens(manager, renewedPhone)).toBeNull()
    expect((await opens(manager, renewedLaptop))?.userId).toBe('alice')
    expect(await manager.revoke(phoneHandle)).toBe(false)
    expect(await manager.listUserSessions('alice')).toHaveLength(1)
  })

  test('a revoke racing a renewal ends the session or reports false, never true for a live one', async () => {
    const { clock, manager, paused, id0 } = await aliceSignedIn()
    const [{ handle } = { handle: '' }] = await manager.listUserSessions('alice')
    clock.advance(RENEWAL_DUE)
    const renewing = await load(manager, id0)
    const held = paused.pause('update', { match: isEnd })
    const revoking = manager.revoke(handle)
    await held.reached
    const id1 = cookieOf(await manager.commit(renewing))
    held.release()
    expect(await revoking).toBe(true)
    expect(await opens(manager, id0)).toBeNull()
    expect(await opens(manager, id1)).toBeNull()
  })
})

describe('the grace window is a hard limit', () => {
  // A grace window longer than the touch interval, so the late request's touch lands inside it.
  const options = { touchIntervalMs: MINUTE, renewalGraceMs: 5 * MINUTE }

  test('a request that loaded the old record and touches it later cannot extend the forwarder', async () => {
    const { clock, manager, memory, id0 } = await aliceSignedIn(RENEWAL_DUE, options)
    const first = await load(manager, id0)
    const late = await load(manager, id0)
    const id1 = cookieOf(await manager.commit(first))
    expect(id1).toBeDefined()
    // The late one touches (and tries to renew) the record it loaded, which is a forwarder by now.
    clock.advance(2 * MINUTE)
    await manager.commit(late)
    expect((await opens(manager, id0))?.id).toBe(id1)
    clock.advance(3 * MINUTE)
    expect(await memory.get(storeKeyOf(id0))).toBeNull()
    expect(await opens(manager, id0)).toBeNull()
    expect((await opens(manager, id1))?.userId).toBe('alice')
  })

  test('another manager on the same store (another process) cannot extend it either', async () => {
    const { clock, manager, other, memory, id0 } = await aliceSignedIn(RENEWAL_DUE, options)
    const here = await load(manager, id0)
    const there = await load(other, id0)
    expect(cookieOf(await manager.commit(here))).toBeDefined()
    clock.advance(2 * MINUTE)
    await other.commit(there)
    clock.advance(3 * MINUTE)
    expect(await memory.get(storeKeyOf(id0))).toBeNull()
    expect(await opens(other, id0)).toBeNull()
  })
})

describe('no lost write at sign-in', () => {
  test.each(['login', 'regenerate'] as const)(
    'a write committed elsewhere during a %s is carried into the new ID',
    async (kind) => {
      const { manager, another, paused } = setup()
      const other = another()
      const id0 = await signIn(manager, 'alice', { cart: ['apples'] })
      const rotating = await load(manager, id0)
      const writer = await load(other, id0)
      if (kind === 'login') rotating.login('alice')
      else rotating.regenerate()
      rotating.set('rotated', kind)
      // Hold the rotation after its new record exists, before it retires the old one.
      const held = paused.pause('update', { match: isUpdateOf(storeKeyOf(id0)) })
      const committing = manager.commit(rotating)
      await held.reached
      writer.update('cart', (cart) => [...((cart as string[] | undefined) ?? []), 'pears'])
      const acknowledged = await other.commit(writer)
      expect(acknowledged.private).toBe(true)
      held.release()
      const id1 = cookieOf(await committing)
      expect(id1).toBeDefined()
      const after = await load(manager, id1)
      expect(after.get('cart')).toEqual(['apples', 'pears'])
      expect(after.get('rotated')).toBe(kind)
      expect(after.userId).toBe('alice')
      expect(await opens(manager, id0)).toBeNull()
    },
  )
})

describe('user IDs and handles', () => {
  test(`login refuses a user ID longer than ${MAX_USER_ID_LENGTH} characters with a clear error`, async () => {
    const { manager } = setup()
    const session = await load(manager, undefined)
    expect(() => session.login('u'.repeat(MAX_USER_ID_LENGTH + 1))).toThrow(
      expect.objectContaining({ code: 'ERR_LATCHKEY_USER_ID', message: expect.stringContaining('255') }),
    )
    expect(() => session.login('')).toThrow(expect.objectContaining({ code: 'ERR_LATCHKEY_USER_ID' }))
  })

  test.each([
    ['control characters', '\u0001'.repeat(MAX_USER_ID_LENGTH)],
    ['astral characters', `${'\u{1f510}'.repeat(127)}x`],
    ['quotes and backslashes', `${'"\\'.repeat(127)}x`],
  ])('every listed session can be revoked by its handle: the longest user ID of %s', async (_, userId) => {
    expect(userId.length).toBeLessThanOrEqual(MAX_USER_ID_LENGTH)
    const { manager } = setup()
    const id = await signIn(manager, userId)
    const [listed] = await manager.listUserSessions(userId)
    expect(listed).toBeDefined()
    expect(await manager.revoke(listed?.handle as string)).toBe(true)
    expect(await opens(manager, id)).toBeNull()
  })
})

describe('Clear-Site-Data', () => {
  test('sent on a logout whose response also stores a new anonymous session (a flash message)', async () => {
    const { manager, id0 } = await aliceSignedIn(0, { clearSiteDataOnLogout: ['cache', 'storage'] })
    const session = await load(manager, id0)
    session.logout()
    session.set('flash', 'Signed out')
    const result = await manager.commit(session)
    expect(result.clearSiteData).toBe('"cache", "storage"')
    const id1 = cookieOf(result)
    expect(id1).toBeDefined()
    expect((await load(manager, id1)).get('flash')).toBe('Signed out')
    expect(await opens(manager, id0)).toBeNull()
  })

  test('sent on a logout of a session that had already expired', async () => {
    const { manager, id0 } = await aliceSignedIn(31 * MINUTE, { clearSiteDataOnLogout: ['cache'] })
    const session = await load(manager, id0)
    expect(session.isNew).toBe(true)
    session.logout()
    expect((await manager.commit(session)).clearSiteData).toBe('"cache"')
  })
})

describe('every store failure is a StoreError', () => {
  /** A store whose `operation` rejects (or throws) with whatever `failure` makes. */
  function failing(operation: keyof SessionStore, failure: () => unknown, sync = false): SessionStore {
    const clock = new ManualClock()
    const memory = new MemoryStore({ clock })
    return new Proxy(memory, {
      get(target, property, receiver) {
        const member = Reflect.get(target, property, receiver)
        if (property === 'constructor' || typeof member !== 'function') return member
        if (property !== operation) return member.bind(target)
        return () => {
          if (sync) throw failure()
          return Promise.reject(failure())
        }
      },
    })
  }

  test.each([
    ['get', false],
    ['create', false],
    ['update', false],
    ['touch', false],
    ['destroy', false],
    ['get', true],
    ['update', true],
  ] as const)('%s rejecting with a plain Error (thrown synchronously: %s)', async (operation, sync) => {
    const cause = new TypeError('socket hang up')
    const clock = new ManualClock()
    const store = failing(operation, () => cause, sync)
    const manager = createSessionManager<Data>({
      store,
      keys: KEYS,
      clock,
      cookie: { secure: false },
      touchIntervalMs: 1,
    })
    // Walk a session through every operation; the failing one must surface as a StoreError.
    const attempt = async () => {
      const fresh = await load(manager, undefined)
      fresh.set('a', 1)
      const id = cookieOf(await manager.commit(fresh))
      clock.advance(2)
      await manager.commit(await load(manager, id))
      const writer = await load(manager, id)
      writer.set('b', 2)
      await manager.commit(writer)
      const leaver = await load(manager, id)
      leaver.logout()
      await manager.commit(leaver)
    }
    const error = await attempt().then(
      () => null,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(StoreError)
    expect(error).toMatchObject({ code: 'ERR_LATCHKEY_STORE', store: 'MemoryStore', operation, cause })
  })
})

describe('revoking sessions sealed with a key this manager lacks', () => {
  test('revokeUserSessions ends them too: when the key comes back, the old cookie opens nothing', async () => {
    const old = generateKey()
    const { make } = setup()
    const before = make({ keys: [old] })
    const id = await signIn(before, 'alice')
    const without = make({ keys: [generateKey()] })
    expect(await without.revokeUserSessions('alice')).toBe(1)
    const rollback = make({ keys: [old] })
    expect(await opens(rollback, id)).toBeNull()
    expect(await rollback.listUserSessions('alice')).toEqual([])
  })

  test('a revocation of one session by handle leaves records it cannot open alone (their lineage is unknown)', async () => {
    const old = generateKey()
    const { make } = setup()
    const id = await signIn(make({ keys: [old] }), 'alice')
    const current = make()
    await signIn(current, 'alice')
    const [own] = await current.listUserSessions('alice')
    expect(await current.revoke(own!.handle)).toBe(true)
    expect(await opens(make({ keys: [old] }), id)).toMatchObject({ userId: 'alice' })
  })
})

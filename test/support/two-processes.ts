/**
 * The tests every shared store must pass with two app servers on it: a manager in this process and
 * one in a child process (remote.ts), over the same backing store. Register them inside a store's
 * suite:
 *
 *     defineTwoProcessTests(() => {
 *       const tableName = freshTable()
 *       return {
 *         local: (clock) => new PostgresStore({ connectionString, tableName, clock }),
 *         remote: { module: 'src/stores/postgres/index.ts', exportName: 'PostgresStore', options: { connectionString, tableName } },
 *       }
 *     })
 */
import { afterEach, describe, expect, test } from 'vitest'
import { ManualClock } from '../../src/core/clock.js'
import { generateKey } from '../../src/core/crypto.js'
import type { SessionManager } from '../../src/core/manager.js'
import type { SessionManagerOptions } from '../../src/core/options.js'
import type { SessionStore } from '../../src/core/store.js'
import { createSessionManager } from '../../src/index.js'
import type { AppData } from './app.js'
import type { RemoteManager, RemoteStoreSpec } from './remote.js'
import { cookieHeader, startRemoteManager } from './remote.js'

/** One shared store, as this process opens it and as the child opens it (JSON options, no clock). */
export interface SharedStore {
  local(clock: ManualClock): SessionStore
  remote: RemoteStoreSpec
}

interface Pair {
  local: SessionManager<AppData>
  remote: RemoteManager
  clock: ManualClock
}

/**
 * A manager here and one in a child process on a fresh `shared` store, both with `managerOptions`
 * and one keyring, the child's clock set to this one's. Their closing goes on `cleanups`.
 */
async function startPair(
  shared: () => SharedStore,
  cleanups: (() => Promise<unknown>)[],
  managerOptions: Partial<SessionManagerOptions> = {},
): Promise<Pair> {
  const { local: open, remote: spec } = shared()
  const keys = [generateKey()]
  const clock = new ManualClock()
  const options = { cookie: { secure: false }, ...managerOptions }
  const local = createSessionManager<AppData>({ ...options, store: open(clock), keys, clock })
  cleanups.push(() => local.close())
  const remote = await startRemoteManager({
    path: '',
    store: spec,
    keys,
    time: clock.now(),
    managerOptions: options,
    dataKeys: ['n'],
  })
  cleanups.push(() => remote.close())
  return { local, remote, clock }
}

/** Registers the two-process tests; `shared` is called once per test and must name a fresh, empty store. */
export function defineTwoProcessTests(shared: () => SharedStore): void {
  const cleanups: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })
  const pair = () => startPair(shared, cleanups)

  test('a session created in one process is read in the other, both ways', async () => {
    const { local, remote } = await pair()
    const here = await local.load({})
    here.set('n', 7)
    const cookie = cookieHeader((await local.commit(here)).setCookie)
    expect(await remote.load(cookie)).toMatchObject({ isNew: false, data: { n: 7 } })

    const { ref } = await remote.load(undefined)
    await remote.act(ref, { kind: 'set', key: 'n', value: 8 })
    const theirs = cookieHeader((await remote.commit(ref)).setCookie)
    expect(theirs).toMatch(/^sid=[\w-]{43}$/)
    const there = await local.load({ cookie: theirs })
    expect([there.isNew, there.get('n')]).toEqual([false, 8])
  })

  test('a logout in one process holds in the other', async () => {
    const { local, remote } = await pair()
    const { ref } = await remote.load(undefined)
    await remote.act(ref, { kind: 'set', key: 'n', value: 1 })
    await remote.act(ref, { kind: 'login', userId: 'alice' })
    const cookie = cookieHeader((await remote.commit(ref)).setCookie)
    const leaving = await local.load({ cookie })
    expect(leaving.userId).toBe('alice')
    leaving.logout()
    await local.commit(leaving)
    expect(await remote.load(cookie)).toMatchObject({ isNew: true, userId: null, data: {} })
    expect(await remote.listUserSessions('alice')).toEqual([])
    expect((await local.load({ cookie })).isNew).toBe(true)
  })

  test('100 concurrent increments, half in each process, end at exactly 100', async () => {
    const { local, remote } = await pair()
    const start = await local.load({})
    start.set('n', 0)
    const cookie = cookieHeader((await local.commit(start)).setCookie)
    const here = async () => {
      const session = await local.load({ cookie })
      session.update('n', (n = 0) => n + 1)
      return local.commit(session)
    }
    const there = async () => {
      const { ref } = await remote.load(cookie)
      await remote.act(ref, { kind: 'inc', key: 'n' })
      return remote.commit(ref)
    }
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? here() : there())))
    expect(results.every((result) => result.setCookie === null)).toBe(true)
    expect((await local.load({ cookie })).get('n')).toBe(100)
    expect((await remote.load(cookie)).data).toEqual({ n: 100 })
  })
}

const MINUTE = 60_000

/**
 * The cap on sessions per user (`maxSessionsPerUser`) under sign-ins racing from two processes on one
 * store: Alice has some sessions; then each process signs her in, both new sessions created before
 * either counts (the remote's commit is held at its `listByUser` until the local one is done). The
 * remote signs in a millisecond later, so its session ranks as the more recent. Register inside a
 * store's suite, as {@link defineTwoProcessTests}.
 */
export function defineTwoProcessCapTests(shared: () => SharedStore): void {
  const cleanups: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })

  async function signIn(manager: SessionManager<AppData>): Promise<string> {
    const session = await manager.load({})
    session.login('alice')
    const cookie = cookieHeader((await manager.commit(session)).setCookie)
    if (cookie === undefined) throw new Error('the sign-in set no cookie')
    return cookie
  }

  async function signedIn(manager: SessionManager<AppData>, cookie: string): Promise<boolean> {
    return (await manager.load({ cookie })).userId !== null
  }

  async function race(options: Partial<SessionManagerOptions>, existing: number) {
    const { local, remote, clock } = await startPair(shared, cleanups, options)
    const before: string[] = []
    for (let i = 0; i < existing; i++) before.push(await signIn(local))
    clock.advance(MINUTE)
    await remote.setTime(clock.now() + 1)
    const { ref } = await remote.load(undefined)
    await remote.act(ref, { kind: 'login', userId: 'alice' })
    const held = await remote.pause('listByUser')
    const remoteCommit = remote.commit(ref).then(
      (result) => ({ ok: true as const, cookie: cookieHeader(result.setCookie) }),
      (error: { code?: string }) => ({ ok: false as const, code: error.code }),
    )
    await remote.reached(held)
    const localCommit = await signIn(local).then(
      (cookie) => ({ ok: true as const, cookie }),
      (error: { code?: string }) => ({ ok: false as const, code: error.code }),
    )
    await remote.release(held)
    return { local, before, results: [localCommit, await remoteCommit] }
  }

  describe('the cap on sessions per user, two processes signing the same user in at once', () => {
    test('end-least-recent, cap 2, two devices signed in: both new sign-ins stand, the two old ones end', async () => {
      const { local, before, results } = await race({ maxSessionsPerUser: 2 }, 2)
      expect(results.map((result) => result.ok)).toEqual([true, true])
      for (const cookie of before) expect(await signedIn(local, cookie)).toBe(false)
      for (const result of results)
        expect(await signedIn(local, result.ok ? (result.cookie as string) : '')).toBe(true)
      expect(await local.listUserSessions('alice')).toHaveLength(2)
    })

    test('end-least-recent, cap 1: the later sign-in stands; the earlier, outranked while it counted, fails', async () => {
      const { local, before, results } = await race({ maxSessionsPerUser: 1 }, 1)
      expect(await signedIn(local, before[0] as string)).toBe(false)
      // The local sign-in ended its own new session as the less recent: it lists again and says so.
      expect(results).toEqual([
        { ok: false, code: 'ERR_LATCHKEY_SESSION_CAP' },
        { ok: true, cookie: expect.any(String) },
      ])
      expect(await signedIn(local, (results[1] as { cookie: string }).cookie)).toBe(true)
      expect(await local.listUserSessions('alice')).toHaveLength(1)
    })

    test('refuse, cap 2, one device signed in: the sign-in that counted both new sessions is refused, the cap holds', async () => {
      const { local, before, results } = await race({ maxSessionsPerUser: 2, sessionCapPolicy: 'refuse' }, 1)
      expect(await signedIn(local, before[0] as string)).toBe(true)
      expect(results).toEqual([
        { ok: false, code: 'ERR_LATCHKEY_SESSION_CAP' },
        { ok: true, cookie: expect.any(String) },
      ])
      expect(await local.listUserSessions('alice')).toHaveLength(2)
    })
  })
}

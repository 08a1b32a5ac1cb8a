import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import type { SessionManager } from '../src/core/manager.js'
import { createSessionManager } from '../src/index.js'
import { SqliteStore } from '../src/stores/sqlite/index.js'
import type { AppData } from './support/app.js'
import type { Pausable } from './support/pausing-store.js'
import { pausable } from './support/pausing-store.js'
import type { RemoteManager, RemoteManagerOptions } from './support/remote.js'
import { cookieHeader, startRemoteManager } from './support/remote.js'

/** One SQLite file, a manager on it in this process (`local`) and one in a child process (`remote`). */
interface Shared {
  readonly path: string
  readonly keys: string[]
  readonly clock: ManualClock
  /** The local store, wrapped so a test can pause its calls. */
  readonly local: SessionManager<AppData>
  readonly localStore: Pausable<SqliteStore>
  readonly remote: RemoteManager
  /** Sets both processes' clocks. */
  setTime(ms: number): Promise<void>
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** Both managers get the same keys, time and options (default: plain-HTTP cookies, as `harness()`). */
async function shared(managerOptions: RemoteManagerOptions = {}): Promise<Shared> {
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-cross-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const path = join(dir, 'sessions.db')
  const keys = [generateKey()]
  const clock = new ManualClock()
  const options = { ...managerOptions, cookie: { secure: false, ...managerOptions.cookie } }
  const localStore = pausable(new SqliteStore({ path, clock }))
  const local = createSessionManager<AppData>({ ...options, store: localStore.store, keys, clock })
  cleanups.push(async () => {
    localStore.releaseAll()
    await local.close()
  })
  const remote = await startRemoteManager({
    path,
    keys,
    time: clock.now(),
    managerOptions: options,
    dataKeys: ['n'],
  })
  cleanups.push(() => remote.close())
  return {
    path,
    keys,
    clock,
    local,
    localStore,
    remote,
    setTime: async (ms) => {
      clock.set(ms)
      await remote.setTime(ms)
    },
  }
}

/** A session stored by the local manager with `n` = 0; resolves its Cookie header. */
async function localSession(s: Shared, userId?: string): Promise<string> {
  const session = await s.local.load({})
  session.set('n', 0)
  if (userId) session.login(userId)
  const cookie = cookieHeader((await s.local.commit(session)).setCookie)
  expect(cookie).toMatch(/^sid=[\w-]{43}$/)
  return cookie as string
}

describe('the cross-process harness', () => {
  test('a session created here is read and incremented by the other process', async () => {
    const s = await shared()
    const cookie = await localSession(s)
    const loaded = await s.remote.load(cookie)
    expect(loaded).toEqual({ ref: expect.any(String), isNew: false, userId: null, data: { n: 0 } })
    expect(await s.remote.act(loaded.ref, { kind: 'inc', key: 'n' })).toEqual({
      isNew: false,
      userId: null,
      data: { n: 1 },
    })
    expect(await s.remote.commit(loaded.ref)).toEqual({ setCookie: null, private: true })
    expect((await s.local.load({ cookie })).get('n')).toBe(1)
    expect(await s.remote.calls()).toEqual(['get', 'update'])
  })

  test('a session created there is signed in here; both list and revoke it', async () => {
    const s = await shared()
    const { ref } = await s.remote.load(undefined)
    await s.remote.act(ref, { kind: 'set', key: 'theme', value: 'dark' })
    await s.remote.act(ref, { kind: 'login', userId: 'ida' })
    const cookie = cookieHeader((await s.remote.commit(ref)).setCookie)
    const session = await s.local.load({ cookie })
    expect([session.userId, session.get('theme')]).toEqual(['ida', 'dark'])
    // Handles are sealed afresh on every listing: the same session, a different string.
    const listedHere = await s.local.listUserSessions('ida')
    const [listedThere] = await s.remote.listUserSessions('ida')
    expect(listedHere).toEqual([{ ...listedThere, handle: expect.any(String) }])
    expect(await s.remote.revoke(listedHere[0]?.handle as string)).toBe(true)
    expect((await s.local.load({ cookie })).isNew).toBe(true)
  })

  test('setTime moves the other process’s clock', async () => {
    const s = await shared({ idleTimeoutMs: 60_000 })
    const cookie = await localSession(s)
    await s.setTime(s.clock.now() + 59_999)
    expect((await s.remote.load(cookie)).isNew).toBe(false)
    await s.setTime(s.clock.now() + 60_000)
    expect((await s.remote.load(cookie)).isNew).toBe(true)
  })

  test('errors in the child come back as rejections with their message and code', async () => {
    const s = await shared()
    await expect(s.remote.commit('r999')).rejects.toMatchObject({ code: 'ERR_REMOTE_REF' })
    const { ref } = await s.remote.load(undefined)
    await expect(s.remote.act(ref, { kind: 'login', userId: '' })).rejects.toThrow(/login: userId/)
  })

  test('a child that cannot start rejects startRemoteManager with its stderr', async () => {
    const s = await shared()
    await expect(startRemoteManager({ path: s.path, keys: ['short'], time: 0 })).rejects.toThrow(
      /remote manager exited \(code 1\): [\s\S]*keys\[0\]/,
    )
  })

  test('close() ends the child, rejecting calls still held there', async () => {
    const s = await shared()
    const { ref } = await s.remote.load(undefined)
    await s.remote.act(ref, { kind: 'inc', key: 'n' })
    const held = await s.remote.pause('create')
    const committing = s.remote.commit(ref)
    await s.remote.reached(held)
    await s.remote.close()
    await expect(committing).rejects.toThrow(/remote manager exited/)
    expect(() => process.kill(s.remote.pid, 0)).toThrow(/ESRCH/)
    await expect(s.remote.load(undefined)).rejects.toThrow(/remote manager exited/)
  })
})

describe('two processes on one store', () => {
  test('2 x 20 overlapping update(n + 1) commits end with n = 40', async () => {
    const s = await shared()
    const cookie = await localSession(s)
    for (let round = 0; round < 20; round++) {
      const here = await s.local.load({ cookie })
      const there = await s.remote.load(cookie)
      expect(there.data.n).toBe(here.get('n'))
      here.update('n', (n = 0) => n + 1)
      await s.remote.act(there.ref, { kind: 'inc', key: 'n' })
      // Both loaded the same version; one commit is held at its write until the other has written.
      let results: unknown[]
      if (round % 2 === 0) {
        const held = await s.remote.pause('update')
        const remote = s.remote.commit(there.ref)
        await s.remote.reached(held)
        const local = await s.local.commit(here)
        await s.remote.release(held)
        results = [local, await remote]
      } else {
        const held = s.localStore.pause('update')
        const local = s.local.commit(here)
        await held.reached
        const remote = await s.remote.commit(there.ref)
        held.release()
        results = [await local, remote]
      }
      expect(results).toEqual([
        { setCookie: null, private: true },
        { setCookie: null, private: true },
      ])
    }
    // Each side wrote 20 times, plus a retry in each of its 10 held rounds: the commits did overlap.
    const updates = (calls: string[]) => calls.filter((operation) => operation === 'update').length
    expect([updates(s.localStore.calls), updates(await s.remote.calls())]).toEqual([30, 30])
    expect((await s.local.load({ cookie })).get('n')).toBe(40)
    expect((await s.remote.load(cookie)).data).toEqual({ n: 40 })
  })
})

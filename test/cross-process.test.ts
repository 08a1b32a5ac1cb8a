import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import { storeKeyOf } from '../src/core/id.js'
import { isEnded } from '../src/core/lifecycle/record-state.js'
import type { CommitResult, SessionManager, UserSessionInfo } from '../src/core/manager.js'
import type { Session } from '../src/core/session.js'
import type { SessionRecord } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { SqliteStore } from '../src/stores/sqlite/index.js'
import type { AppData } from './support/app.js'
import type { Pausable } from './support/pausing-store.js'
import { pausable } from './support/pausing-store.js'
import type { RemoteAction, RemoteManager, RemoteManagerOptions } from './support/remote.js'
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

/** The session keys the tests read back, in either process. */
const DATA_KEYS = ['n', 'rotated'] as const

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
    dataKeys: [...DATA_KEYS],
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

// Races between the two processes. Each overlap is forced by holding one store call in one process
// (a pause, never a timer) while the other process does its part; see races.test.ts for the same
// races between two managers in one process.

const MINUTE = 60_000
/** Past a 10-minute renewal interval: the next commit of a session this old rotates its ID. */
const RENEWAL_DUE = 11 * MINUTE

/** A request in one process: it loads its session, acts on it, then commits. */
interface Request {
  act(...actions: RemoteAction[]): Promise<void>
  commit(): Promise<CommitResult>
}

/** What a browser sending a cookie gets in one process: the user and data, `null` for a fresh session. */
type Opened = { userId: string | null; data: Record<string, unknown> } | null

/** One held store call; `release` lets it go on. */
interface Hold {
  readonly reached: Promise<void>
  release(): Promise<void>
}

/** One of the two processes, so that a test can run with the roles either way round. */
interface Side {
  readonly name: 'here' | 'there'
  load(cookie: string | undefined): Promise<Request>
  opens(cookie: string | undefined): Promise<Opened>
  listUserSessions(userId: string): Promise<UserSessionInfo[]>
  revoke(handle: string): Promise<boolean>
  /** Store operations this process made so far, in order. */
  calls(): Promise<string[]>
  /**
   * Holds this process's next `update` of the record behind `cookie` (at a login or regenerate: the
   * compare-and-set that ends or retires the old record). The remote's pauses cannot match arguments:
   * there it holds the next `update`, so arm it only where that is the one (check with `calls()`).
   */
  holdUpdateOf(cookie: string): Promise<Hold>
}

/** The update that writes the ended payload (a logout's end). */
const isEnd = ([record]: [SessionRecord, number]) => isEnded(record)

function act(session: Session<AppData>, action: RemoteAction): void {
  if (action.kind === 'set') session.set(action.key, action.value)
  else if (action.kind === 'inc') session.update('n', (n = 0) => n + 1)
  else if (action.kind === 'delete') session.delete(action.key)
  else if (action.kind === 'login') session.login(action.userId)
  else if (action.kind === 'logout') session.logout()
  else session.regenerate()
}

function sides(s: Shared): { here: Side; there: Side } {
  const here: Side = {
    name: 'here',
    async load(cookie) {
      const session = await s.local.load({ cookie })
      return {
        act: async (...actions) => {
          for (const action of actions) act(session, action)
        },
        commit: () => s.local.commit(session),
      }
    },
    async opens(cookie) {
      const session = await s.local.load({ cookie })
      if (session.isNew) return null
      const data: Record<string, unknown> = {}
      for (const key of DATA_KEYS) if (session.has(key)) data[key] = session.get(key)
      return { userId: session.userId, data }
    },
    listUserSessions: (userId) => s.local.listUserSessions(userId),
    revoke: (handle) => s.local.revoke(handle),
    calls: async () => [...s.localStore.calls],
    async holdUpdateOf(cookie) {
      const key = storeKeyOfCookie(cookie)
      const held = s.localStore.pause('update', { match: ([record]) => record.key === key })
      return { reached: held.reached, release: async () => held.release() }
    },
  }
  const there: Side = {
    name: 'there',
    async load(cookie) {
      const { ref } = await s.remote.load(cookie)
      return {
        act: async (...actions) => {
          for (const action of actions) await s.remote.act(ref, action)
        },
        commit: () => s.remote.commit(ref),
      }
    },
    async opens(cookie) {
      const { isNew, userId, data } = await s.remote.load(cookie)
      return isNew ? null : { userId, data }
    },
    listUserSessions: (userId) => s.remote.listUserSessions(userId),
    revoke: (handle) => s.remote.revoke(handle),
    calls: () => s.remote.calls(),
    async holdUpdateOf() {
      const id = await s.remote.pause('update')
      return { reached: s.remote.reached(id), release: () => s.remote.release(id) }
    },
  }
  return { here, there }
}

/** Both ways round: [first role, second role]. */
const ROLES = [
  ['here', 'there'],
  ['there', 'here'],
] as const

/** The new ID a commit hands the browser, as a Cookie header; `undefined` when it sets none. */
function cookieOf(result: CommitResult): string | undefined {
  return cookieHeader(result.setCookie)
}

/** Stores a session with `n` = 0 in `side`, signed in as `userId` if given; resolves its Cookie header. */
async function signIn(side: Side, userId?: string): Promise<string> {
  const request = await side.load(undefined)
  await request.act({ kind: 'set', key: 'n', value: 0 })
  if (userId !== undefined) await request.act({ kind: 'login', userId })
  const cookie = cookieOf(await request.commit())
  expect(cookie).toMatch(/^sid=[\w-]{43}$/)
  return cookie as string
}

/** Asserts that no process opens a session for any of `cookies`. */
async function expectDead(s: Shared, ...cookies: (string | undefined)[]): Promise<void> {
  const { here, there } = sides(s)
  for (const cookie of cookies) {
    expect(cookie).toBeDefined()
    expect(await here.opens(cookie)).toBeNull()
    expect(await there.opens(cookie)).toBeNull()
  }
}

async function expectNoSessionsOf(s: Shared, userId: string): Promise<void> {
  expect(await s.local.listUserSessions(userId)).toEqual([])
  expect(await s.remote.listUserSessions(userId)).toEqual([])
}

/** The store key behind a Cookie header, as the local store holds it. */
function storeKeyOfCookie(cookie: string): string {
  return storeKeyOf(cookie.slice('sid='.length))
}

const alice = (data: Record<string, unknown> = { n: 0 }) => ({ userId: 'alice', data })

/** `shared(options)` with alice signed in here (her first ID, `id0`), then both clocks moved `laterMs` on. */
async function aliceSignedInHere(laterMs = 0, options: RemoteManagerOptions = {}) {
  const s = await shared(options)
  const { here, there } = sides(s)
  const id0 = await signIn(here, 'alice')
  if (laterMs > 0) await s.setTime(s.clock.now() + laterMs)
  return { s, here, there, id0 }
}

describe('across processes: a logout racing a renewal', () => {
  const renewal = { renewalIntervalMs: 10 * MINUTE }

  test('the renewal there commits first: the logout here ends the renewed ID too', async () => {
    const { s, here, there, id0 } = await aliceSignedInHere(RENEWAL_DUE, renewal)
    const leaver = await here.load(id0)
    const reader = await there.load(id0)
    const id1 = cookieOf(await reader.commit())
    expect(id1).toBeDefined()
    expect(id1).not.toBe(id0)
    expect(await here.opens(id1)).toEqual(alice())
    await leaver.act({ kind: 'logout' })
    await leaver.commit()
    await expectDead(s, id0, id1)
    await expectNoSessionsOf(s, 'alice')
  })

  test('the logout here lands between the renewal there creating its new record and retiring the old one', async () => {
    const { s, here, there, id0 } = await aliceSignedInHere(RENEWAL_DUE, renewal)
    const reader = await there.load(id0)
    const leaver = await here.load(id0)
    const held = await s.remote.pause('update')
    const renewing = reader.commit()
    await s.remote.reached(held)
    expect((await s.remote.calls()).slice(-2)).toEqual(['create', 'update'])
    await leaver.act({ kind: 'logout' })
    await leaver.commit()
    await s.remote.release(held)
    // The renewal lost its compare-and-set to the logout: no new ID went out, nothing survives.
    expect(await renewing).toEqual({ setCookie: null, private: true })
    await expectDead(s, id0)
    expect(await s.localStore.store.count()).toBe(0)
    await expectNoSessionsOf(s, 'alice')
  })

  test('the renewal there lands while the logout here is ending the old record', async () => {
    const { s, here, there, id0 } = await aliceSignedInHere(RENEWAL_DUE, renewal)
    const reader = await there.load(id0)
    const leaver = await here.load(id0)
    const held = s.localStore.pause('update', { match: isEnd })
    await leaver.act({ kind: 'logout' })
    const leaving = leaver.commit()
    await held.reached
    const id1 = cookieOf(await reader.commit())
    expect(id1).toBeDefined()
    held.release()
    await leaving
    await expectDead(s, id0, id1)
    expect(await s.localStore.store.count()).toBe(0)
    await expectNoSessionsOf(s, 'alice')
  })
})

describe('across processes: a logout racing regenerate()', () => {
  test('regenerate there commits first: the regenerated ID dies with the logout here', async () => {
    const { s, here, there, id0 } = await aliceSignedInHere()
    const elevating = await there.load(id0)
    const leaver = await here.load(id0)
    await elevating.act({ kind: 'regenerate' }, { kind: 'set', key: 'rotated', value: 'regenerate' })
    const id1 = cookieOf(await elevating.commit())
    expect(id1).toBeDefined()
    expect(await here.opens(id1)).toEqual(alice({ n: 0, rotated: 'regenerate' }))
    await leaver.act({ kind: 'logout' })
    await leaver.commit()
    await expectDead(s, id0, id1)
    await expectNoSessionsOf(s, 'alice')
  })
})

describe('across processes: revoke(handle)', () => {
  test.each(ROLES)(
    'a handle listed %s ends the session after the device renewed its ID %s, past the grace window',
    async (listerName, renewerName) => {
      const s = await shared({ renewalIntervalMs: 10 * MINUTE })
      const { [listerName]: lister, [renewerName]: renewer } = sides(s)
      const phoneSince = s.clock.now()
      const phone = await signIn(lister, 'alice')
      await s.setTime(phoneSince + MINUTE)
      const laptop = await signIn(lister, 'alice')
      const listed = await lister.listUserSessions('alice')
      expect(listed).toHaveLength(2)
      const phoneHandle = listed.find((session) => session.createdAt === phoneSince)?.handle as string
      await s.setTime(phoneSince + 12 * MINUTE)
      const renewedPhone = cookieOf(await (await renewer.load(phone)).commit())
      const renewedLaptop = cookieOf(await (await renewer.load(laptop)).commit())
      expect(renewedPhone).toBeDefined()
      expect(renewedLaptop).toBeDefined()
      await s.setTime(s.clock.now() + s.local.options.renewalGraceMs + 1)
      expect(await lister.opens(renewedPhone)).toEqual(alice())
      expect(await lister.revoke(phoneHandle)).toBe(true)
      await expectDead(s, phone, renewedPhone)
      expect(await lister.opens(renewedLaptop)).toEqual(alice())
      expect(await renewer.opens(renewedLaptop)).toEqual(alice())
      expect(await lister.revoke(phoneHandle)).toBe(false)
      expect(await renewer.revoke(phoneHandle)).toBe(false)
      expect(await lister.listUserSessions('alice')).toHaveLength(1)
      expect(await renewer.listUserSessions('alice')).toHaveLength(1)
    },
  )
})

describe('across processes: the grace window is a hard limit', () => {
  // A grace window longer than the touch interval, so the late request's touch lands inside it.
  const options = { renewalIntervalMs: 10 * MINUTE, touchIntervalMs: MINUTE, renewalGraceMs: 5 * MINUTE }

  test.each(ROLES)(
    'renewed %s, the old ID touched %s two minutes later still ends with the window',
    async (renewerName, lateName) => {
      const s = await shared(options)
      const { [renewerName]: renewer, [lateName]: late } = sides(s)
      const id0 = await signIn(renewer, 'alice')
      await s.setTime(s.clock.now() + RENEWAL_DUE)
      const first = await renewer.load(id0)
      const stale = await late.load(id0)
      const renewedAt = s.clock.now()
      const id1 = cookieOf(await first.commit())
      expect(id1).toBeDefined()
      // The late request touches (and tries to renew) the record it loaded, a forwarder by now.
      await s.setTime(renewedAt + 2 * MINUTE)
      await stale.commit()
      expect(await late.opens(id0)).toEqual(alice())
      expect(await renewer.opens(id0)).toEqual(alice())
      await s.setTime(renewedAt + 5 * MINUTE)
      expect(await s.localStore.store.get(storeKeyOfCookie(id0))).toBeNull()
      await expectDead(s, id0)
      expect(await late.opens(id1)).toEqual(alice())
      expect(await renewer.opens(id1)).toEqual(alice())
    },
  )
})

describe('across processes: no lost write at sign-in', () => {
  test.each([
    ['login', ...ROLES[0]],
    ['login', ...ROLES[1]],
    ['regenerate', ...ROLES[0]],
    ['regenerate', ...ROLES[1]],
  ] as const)(
    'a %s %s, held before it retires the old ID, carries a write committed %s into the new ID',
    async (kind, rotatorName, writerName) => {
      const s = await shared()
      const { [rotatorName]: rotator, [writerName]: writer } = sides(s)
      // A login signs in an anonymous session; a regenerate raises the privileges of a signed-in one.
      const id0 = await signIn(rotator, kind === 'login' ? undefined : 'alice')
      const rotating = await rotator.load(id0)
      const writing = await writer.load(id0)
      await rotating.act(kind === 'login' ? { kind: 'login', userId: 'alice' } : { kind: 'regenerate' }, {
        kind: 'set',
        key: 'rotated',
        value: kind,
      })
      const held = await rotator.holdUpdateOf(id0)
      const committing = rotating.commit()
      await held.reached
      // Held after creating the new record, before ending (login) or retiring (regenerate) the old one.
      expect((await rotator.calls()).slice(-2)).toEqual(['create', 'update'])
      await writing.act({ kind: 'inc', key: 'n' })
      expect(await writing.commit()).toEqual({ setCookie: null, private: true })
      await held.release()
      const id1 = cookieOf(await committing)
      expect(id1).toBeDefined()
      expect(await rotator.opens(id1)).toEqual(alice({ n: 1, rotated: kind }))
      expect(await writer.opens(id1)).toEqual(alice({ n: 1, rotated: kind }))
      await expectDead(s, id0)
    },
  )
})

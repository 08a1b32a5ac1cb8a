/**
 * The cap on sessions per user (ASVS V7.1): `maxSessionsPerUser`, held through the user index at every
 * sign-in, on every bundled store (PostgreSQL, MariaDB and Redis are service-gated: skipped when absent,
 * a failure under CI=true), and under sign-ins racing from two processes on one SQLite file and one
 * FileStore folder here; on PostgreSQL, MariaDB and Redis in their stores' suites (the same tests:
 * `defineTwoProcessCapTests`).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import type { SessionManager } from '../src/core/manager.js'
import type { SessionManagerOptions } from '../src/core/options.js'
import type { SessionStore } from '../src/core/store.js'
import { createSessionManager, MemoryStore } from '../src/index.js'
import { FileStore } from '../src/stores/file/index.js'
import { SqliteStore } from '../src/stores/sqlite/index.js'
import { type Backend, backends, closeStore } from './support/cli-backends.js'
import { cookieHeader } from './support/remote.js'
import { describeWithService } from './support/services.js'
import { defineTwoProcessCapTests } from './support/two-processes.js'

const MINUTE = 60_000
const KEYS = [generateKey()]
type Data = Record<string, unknown>

/** Signs `userId` in from a fresh session (a new device); resolves its Cookie header. */
async function signIn(manager: SessionManager<Data>, userId = 'alice'): Promise<string> {
  const session = await manager.load({})
  session.login(userId)
  const cookie = cookieHeader((await manager.commit(session)).setCookie)
  if (cookie === undefined) throw new Error('the sign-in set no cookie')
  return cookie
}

/** Whether the device holding `cookie` is still signed in. */
async function signedIn(manager: SessionManager<Data>, cookie: string): Promise<boolean> {
  return (await manager.load({ cookie })).userId !== null
}

/** A request on the device holding `cookie` that changes nothing: its session is touched when due. */
async function visit(manager: SessionManager<Data>, cookie: string): Promise<void> {
  await manager.commit(await manager.load({ cookie }))
}

/** The cap's behaviour on one store; `open` gives a fresh store, the manager's clock set to now. */
function capTests(open: () => Promise<SessionStore>): void {
  const stores: SessionStore[] = []
  afterEach(async () => {
    for (const store of stores.splice(0)) await closeStore(store)
  })
  async function manager(options: Partial<SessionManagerOptions>) {
    const store = await open()
    stores.push(store)
    const clock = new ManualClock(Date.now())
    return {
      clock,
      manager: createSessionManager<Data>({
        store,
        keys: KEYS,
        clock,
        cookie: { secure: false },
        ...options,
      }),
    }
  }

  test('end-least-recent: the sign-in past the cap ends the session used least recently', async () => {
    const { clock, manager: m } = await manager({ maxSessionsPerUser: 2 })
    const user = `u${Math.random()}`
    const first = await signIn(m, user)
    clock.advance(MINUTE)
    const second = await signIn(m, user)
    // The first device is used again after the second signed in (past the touch interval).
    clock.advance(4 * MINUTE)
    await visit(m, first)
    clock.advance(MINUTE)
    const third = await signIn(m, user)
    expect([await signedIn(m, first), await signedIn(m, second), await signedIn(m, third)]).toEqual([
      true,
      false,
      true,
    ])
    expect(await m.listUserSessions(user)).toHaveLength(2)
    // Another user's sessions are not counted.
    await signIn(m, `${user}-other`)
    expect(await m.listUserSessions(user)).toHaveLength(2)
  })

  test('refuse: the sign-in past the cap fails with ERR_LATCHKEY_SESSION_CAP, the others untouched', async () => {
    const { clock, manager: m } = await manager({ maxSessionsPerUser: 2, sessionCapPolicy: 'refuse' })
    const user = `u${Math.random()}`
    const first = await signIn(m, user)
    clock.advance(MINUTE)
    const second = await signIn(m, user)
    clock.advance(MINUTE)
    await expect(signIn(m, user)).rejects.toMatchObject({ code: 'ERR_LATCHKEY_SESSION_CAP' })
    expect([await signedIn(m, first), await signedIn(m, second)]).toEqual([true, true])
    expect(await m.listUserSessions(user)).toHaveLength(2)
    // A device signed in already signs in again (its old session ends first): no refusal.
    const again = await m.load({ cookie: first })
    again.login(user)
    const renewed = cookieHeader((await m.commit(again)).setCookie) as string
    expect([await signedIn(m, renewed), await signedIn(m, second)]).toEqual([true, true])
  })
}

describe('MemoryStore', () => {
  capTests(async () => new MemoryStore())
})

const all: Backend[] = await backends('cap')
afterAll(async () => {
  for (const backend of all) await backend.cleanup()
})
for (const backend of all) {
  describeWithService(backend.status, backend.name, () => capTests(() => backend.open()))
}

describe('options', () => {
  test('maxSessionsPerUser is an integer from 1 to 1000, and needs a store with a user index', () => {
    const store = new MemoryStore()
    for (const bad of [0, -1, 1.5, 1001, '3', Number.NaN]) {
      expect(() => createSessionManager({ store, keys: KEYS, maxSessionsPerUser: bad as number })).toThrow(
        expect.objectContaining({ option: 'maxSessionsPerUser' }),
      )
    }
    const { listByUser: _, ...unindexed } = Object.fromEntries(
      ['get', 'create', 'update', 'touch', 'destroy', 'listByUser'].map((name) => [
        name,
        (store as unknown as Record<string, (...args: unknown[]) => unknown>)[name]?.bind(store),
      ]),
    )
    expect(() =>
      createSessionManager({
        store: unindexed as unknown as SessionStore,
        keys: KEYS,
        maxSessionsPerUser: 3,
      }),
    ).toThrow(/maxSessionsPerUser: needs a store with a user index/)
    expect(() => createSessionManager({ store, keys: KEYS, sessionCapPolicy: 'oldest' as 'refuse' })).toThrow(
      expect.objectContaining({ option: 'sessionCapPolicy' }),
    )
    const defaults = createSessionManager({ store, keys: KEYS }).options
    expect([defaults.maxSessionsPerUser, defaults.sessionCapPolicy]).toEqual([null, 'end-least-recent'])
  })
})

describe('two processes signing the same user in at once, on one SQLite file', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'latchkey-cap-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))
  defineTwoProcessCapTests(() => {
    const path = join(dir, `${Math.random()}.db`)
    return {
      local: (clock) => new SqliteStore({ path, clock }),
      remote: { module: 'src/stores/sqlite/index.ts', exportName: 'SqliteStore', options: { path } },
    }
  })
})

describe('two processes signing the same user in at once, on one FileStore folder', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'latchkey-cap-files-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))
  defineTwoProcessCapTests(() => {
    const directory = join(dir, `${Math.random()}`)
    return {
      local: (clock) => new FileStore({ directory, clock, pruneIntervalMs: 0 }),
      remote: {
        module: 'src/stores/file/index.ts',
        exportName: 'FileStore',
        options: { directory, pruneIntervalMs: 0 },
      },
    }
  })
})

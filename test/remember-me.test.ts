/**
 * "Remember me", per session: `login(userId, { persistent })` chooses a persistent cookie (Max-Age =
 * the time left until the absolute deadline) or a browser-session cookie for that session, whatever the
 * manager's default, and the choice is kept in the sealed metadata: every renewal, a regenerate and a
 * sign-in that met a concurrent write still hand out the kind chosen.
 */
import { describe, expect, test } from 'vitest'
import type { CommitResult, SessionManager } from '../src/core/manager.js'
import { type Data, load, MINUTE, RENEWAL_DUE, setup } from './support/managers.js'

/** The cookie's Max-Age in seconds; `null` for a browser-session cookie. */
function maxAgeOf(result: CommitResult): number | null {
  const match = result.setCookie?.match(/; Max-Age=(\d+)/)
  if (result.setCookie === null) throw new Error('no cookie was sent')
  return match ? Number(match[1]) : null
}

function idOf(result: CommitResult): string {
  const id = result.setCookie?.match(/^sid=([^;]+)/)?.[1]
  if (id === undefined) throw new Error('no session cookie was sent')
  return id
}

/** Signs `userId` in from a fresh session; resolves the commit's result. */
async function signIn(
  manager: SessionManager<Data>,
  options?: { persistent?: boolean },
): Promise<CommitResult> {
  const session = await load(manager, undefined)
  session.login('alice', options)
  return manager.commit(session)
}

/** Renews the session `times` times, a renewal interval apart; resolves every renewal's commit. */
async function renewals(
  manager: SessionManager<Data>,
  clock: { advance(ms: number): void },
  first: string,
  times: number,
): Promise<CommitResult[]> {
  const results: CommitResult[] = []
  let id = first
  for (let i = 0; i < times; i++) {
    clock.advance(RENEWAL_DUE)
    const session = await load(manager, id)
    expect(session.userId, 'the session should still be signed in').toBe('alice')
    const result = await manager.commit(session)
    expect(result.setCookie, 'a renewal is due at every visit').not.toBeNull()
    id = idOf(result)
    results.push(result)
  }
  return results
}

describe('login(userId, { persistent })', () => {
  test('persistent: true on a manager whose default is a browser-session cookie: Max-Age to the absolute deadline, renewal after renewal', async () => {
    const { clock, make } = setup()
    const manager = make({ cookie: { secure: false, persistent: false } })
    const absolute = manager.options.absoluteTimeoutMs / 1000
    const login = await signIn(manager, { persistent: true })
    expect(maxAgeOf(login)).toBe(absolute)
    const renewed = await renewals(manager, clock, idOf(login), 4)
    expect(renewed.map(maxAgeOf)).toEqual([1, 2, 3, 4].map((n) => absolute - (n * RENEWAL_DUE) / 1000))
  })

  test('persistent: false on a manager whose default is persistent: a browser-session cookie, renewal after renewal', async () => {
    const { clock, make } = setup()
    const manager = make({ cookie: { secure: false, persistent: true } })
    const login = await signIn(manager, { persistent: false })
    expect(maxAgeOf(login)).toBeNull()
    const renewed = await renewals(manager, clock, idOf(login), 4)
    expect(renewed.map(maxAgeOf)).toEqual([null, null, null, null])
  })

  test.each([true, false])('left out, the manager’s cookie.persistent (%s) decides', async (persistent) => {
    const { clock, make } = setup()
    const manager = make({ cookie: { secure: false, persistent } })
    const login = await signIn(manager)
    const renewed = await renewals(manager, clock, idOf(login), 2)
    for (const result of [login, ...renewed]) expect(maxAgeOf(result) !== null).toBe(persistent)
  })

  test('two sessions of one manager, two choices', async () => {
    const { clock, make } = setup()
    const manager = make()
    const remembered = idOf(await signIn(manager, { persistent: true }))
    const forgotten = idOf(await signIn(manager, { persistent: false }))
    expect((await renewals(manager, clock, remembered, 1)).map(maxAgeOf)[0]).not.toBeNull()
    expect((await renewals(manager, clock, forgotten, 1)).map(maxAgeOf)[0]).toBeNull()
  })

  test('a regenerate keeps the choice', async () => {
    const { make } = setup()
    const manager = make()
    const id = idOf(await signIn(manager, { persistent: true }))
    const session = await load(manager, id)
    session.regenerate()
    expect(maxAgeOf(await manager.commit(session))).not.toBeNull()
  })

  test('a sign-in that meets a concurrent write (replayed on the fresh record) keeps its choice', async () => {
    const { clock, make } = setup()
    const manager = make()
    const anonymous = await load(manager, undefined)
    anonymous.set('cart', 1)
    const id = idOf(await manager.commit(anonymous))
    const signingIn = await load(manager, id)
    const other = await load(manager, id)
    other.set('cart', 2)
    await manager.commit(other)
    signingIn.login('alice', { persistent: true })
    const login = await manager.commit(signingIn)
    expect(maxAgeOf(login)).not.toBeNull()
    expect(
      (await renewals(manager, clock, idOf(login), 2)).every((result) => maxAgeOf(result) !== null),
    ).toBe(true)
  })

  test('each sign-in chooses afresh, and a logout forgets the choice', async () => {
    const { make } = setup()
    const manager = make()
    const id = idOf(await signIn(manager, { persistent: true }))
    const again = await load(manager, id)
    again.login('alice')
    expect(maxAgeOf(await manager.commit(again))).toBeNull()

    const remembered = idOf(await signIn(manager, { persistent: true }))
    const leaving = await load(manager, remembered)
    leaving.logout()
    leaving.set('cart', 1)
    expect(maxAgeOf(await manager.commit(leaving))).toBeNull()
  })

  test('session.cookie reports the choice before and after the commit', async () => {
    const { clock, make } = setup()
    const manager = make()
    const session = await load(manager, undefined)
    expect(session.cookie.persistent).toBe(false)
    session.login('alice', { persistent: true })
    const absolute = manager.options.absoluteTimeoutMs
    expect(session.cookie).toMatchObject({ persistent: true, maxAge: absolute })
    const id = idOf(await manager.commit(session))
    clock.advance(10 * MINUTE)
    const later = await load(manager, id)
    expect(later.cookie.maxAge).toBe(absolute - 10 * MINUTE)
    expect(later.cookie.expires?.getTime()).toBe(clock.now() + absolute - 10 * MINUTE)
  })

  test('options that are not { persistent?: boolean } are a TypeError', async () => {
    const { make } = setup()
    const session = await load(make(), undefined)
    expect(() => session.login('alice', { persistent: 'yes' as unknown as boolean })).toThrow(
      /persistent must be a boolean, got string/,
    )
    expect(() => session.login('alice', null as unknown as object)).toThrow(TypeError)
    expect(session.userId).toBeNull()
  })
})

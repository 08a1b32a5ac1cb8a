// CSRF tokens and the pre-session secret, at the keyring and the manager (no HTTP).
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { ManualClock } from '../core/clock.js'
import { CSRF_TOKEN_LENGTH, decodeKey, generateKey, Keyring, randomToken } from '../core/crypto.js'
import { createSessionManager } from '../core/manager.js'
import type { SessionManagerOptions } from '../core/options.js'
import type { SessionStore } from '../core/store.js'
import { MemoryStore } from '../stores/memory/index.js'

function keyring(...keys: string[]): Keyring {
  return new Keyring(keys.map((key) => decodeKey(key) as Buffer))
}

describe('tokens', () => {
  const ring = keyring(generateKey())
  const secret = randomToken()

  test('each token is fresh, 86 characters of canonical base64url, and hides the secret', () => {
    const tokens = new Set<string>()
    for (let i = 0; i < 200; i++) {
      const token = ring.csrfToken(secret)
      expect(token).toMatch(/^[A-Za-z0-9_-]{85}[AQgw]$/)
      expect(token).toHaveLength(CSRF_TOKEN_LENGTH)
      expect(ring.verifyCsrfToken(secret, token)).toBe(true)
      tokens.add(token)
    }
    expect(tokens.size).toBe(200)
    // Neither half of a token, nor their XOR, is the secret: it is an HMAC of it under a subkey.
    const bytes = Buffer.from(ring.csrfToken(secret), 'base64url')
    const secretBytes = Buffer.from(secret, 'base64url')
    const xored = Buffer.alloc(32)
    for (let i = 0; i < 32; i++) xored[i] = (bytes[i] as number) ^ (bytes[32 + i] as number)
    expect(xored.equals(secretBytes)).toBe(false)
    expect(bytes.includes(secretBytes.subarray(0, 8))).toBe(false)
  })

  test('a token is bound to its secret and to the keys', () => {
    const token = ring.csrfToken(secret)
    expect(ring.verifyCsrfToken(randomToken(), token)).toBe(false)
    expect(ring.verifyCsrfToken('', token)).toBe(false)
    expect(keyring(generateKey()).verifyCsrfToken(secret, token)).toBe(false)
  })

  test('old keys still verify (rotation); the first key makes tokens', () => {
    const [oldKey, newKey] = [generateKey(), generateKey()]
    const before = keyring(oldKey).csrfToken(secret)
    const rotated = keyring(newKey, oldKey)
    expect(rotated.verifyCsrfToken(secret, before)).toBe(true)
    const after = rotated.csrfToken(secret)
    expect(keyring(newKey).verifyCsrfToken(secret, after)).toBe(true)
    expect(keyring(oldKey).verifyCsrfToken(secret, after)).toBe(false)
    expect(keyring(newKey).verifyCsrfToken(secret, before)).toBe(false)
  })

  test('anything that is not a token is refused, never with an exception (property-based)', () => {
    const token = ring.csrfToken(secret)
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' })),
        (value) => {
          expect(ring.verifyCsrfToken(secret, value)).toBe(value === token)
        },
      ),
      { numRuns: 2000 },
    )
    fc.assert(
      fc.property(fc.anything(), (value) => {
        expect(ring.verifyCsrfToken(secret, value)).toBe(false)
      }),
    )
    // One character changed anywhere, or a non-canonical last character, or one more or one less.
    fc.assert(
      fc.property(
        fc.nat({ max: CSRF_TOKEN_LENGTH - 1 }),
        fc.constantFrom(...'ABQgwxyz019-_+/=. \u0000é'),
        (at, char) => {
          const changed = token.slice(0, at) + char + token.slice(at + 1)
          expect(ring.verifyCsrfToken(secret, changed)).toBe(changed === token)
        },
      ),
      { numRuns: 1000 },
    )
    const last = token.at(-1) as string
    const sibling = 'AQgw'.includes(last) ? String.fromCharCode(last.charCodeAt(0) + 1) : 'A'
    expect(
      Buffer.from(token.slice(0, -1) + sibling, 'base64url').equals(Buffer.from(token, 'base64url')),
    ).toBe(true)
    expect(ring.verifyCsrfToken(secret, token.slice(0, -1) + sibling)).toBe(false)
    expect(ring.verifyCsrfToken(secret, `${token}=`)).toBe(false)
    expect(ring.verifyCsrfToken(secret, token.slice(1))).toBe(false)
    expect(ring.verifyCsrfToken(secret, `${token} `)).toBe(false)
  })
})

/** A MemoryStore without its synchronous methods: every commit takes the asynchronous path. */
function asyncOnly(store: MemoryStore): SessionStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (typeof property === 'string' && property.endsWith('Sync')) return undefined
      const value = Reflect.get(target, property, receiver)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

describe.each([
  ['a synchronous store', (store: MemoryStore): SessionStore => store],
  ['an asynchronous store', asyncOnly],
])('the pre-session secret, with %s', (_name, wrap) => {
  function setup(options: Partial<SessionManagerOptions> = {}) {
    const clock = new ManualClock()
    const memory = new MemoryStore({ clock })
    const manager = createSessionManager({
      store: wrap(memory),
      keys: [generateKey()],
      clock,
      cookie: { secure: false },
      ...options,
    })
    const commit = async (session: Awaited<ReturnType<typeof manager.load>>) =>
      manager.commitSync(session) ?? (await manager.commit(session))
    return { clock, memory, manager, commit }
  }

  /** The Cookie header a browser would send back after these Set-Cookie values. */
  function cookieOf(...setCookies: (string | null | undefined)[]): string {
    return setCookies
      .filter((raw): raw is string => typeof raw === 'string' && !/Max-Age=0/.test(raw))
      .map((raw) => raw.split(';')[0])
      .join('; ')
  }

  test('a token on a session not stored seals its secret into the cookie; nothing is stored', async () => {
    const { manager, memory, commit } = setup()
    const session = await manager.load({})
    const token = session.csrfToken()
    const result = await commit(session)
    expect(result.setCookie).toBeNull()
    expect(result.private).toBe(true)
    expect(result.csrfCookie).toMatch(
      /^csrf=[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]+; Max-Age=7200; Path=\/; HttpOnly; SameSite=Lax$/,
    )
    expect(await memory.count()).toBe(0)
    const next = await manager.load({ cookie: cookieOf(result.csrfCookie) })
    expect(manager.verifyCsrfToken(next, token)).toBe(true)
    // Quiet while the cookie is fresh, and a session without a token sends nothing at all.
    next.csrfToken()
    expect(await commit(next)).toEqual({ setCookie: null, private: true })
    expect(await commit(await manager.load({}))).toEqual({ setCookie: null, private: false })
  })

  test('stored later, the session adopts the secret and the cookie is cleared; login and logout replace it', async () => {
    const { manager, commit } = setup()
    const first = await manager.load({})
    const token = first.csrfToken()
    const cookie = cookieOf((await commit(first)).csrfCookie)
    const anonymous = await manager.load({ cookie })
    anonymous.set('cart', ['x'])
    const stored = await commit(anonymous)
    expect(stored.csrfCookie).toMatch(
      /^csrf=; Max-Age=0; Path=\/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax$/,
    )
    const sid = cookieOf(stored.setCookie)
    const back = await manager.load({ cookie: sid })
    expect(manager.verifyCsrfToken(back, token)).toBe(true)
    // A pre-session cookie sent beside a stored session is cleared and ignored.
    const both = await manager.load({ cookie: `${sid}; ${cookie}` })
    expect(manager.verifyCsrfToken(both, token)).toBe(true)
    expect((await commit(both)).csrfCookie).toMatch(/Max-Age=0/)

    back.login('ada')
    const afterLogin = back.csrfToken()
    const signedIn = await commit(back)
    const session = await manager.load({ cookie: cookieOf(signedIn.setCookie) })
    expect(manager.verifyCsrfToken(session, token)).toBe(false)
    expect(manager.verifyCsrfToken(session, afterLogin)).toBe(true)
    session.logout()
    const afterLogout = session.csrfToken()
    const out = await commit(session)
    expect(out.setCookie).toMatch(/Max-Age=0/)
    const visitor = await manager.load({ cookie: cookieOf(out.csrfCookie) })
    expect(manager.verifyCsrfToken(visitor, afterLogin)).toBe(false)
    expect(manager.verifyCsrfToken(visitor, afterLogout)).toBe(true)
  })

  test('regenerate() keeps the secret: tokens made before it still pass', async () => {
    const { manager, commit } = setup()
    const session = await manager.load({})
    session.set('k', 1)
    const created = await commit(session)
    const loaded = await manager.load({ cookie: cookieOf(created.setCookie) })
    const token = loaded.csrfToken()
    loaded.regenerate()
    const rotated = await commit(loaded)
    expect(rotated.setCookie).not.toBe(created.setCookie)
    expect(manager.verifyCsrfToken(await manager.load({ cookie: cookieOf(rotated.setCookie) }), token)).toBe(
      true,
    )
  })

  test('login straight from the pre-session form: a new secret, the cookie cleared', async () => {
    const { manager, commit } = setup()
    const form = await manager.load({})
    const token = form.csrfToken()
    const cookie = cookieOf((await commit(form)).csrfCookie)
    const post = await manager.load({ cookie })
    expect(manager.verifyCsrfToken(post, token)).toBe(true)
    post.login('ada')
    const result = await commit(post)
    expect(result.csrfCookie).toMatch(/Max-Age=0/)
    const session = await manager.load({ cookie: cookieOf(result.setCookie) })
    expect(session.userId).toBe('ada')
    expect(manager.verifyCsrfToken(session, token)).toBe(false)
  })

  test('an anonymous logout clears the pre-session cookie; a token made after it gets a new one', async () => {
    const { manager, commit } = setup()
    const form = await manager.load({})
    const token = form.csrfToken()
    const cookie = cookieOf((await commit(form)).csrfCookie)
    const quit = await manager.load({ cookie })
    quit.logout()
    expect((await commit(quit)).csrfCookie).toMatch(/Max-Age=0/)
    const again = await manager.load({ cookie })
    again.csrfToken()
    again.logout()
    const fresh = again.csrfToken()
    const result = await commit(again)
    expect(result.csrfCookie).toMatch(/^csrf=[^;]+; Max-Age=7200/)
    const next = await manager.load({ cookie: cookieOf(result.csrfCookie) })
    expect(manager.verifyCsrfToken(next, fresh)).toBe(true)
    expect(manager.verifyCsrfToken(next, token)).toBe(false)
  })

  test('expiry by the clock, renewal past half its life, and the options', async () => {
    const { manager, clock, commit } = setup({ csrfCookie: { name: 'pre', maxAgeMs: 60_000 } })
    const form = await manager.load({})
    const token = form.csrfToken()
    const result = await commit(form)
    expect(result.csrfCookie).toMatch(/^pre=[^;]+; Max-Age=60; /)
    const cookie = cookieOf(result.csrfCookie)
    clock.advance(29_000)
    const young = await manager.load({ cookie })
    young.csrfToken()
    expect((await commit(young)).csrfCookie).toBeUndefined()
    clock.advance(2_000)
    const aging = await manager.load({ cookie })
    expect(manager.verifyCsrfToken(aging, token)).toBe(true)
    // Only a response that shows a form renews it.
    expect((await commit(await manager.load({ cookie }))).csrfCookie).toBeUndefined()
    aging.csrfToken()
    const renewed = cookieOf((await commit(aging)).csrfCookie)
    expect(renewed).not.toBe(cookie)
    clock.advance(40_000)
    expect(manager.verifyCsrfToken(await manager.load({ cookie }), token)).toBe(false)
    const later = await manager.load({ cookie: renewed })
    expect(manager.verifyCsrfToken(later, token)).toBe(true)
    const expired = await manager.load({ cookie })
    expect((await commit(expired)).csrfCookie).toMatch(/^pre=; Max-Age=0/)
  })

  test('cookie options are checked at construction', () => {
    const store = new MemoryStore()
    const keys = [generateKey()]
    const build = (options: Partial<SessionManagerOptions>) => () =>
      createSessionManager({ store, keys, ...options })
    expect(build({})().options.csrfCookie).toEqual({
      name: '__Host-csrf',
      secure: true,
      sameSite: 'lax',
      maxAgeMs: 7_200_000,
    })
    expect(build({ cookie: { secure: false } })().options.csrfCookie.name).toBe('csrf')
    expect(build({ cookie: { name: 'custom', sameSite: 'strict' } })().options.csrfCookie).toMatchObject({
      name: '__Host-csrf',
      sameSite: 'strict',
    })
    expect(build({ csrfCookie: { name: '__Host-sid' } })).toThrow(/csrfCookie.name: must differ/)
    expect(build({ cookie: { secure: false }, csrfCookie: { name: '__Host-x' } })).toThrow(/csrfCookie.name/)
    expect(build({ csrfCookie: { name: 'a;b' } })).toThrow(/csrfCookie.name/)
    expect(build({ csrfCookie: { maxAgeMs: 999 } })).toThrow(/csrfCookie.maxAgeMs/)
    expect(build({ csrfCookie: { maxAgeMs: 1.5e3 + 0.5 } })).toThrow(/csrfCookie.maxAgeMs/)
  })
})

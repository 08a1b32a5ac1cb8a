/**
 * The synchronous fast path: with a store that answers synchronously, a plain read, write, touch or new
 * session is loaded and committed without a promise. Whenever anything else happened to the session in
 * between (another request's write, another commit in flight, a rotation, a renewal due, a logout), it
 * must decline and leave the whole job to the full path, having written nothing.
 */
import { describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import type { CommitResult, SessionManager } from '../src/core/manager.js'
import type { SessionManagerOptions } from '../src/core/options.js'
import { createSessionManager, StoreError } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { serve } from './support/http.js'

const KEYS = [generateKey()]
const MINUTE = 60_000
type Data = { n?: number; v?: string }

/** A MemoryStore whose every call is logged by name, the synchronous ones included. */
function setup(options: Partial<SessionManagerOptions> = {}) {
  const clock = new ManualClock()
  const memory = new MemoryStore({ clock })
  const calls: string[] = []
  const store = new Proxy(memory, {
    get(target, property) {
      const member = Reflect.get(target, property, target)
      if (typeof member !== 'function' || property === 'constructor') return member
      return (...args: unknown[]) => {
        calls.push(String(property))
        return member.apply(target, args)
      }
    },
  })
  const make = () =>
    createSessionManager<Data>({ store, keys: KEYS, clock, cookie: { secure: false }, ...options })
  return { clock, memory, calls, manager: make(), another: make }
}

function cookieOf(result: CommitResult | null): string {
  const match = result?.setCookie?.match(/^sid=([^;]+)/)
  if (!match) throw new Error('no session cookie was set')
  return `sid=${match[1]}`
}

async function stored(manager: SessionManager<Data>, data: Data = { n: 0 }): Promise<string> {
  const session = await manager.load({})
  for (const [key, value] of Object.entries(data)) session.set(key as keyof Data, value as never)
  return cookieOf(await manager.commit(session))
}

describe('the synchronous fast path', () => {
  test('a plain write is loaded and committed synchronously, with synchronous store calls only', async () => {
    const { manager, calls, memory } = setup()
    const cookie = await stored(manager)
    calls.length = 0
    const session = manager.loadSync({ cookie })
    expect(session?.get('n')).toBe(0)
    session?.update('n', (n = 0) => n + 1)
    const result = manager.commitSync(session as NonNullable<typeof session>)
    expect(result).toEqual({ setCookie: null, private: true })
    expect(calls).toEqual(['getSync', 'updateSync'])
    expect((await manager.load({ cookie })).get('n')).toBe(1)
    expect(memory).toBeDefined()
  })

  test('a new session and a due touch are committed synchronously too', async () => {
    const { manager, calls, clock } = setup({ touchIntervalMs: MINUTE })
    const fresh = manager.loadSync({})
    fresh?.set('v', 'x')
    const cookie = cookieOf(manager.commitSync(fresh as NonNullable<typeof fresh>))
    expect(calls).toEqual(['createSync'])
    clock.advance(2 * MINUTE)
    calls.length = 0
    const reader = manager.loadSync({ cookie })
    expect(manager.commitSync(reader as NonNullable<typeof reader>)).toEqual({
      setCookie: null,
      private: true,
    })
    expect(calls).toEqual(['getSync', 'touchSync'])
  })

  test('another request wrote the session in between: it declines, writes nothing, and the full path keeps both writes', async () => {
    const { manager, another, calls } = setup()
    const other = another()
    const cookie = await stored(manager)
    const mine = manager.loadSync({ cookie })
    const theirs = await other.load({ cookie })
    theirs.set('v', 'theirs')
    await other.commit(theirs)
    mine?.update('n', (n = 0) => n + 1)
    calls.length = 0
    expect(manager.commitSync(mine as NonNullable<typeof mine>)).toBeNull()
    expect(calls).toEqual(['updateSync'])
    await manager.commit(mine as NonNullable<typeof mine>)
    const after = await manager.load({ cookie })
    expect([after.get('n'), after.get('v')]).toEqual([1, 'theirs'])
  })

  test('another commit on the session in flight in this process: it declines without touching the store', async () => {
    const { manager, calls } = setup()
    const cookie = await stored(manager)
    const first = await manager.load({ cookie })
    const second = manager.loadSync({ cookie })
    first.update('n', (n = 0) => n + 1)
    second?.update('n', (n = 0) => n + 10)
    const inFlight = manager.commit(first)
    calls.length = 0
    expect(manager.commitSync(second as NonNullable<typeof second>)).toBeNull()
    expect(calls).toEqual([])
    await inFlight
    await manager.commit(second as NonNullable<typeof second>)
    expect((await manager.load({ cookie })).get('n')).toBe(11)
  })

  test.each(['login', 'logout', 'regenerate', 'renewal'] as const)(
    'a %s always takes the full path',
    async (kind) => {
      const { manager, calls, clock } = setup({ renewalIntervalMs: 10 * MINUTE })
      const cookie = await stored(manager)
      if (kind === 'renewal') clock.advance(11 * MINUTE)
      const session = manager.loadSync({ cookie })
      if (!session) throw new Error('the session did not load synchronously')
      if (kind === 'login') session.login('alice')
      if (kind === 'logout') session.logout()
      if (kind === 'regenerate') session.regenerate()
      calls.length = 0
      expect(manager.commitSync(session)).toBeNull()
      expect(calls).toEqual([])
      const result = await manager.commit(session)
      expect(kind === 'logout' ? result.setCookie?.startsWith('sid=;') : result.setCookie).toBeTruthy()
    },
  )

  test('loadSync declines a renewed ID in its grace window and an expired session; it refuses unknown and malformed cookies itself', async () => {
    const { manager, clock } = setup({ renewalIntervalMs: 10 * MINUTE })
    const cookie = await stored(manager)
    clock.advance(11 * MINUTE)
    const renewing = manager.loadSync({ cookie })
    const renewed = cookieOf(await manager.commit(renewing as NonNullable<typeof renewing>))
    expect(renewed).not.toBe(cookie)
    // The old ID is a forwarder now: the full path follows it.
    expect(manager.loadSync({ cookie })).toBeNull()
    expect((await manager.load({ cookie })).get('n')).toBe(0)
    // Expired by this manager's (shorter) idle timeout while the store still holds it: the full path ends it.
    const strict = createSessionManager<Data>({
      store: manager.options.store,
      clock: manager.options.clock,
      keys: KEYS,
      cookie: { secure: false },
      idleTimeoutMs: 5 * MINUTE,
      touchIntervalMs: MINUTE,
    })
    clock.advance(6 * MINUTE)
    expect(strict.loadSync({ cookie: renewed })).toBeNull()
    expect((await strict.load({ cookie: renewed })).isNew).toBe(true)
    expect((await manager.load({ cookie: renewed })).isNew).toBe(true)
    expect(manager.loadSync({ cookie: 'sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' })?.isNew).toBe(true)
    expect(manager.loadSync({ cookie: 'sid=../../etc/passwd' })?.isNew).toBe(true)
  })

  test('a store failing synchronously throws a StoreError naming the store and operation', async () => {
    const { manager, memory } = setup()
    const cookie = await stored(manager)
    await memory.close()
    expect(() => manager.loadSync({ cookie })).toThrow(StoreError)
    expect(() => manager.loadSync({ cookie })).toThrow(expect.objectContaining({ operation: 'get' }))
  })

  test('over HTTP, a read and a write on MemoryStore make synchronous store calls only', async () => {
    const { manager, calls } = setup()
    const server = await serve(manager, (req, res, session) => {
      if (req.url === '/w') session.update('n', (n = 0) => n + 1)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(String(session.get('n') ?? 'none'))
    })
    try {
      const cookie = await stored(manager)
      calls.length = 0
      const write = await fetch(`${server.url}/w`, { headers: { cookie } })
      expect(await write.text()).toBe('1')
      expect(write.headers.get('cache-control')).toBe('no-store')
      const read = await fetch(`${server.url}/r`, { headers: { cookie } })
      expect(await read.text()).toBe('1')
      expect(calls).toEqual(['getSync', 'updateSync', 'getSync'])
    } finally {
      await server.close()
    }
  })
})

describe('parsed contents reused between requests', () => {
  test('requests get their own copies: one request changing its data never shows in another', async () => {
    const { manager } = setup()
    const cookie = await stored(manager, { n: 1, v: 'a' })
    const first = await manager.load({ cookie })
    const second = await manager.load({ cookie })
    first.set('n', 2)
    expect(second.get('n')).toBe(1)
    // An object value is parsed afresh for each request: mutating it in place (not saved) shows nowhere else.
    const withObject = await manager.load({ cookie })
    withObject.set('v', { list: [1] } as never)
    await manager.commit(withObject)
    const a = await manager.load({ cookie })
    const b = await manager.load({ cookie })
    ;(a.get('v') as unknown as { list: number[] }).list.push(2)
    expect(b.get('v')).toEqual({ list: [1] })
    expect((await manager.load({ cookie })).get('v')).toEqual({ list: [1] })
  })

  test('values read back as JSON gives them, whether or not the contents were reused', async () => {
    const { manager, another } = setup()
    const cookie = await stored(manager, { n: 0 })
    const writer = await manager.load({ cookie })
    writer.set('n', Number.NaN)
    writer.set('v', -0 as never)
    await manager.commit(writer)
    // This manager remembers what it wrote; the other one opens the payload from the store.
    for (const reader of [await manager.load({ cookie }), await another().load({ cookie })]) {
      expect(reader.get('n')).toBeNull()
      expect(Object.is(reader.get('v'), 0)).toBe(true)
    }
  })
})

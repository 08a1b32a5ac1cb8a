import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, describe, expect, test } from 'vitest'
import type { SessionHandler } from '../src/adapters/node.js'
import { withSessions } from '../src/adapters/node.js'
import { generateId } from '../src/core/id.js'
import type { SessionStore } from '../src/core/store.js'
import { createSessionManager, generateKey, ManualClock, MemoryStore, StoreError } from '../src/index.js'
import { Client } from './support/http.js'

type Data = Record<string, unknown>

/** A served handler: its adapter's promises (one per request), the errors `onError` heard, the sockets. */
interface Served {
  readonly errors: unknown[]
  readonly adapters: Promise<void>[]
  readonly sockets: Socket[]
  client(): Client
}

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/**
 * Serves `handler` with sessions on a loopback port, keeping each request's adapter promise. The
 * store is a MemoryStore on the manager's clock, seen through `wrap` when given.
 */
async function start(
  handler: SessionHandler<Data>,
  wrap: (store: MemoryStore) => SessionStore = (store) => store,
): Promise<Served> {
  const clock = new ManualClock()
  const memory = new MemoryStore({ clock })
  const manager = createSessionManager<Data>({
    store: wrap(memory),
    keys: [generateKey()],
    clock,
    cookie: { secure: false },
  })
  const errors: unknown[] = []
  const adapters: Promise<void>[] = []
  const sockets: Socket[] = []
  const adapter = withSessions(manager, handler, { onError: (error) => errors.push(error) })
  const server = createServer((req, res) => {
    sockets.push(req.socket)
    adapters.push(adapter(req, res))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  cleanups.push(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await manager.close()
    await memory.close()
  })
  return { errors, adapters, sockets, client: () => new Client(`http://127.0.0.1:${port}`) }
}

/** A promise and the function that resolves it. */
function gate(): { promise: Promise<void>; open(): void } {
  let open = (): void => {}
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open: () => open() }
}

/** A store wrapper whose `update` waits, once armed, until released: a commit held in flight. */
function slowUpdates() {
  const started = gate()
  const release = gate()
  const control = { armed: false, started: started.promise, release: release.open }
  const wrap = (store: MemoryStore): SessionStore =>
    new Proxy(store, {
      get(target, property) {
        // An asynchronous store: no synchronous fast path around the held update.
        if (typeof property === 'string' && property.endsWith('Sync')) return undefined
        const member = Reflect.get(target, property, target)
        if (typeof member !== 'function') return member
        if (property !== 'update') return member.bind(target)
        return async (...args: unknown[]) => {
          if (control.armed) {
            started.open()
            await release.promise
          }
          return member.apply(target, args)
        }
      },
    })
  return { wrap, control }
}

/** Reads the whole response: its status and body, or `aborted` when the connection broke first. */
async function outcome(response: Promise<Response>): Promise<string> {
  try {
    const answered = await response
    return `${answered.status} ${await answered.text()}`
  } catch {
    return 'aborted'
  }
}

/** Resolves once the current adapter calls have all settled; rejects if one of them rejected. */
async function settled(served: Served): Promise<void> {
  await Promise.all(served.adapters)
}

/** A route that signs the client in, so the next requests carry a stored session. */
async function signIn(served: Served): Promise<Client> {
  const client = served.client()
  const response = await client.request('/login')
  expect(response.status).toBe(200)
  expect(client.cookie).toBeDefined()
  return client
}

describe('writeHead with a header object and nothing set before (one merged object for node)', () => {
  test.each([
    ['a login (new cookie)', '/login', true],
    ['a read (private, no cookie)', '/read', false],
  ] as const)(
    '%s: every header of the handler arrives, ours win where they must',
    async (_, path, setsCookie) => {
      const served = await start((req, res, session) => {
        if (req.url === '/login') session.login('alice')
        res.writeHead(200, 'Fine', {
          'set-cookie': ['theme=dark'],
          'CACHE-CONTROL': 'public, max-age=600',
          vary: 'Accept-Encoding',
          'X-Tag': 'kept',
          'content-type': 'text/plain',
        })
        res.end(String(session.userId))
      })
      const client = await signIn(served)
      const response = await client.request(path)
      expect(response.status).toBe(200)
      expect(response.statusText).toBe('Fine')
      const cookies = response.headers.getSetCookie().map((cookie) => cookie.split('=')[0])
      expect(cookies).toEqual(setsCookie ? ['theme', 'sid'] : ['theme'])
      expect(response.headers.get('cache-control')).toBe('no-store')
      expect(response.headers.get('vary')).toBe('Accept-Encoding, Cookie')
      expect(response.headers.get('x-tag')).toBe('kept')
      expect(response.headers.get('content-type')).toBe('text/plain')
      expect(await response.text()).toBe('alice')
      await settled(served)
      expect(served.errors).toEqual([])
    },
  )

  test('a Vary of * or one that names Cookie already is left as it is', async () => {
    const served = await start((req, res, session) => {
      if (req.url === '/login') session.login('bob')
      res.writeHead(200, { Vary: req.url === '/star' ? '*' : 'cookie, Accept' })
      res.end('ok')
    })
    const client = await signIn(served)
    expect((await client.request('/star')).headers.get('vary')).toBe('*')
    expect((await client.request('/named')).headers.get('vary')).toBe('cookie, Accept')
  })
})

describe('writeHead with a raw header array', () => {
  const array = [
    'Set-Cookie',
    'theme=dark',
    'Set-Cookie',
    'lang=en',
    'Cache-Control',
    'public, max-age=600',
    'Vary',
    'Accept-Encoding',
    'X-Tag',
    'a',
    'X-Tag',
    'b',
    'Content-Type',
    'text/plain',
  ]
  const object: OutgoingHttpHeaders = {
    'Set-Cookie': ['theme=dark', 'lang=en'],
    'Cache-Control': 'public, max-age=600',
    Vary: 'Accept-Encoding',
    'X-Tag': ['a', 'b'],
    'Content-Type': 'text/plain',
  }
  const cases = [
    ['array', 'none', array],
    ['array', 'Made', array],
    ['object', 'none', object],
    ['object', 'Made', object],
  ] as const

  test.each(cases)(
    '%s form, status message %s: the session cookie and private headers survive a login',
    async (_, message, headers) => {
      const served = await start((req, res, session) => {
        if (req.url === '/whoami') {
          res.end(String(session.userId))
          return
        }
        session.login('alice')
        res.setHeader('X-Pre', 'kept')
        res.setHeader('Set-Cookie', 'pre=replaced-by-writeHead')
        if (message === 'none') res.writeHead(201, headers as OutgoingHttpHeaders)
        else res.writeHead(201, message, headers as OutgoingHttpHeaders)
        res.end('ok')
      })
      const client = served.client()
      const response = await client.request('/login')
      expect(response.status).toBe(201)
      expect(response.statusText).toBe(message === 'none' ? 'Created' : message)
      expect(await response.text()).toBe('ok')
      const cookies = response.headers.getSetCookie().map((cookie) => cookie.split(';')[0]?.split('=')[0])
      expect(cookies).toEqual(['theme', 'lang', 'sid'])
      expect(response.headers.getSetCookie().slice(0, 2)).toEqual(['theme=dark', 'lang=en'])
      expect(response.headers.get('cache-control')).toBe('no-store')
      expect(response.headers.get('vary')).toBe('Accept-Encoding, Cookie')
      expect(response.headers.get('x-tag')).toBe('a, b')
      expect(response.headers.get('x-pre')).toBe('kept')
      expect(response.headers.get('content-type')).toBe('text/plain')
      expect(client.cookie).toBeDefined()
      expect(await outcome(client.request('/whoami'))).toBe('200 alice')
      await settled(served)
      expect(served.errors).toEqual([])
    },
  )

  test('on a quiet request (synchronous commit) no-store and Vary: Cookie still win over the array', async () => {
    const served = await start((req, res, session) => {
      if (req.url === '/login') {
        session.login('alice')
        res.end()
        return
      }
      res.writeHead(200, ['Cache-Control', 'public, max-age=600', 'Set-Cookie', 'theme=dark'])
      res.end(String(session.userId))
    })
    const client = await signIn(served)
    const response = await client.request('/quiet')
    expect(await response.text()).toBe('alice')
    expect(response.headers.getSetCookie()).toEqual(['theme=dark'])
    expect(response.headers.get('cache-control')).toBe('no-store')
    expect(response.headers.get('vary')).toBe('Cookie')
    expect(client.cookie).toBeDefined()
    await settled(served)
    expect(served.errors).toEqual([])
  })

  test('an odd-length array throws node’s own error to a handler whose commit answered synchronously', async () => {
    const caught: unknown[] = []
    const served = await start((req, res, session) => {
      if (req.url === '/login') {
        session.login('alice')
        res.end()
        return
      }
      try {
        res.writeHead(200, ['X-Odd'])
      } catch (error) {
        caught.push(error)
      }
      res.end('recovered')
    })
    const client = await signIn(served)
    const response = await client.request('/quiet')
    expect(`${response.status} ${await response.text()}`).toBe('200 recovered')
    expect(response.headers.get('cache-control')).toBe('no-store')
    expect(caught).toHaveLength(1)
    expect((caught[0] as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE')
    await settled(served)
    expect(served.errors).toEqual([])
  })
})

describe('a held call that throws when replayed', () => {
  const cases: [string, (res: ServerResponse) => void, string][] = [
    [
      'an odd-length header array',
      (res) => res.writeHead(200, ['X-Odd'] as unknown as string[]),
      'ERR_INVALID_ARG_VALUE',
    ],
    [
      'an odd-length array after a status message',
      (res) => res.writeHead(200, 'OK', ['X-Odd'] as unknown as string[]),
      'ERR_INVALID_ARG_VALUE',
    ],
    ['an invalid status code', (res) => res.writeHead(1000), 'ERR_HTTP_INVALID_STATUS_CODE'],
  ]

  test.each(cases)(
    '%s fails the response (500) and reaches onError, not an unhandled rejection',
    async (_, writeHead, code) => {
      const served = await start((_req, res, session) => {
        session.set('k', 1)
        writeHead(res)
        res.end('never sent')
      })
      expect(await outcome(served.client().request('/'))).toBe('500 Internal server error.\n')
      await settled(served)
      expect(served.errors).toHaveLength(1)
      expect((served.errors[0] as { code?: string }).code).toBe(code)
    },
  )

  test('a synchronous commit throws the error into the handler, and a handler that lets it go gets a 500', async () => {
    const served = await start((req, res, session) => {
      if (req.url === '/login') {
        session.login('alice')
        res.end()
        return
      }
      res.writeHead(200, ['X-Odd'] as unknown as string[])
      res.end('never sent')
    })
    const client = await signIn(served)
    expect(await outcome(client.request('/quiet'))).toBe('500 Internal server error.\n')
    await settled(served)
    expect(served.errors).toHaveLength(1)
    expect((served.errors[0] as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE')
  })
})

describe('a handler that fails after its response started', () => {
  /** Signs in, then arms the slow store: the next commit waits in `update` until released. */
  async function heldCommit(
    handler: (req: IncomingMessage, res: ServerResponse, thrown: () => void) => Promise<void>,
  ) {
    const { wrap, control } = slowUpdates()
    const thrown = gate()
    const boom = new Error('handler failed late')
    const served = await start(async (req, res, session) => {
      if (req.url === '/login') {
        session.login('alice')
        res.end()
        return
      }
      session.set('late', true)
      await handler(req, res, thrown.open)
      throw boom
    }, wrap)
    const client = await signIn(served)
    control.armed = true
    return { served, client, control, thrown: thrown.promise, boom }
  }

  test('throwing while its output is held (commit in flight) with the body unfinished aborts the response', async () => {
    const { served, client, control, thrown, boom } = await heldCommit(async (_req, res, signal) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.write('partial')
      await control.started
      signal()
    })
    const answer = outcome(client.request('/late'))
    await thrown
    // The handler has failed and onError heard it, while the commit still waits in the store.
    await new Promise((resolve) => setImmediate(resolve))
    expect(served.errors).toEqual([boom])
    control.release()
    expect(await answer).toBe('aborted')
    await settled(served)
    expect(served.errors).toEqual([boom])
    expect(served.sockets.at(-1)?.destroyed).toBe(true)
  })

  test('throwing while its output is held, after end(), lets the whole response out and nothing more', async () => {
    const { served, client, control, thrown, boom } = await heldCommit(async (_req, res, signal) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('complete')
      await control.started
      signal()
    })
    const answer = outcome(client.request('/late'))
    await thrown
    control.release()
    expect(await answer).toBe('200 complete')
    await settled(served)
    expect(served.errors).toEqual([boom])
    expect(served.sockets.at(-1)?.destroyed).toBe(false)
  })

  test('throwing after its output flowed with the body unfinished aborts the response', async () => {
    const flowed = gate()
    const boom = new Error('handler failed mid-stream')
    const served = await start(async (_req, res, session) => {
      session.set('streamed', true)
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.write('partial')
      await flowed.promise
      throw boom
    })
    const response = await served.client().request('/stream')
    expect(response.status).toBe(200)
    expect(response.headers.get('cache-control')).toBe('no-store')
    flowed.open()
    expect(await outcome(Promise.resolve(response))).toBe('aborted')
    await settled(served)
    expect(served.errors).toEqual([boom])
    expect(served.sockets.at(-1)?.destroyed).toBe(true)
  })

  test('throwing after end() once output flowed leaves the finished response and its connection alone', async () => {
    const boom = new Error('handler failed after end')
    const served = await start(async (_req, res, session) => {
      session.set('done', true)
      res.end('done')
      await new Promise<void>((resolve) => res.once('finish', resolve))
      throw boom
    })
    expect(await outcome(served.client().request('/done'))).toBe('200 done')
    await settled(served)
    expect(served.errors).toEqual([boom])
    expect(served.sockets.at(-1)?.destroyed).toBe(false)
  })
})

describe('503 decided by the error code', () => {
  test('a store error from another copy of latchkey (right code, other class) answers 503', async () => {
    const foreign = Object.assign(new Error('MemoryStore.get failed: connection refused'), {
      code: 'ERR_LATCHKEY_STORE',
    })
    expect(foreign).not.toBeInstanceOf(StoreError)
    const failing = (store: MemoryStore): SessionStore =>
      new Proxy(store, {
        get(target, property) {
          if (typeof property === 'string' && property.endsWith('Sync')) return undefined
          if (property === 'get') return () => Promise.reject(foreign)
          const member = Reflect.get(target, property, target)
          return typeof member === 'function' ? member.bind(target) : member
        },
      })
    let ran = false
    const served = await start((_req, res) => {
      ran = true
      res.end('handler ran')
    }, failing)
    const client = served.client()
    client.cookie = generateId()
    const response = await client.request('/')
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('1')
    expect(response.headers.get('cache-control')).toBe('no-store')
    expect(await response.text()).toMatch(/^Service unavailable/)
    expect(ran).toBe(false)
    await settled(served)
    expect(served.errors).toEqual([foreign])
  })
})

describe('every store failure is a 503, whatever the store rejects with', () => {
  /** A store whose `operation` rejects with a plain Error once `armed` says so. */
  const failingOn =
    (operation: string, armed: { on: boolean }, cause: Error) =>
    (store: MemoryStore): SessionStore =>
      new Proxy(store, {
        get(target, property) {
          if (typeof property === 'string' && property.endsWith('Sync')) return undefined
          const member = Reflect.get(target, property, target)
          if (property === operation && armed.on) return () => Promise.reject(cause)
          return typeof member === 'function' && property !== 'constructor' ? member.bind(target) : member
        },
      })

  test.each(['get', 'create', 'update', 'destroy'])('a plain Error from %s', async (operation) => {
    const armed = { on: false }
    const cause = new Error(`${operation}: connection reset`)
    const served = await start(
      (req, res, session) => {
        if (req.url === '/write') session.set('n', 1)
        if (req.url === '/logout') session.logout()
        res.end('ok')
      },
      failingOn(operation, armed, cause),
    )
    const client = served.client()
    // A stored session first (create), then one request that needs the failing operation.
    expect((await client.request('/write')).status).toBe(200)
    armed.on = true
    const path = operation === 'create' ? '/write' : operation === 'destroy' ? '/logout' : '/write'
    if (operation === 'create') client.cookie = undefined
    const response = await client.request(path)
    expect(response.status).toBe(503)
    expect(await response.text()).toMatch(/^Service unavailable/)
    await settled(served)
    expect(served.errors).toHaveLength(1)
    expect(served.errors[0]).toBeInstanceOf(StoreError)
    expect(served.errors[0]).toMatchObject({ store: 'MemoryStore', cause })
  })
})

describe('a commit that fails synchronously', () => {
  test('the 503 goes out and the handler’s later output is dropped, not thrown as write-after-end', async () => {
    const armed = { on: false }
    const failing = (store: MemoryStore): SessionStore =>
      new Proxy(store, {
        get(target, property) {
          const member = Reflect.get(target, property, target)
          if (property === 'updateSync' && armed.on) {
            return () => {
              throw new Error('disk I/O error')
            }
          }
          return typeof member === 'function' && property !== 'constructor' ? member.bind(target) : member
        },
      })
    const served = await start((_req, res, session) => {
      session.set('n', 1)
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('part one')
      res.end('part two')
    }, failing)
    const client = served.client()
    expect((await client.request('/')).status).toBe(200)
    armed.on = true
    const response = await client.request('/')
    expect(response.status).toBe(503)
    expect(await response.text()).toMatch(/^Service unavailable/)
    await settled(served)
    expect(served.errors).toHaveLength(1)
    expect(served.errors[0]).toMatchObject({ code: 'ERR_LATCHKEY_STORE', operation: 'update' })
  })
})

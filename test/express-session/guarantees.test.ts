// latchkey's guarantees on top of express-session's API (docs/express-session.md): concurrent requests
// on one session keep each other's changes to different keys, a destroyed session is not written back
// by a request that loaded it earlier, a store error reaches next(err), regenerate keeps nothing unless
// asked, and a missing secret is refused at startup.
import type { AddressInfo } from 'node:net'
import express, { type ErrorRequestHandler } from 'express'
import { afterEach, describe, expect, test, vi } from 'vitest'
import session, {
  MemoryStore,
  type SessionData,
  type SessionRequest,
} from '../../src/express-session/index.js'

const SECRET = 'keyboard cat'
const servers: Array<{ close(): void }> = []

afterEach(() => {
  for (const server of servers.splice(0)) server.close()
})

type Handler = (req: SessionRequest & express.Request, res: express.Response) => void | Promise<void>

/** An app with the drop-in on `store` and the given routes; resolves its base URL. */
async function start(store: MemoryStore, routes: Record<string, Handler>): Promise<string> {
  const app = express()
  app.use(session({ secret: SECRET, store, resave: false, saveUninitialized: false }))
  for (const [path, handler] of Object.entries(routes)) {
    app.get(path, (req, res, next) => {
      Promise.resolve(handler(req as SessionRequest & express.Request, res)).catch(next)
    })
  }
  const onError: ErrorRequestHandler = (error: Error, _req, res, _next) => {
    res.status(500).send(`error: ${error.message}`)
  }
  app.use(onError)
  const server = app.listen(0, '127.0.0.1')
  servers.push(server)
  await new Promise((resolve) => server.once('listening', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

function stored(store: MemoryStore, sid: string): Promise<SessionData | null | undefined> {
  return new Promise((resolve, reject) =>
    store.get(sid, (error, data) => (error ? reject(error) : resolve(data))),
  )
}

/** A promise and its resolver: a gate a handler waits at. */
function gate(): { opened: Promise<void>; open(): void } {
  let open = (): void => {}
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { opened, open }
}

async function signIn(base: string): Promise<{ cookie: string; sid: string }> {
  const response = await fetch(`${base}/login`)
  const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { cookie, sid: await response.text() }
}

describe('latchkey/express-session guarantees', () => {
  test('two concurrent requests changing different keys both keep their change', async () => {
    const store = new MemoryStore()
    const slow = gate()
    const base = await start(store, {
      '/login': (req, res) => {
        req.session!.user = 'ada'
        res.send(req.sessionID)
      },
      '/a': async (req, res) => {
        req.session!.a = 1
        await slow.opened
        res.send('a')
      },
      '/b': (req, res) => {
        req.session!.b = 2
        res.send('b')
      },
    })
    const { cookie, sid } = await signIn(base)
    const a = fetch(`${base}/a`, { headers: { cookie } })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await fetch(`${base}/b`, { headers: { cookie } })).status).toBe(200)
    slow.open()
    expect((await a).status).toBe(200)
    expect(await stored(store, sid)).toMatchObject({ user: 'ada', a: 1, b: 2 })
  })

  test('a session destroyed meanwhile is not written back by a request that loaded it earlier', async () => {
    const store = new MemoryStore()
    const slow = gate()
    const base = await start(store, {
      '/login': (req, res) => {
        req.session!.user = 'ada'
        res.send(req.sessionID)
      },
      '/slow': async (req, res) => {
        await slow.opened
        req.session!.cart = ['book']
        res.send('added')
      },
      '/logout': (req, res) => {
        req.session!.destroy(() => res.send('bye'))
      },
    })
    const { cookie, sid } = await signIn(base)
    const late = fetch(`${base}/slow`, { headers: { cookie } })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(await (await fetch(`${base}/logout`, { headers: { cookie } })).text()).toBe('bye')
    slow.open()
    expect((await late).status).toBe(200)
    expect(await stored(store, sid)).toBeUndefined()
  })

  test('a store error while loading goes to next(err): no request runs without req.session', async () => {
    const store = new MemoryStore()
    const base = await start(store, {
      '/login': (req, res) => {
        req.session!.user = 'ada'
        res.send(req.sessionID)
      },
      '/': (req, res) => {
        res.send(typeof req.session)
      },
    })
    const { cookie } = await signIn(base)
    store.get = (_sid, callback) => callback(new Error('connection refused'))
    const response = await fetch(base, { headers: { cookie } })
    expect(response.status).toBe(500)
    expect(await response.text()).toBe('error: connection refused')
  })

  test('a disconnected store answers 503 through next(err) until it reconnects', async () => {
    const store = new MemoryStore()
    const base = await start(store, { '/': (req, res) => void res.send(typeof req.session) })
    store.emit('disconnect')
    const down = await fetch(base)
    expect(down.status).toBe(500)
    expect(await down.text()).toMatch(/session store is disconnected/)
    store.emit('connect')
    expect(await (await fetch(base)).text()).toBe('object')
  })

  test('regenerate keeps nothing, unless called with { keepData: true }', async () => {
    const store = new MemoryStore()
    const base = await start(store, {
      '/login': (req, res) => {
        req.session!.user = 'ada'
        res.send(req.sessionID)
      },
      '/plain': (req, res) => {
        req.session!.regenerate(() => res.json({ id: req.sessionID, user: req.session!.user ?? null }))
      },
      '/keep': (req, res) => {
        req.session!.regenerate({ keepData: true }, () =>
          res.json({ id: req.sessionID, user: req.session!.user ?? null }),
        )
      },
    })
    const first = await signIn(base)
    const plain = (await (await fetch(`${base}/plain`, { headers: { cookie: first.cookie } })).json()) as {
      id: string
      user: string | null
    }
    expect(plain.user).toBeNull()
    expect(plain.id).not.toBe(first.sid)
    const second = await signIn(base)
    const kept = (await (await fetch(`${base}/keep`, { headers: { cookie: second.cookie } })).json()) as {
      id: string
      user: string | null
    }
    expect(kept).toMatchObject({ user: 'ada' })
    expect(kept.id).not.toBe(second.sid)
    expect(await stored(store, second.sid)).toBeUndefined()
    expect(await stored(store, kept.id)).toMatchObject({ user: 'ada' })
  })

  test('a missing secret is refused at startup, with what to pass', () => {
    expect(() => session({} as Parameters<typeof session>[0])).toThrow(/`secret` option is required/)
  })
})

describe('Cookie', () => {
  test('originalMaxAge is the maxAge asked for, even when the clock ticks while the cookie is made', () => {
    let now = 1_700_000_000_000
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => now++)
    try {
      const cookie = new session.Cookie({ maxAge: 60_000 })
      expect(cookie.originalMaxAge).toBe(60_000)
      cookie.maxAge = 5_000
      expect(cookie.originalMaxAge).toBe(5_000)
    } finally {
      spy.mockRestore()
    }
  })
})

describe('options', () => {
  test('an option the drop-in does not know is a ConfigError naming the nearest one, on any store', () => {
    expect(() => session({ secret: 'x', saveUnintialized: false } as never)).toThrow(
      expect.objectContaining({ code: 'ERR_LATCHKEY_CONFIG', option: 'saveUnintialized' }),
    )
    expect(() => session({ secret: 'x', saveUnintialized: false } as never)).toThrow(/saveUninitialized/)
    expect(() =>
      session({ secret: 'x', store: new MemoryStore(), resave: false, rolling: true }),
    ).not.toThrow()
  })
})

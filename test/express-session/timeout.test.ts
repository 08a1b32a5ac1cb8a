// The optional absolute timeout (`absoluteTimeoutMs`, latchkey's addition, off by default): a session
// ends that long after it began, however active; a session loaded past it is destroyed and the request
// gets a new one; regenerate (sign-in) starts the clock afresh; a session written without the key (by
// express-session, or before the option was on) starts its window at its first load, and
// express-session keeps the key when it saves during a rolling deploy. The clock is faked (Date only;
// the timers and sockets are real).
import type { AddressInfo } from 'node:net'
import express, { type ErrorRequestHandler } from 'express'
import realSession from 'express-session'
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest'
import session, { MemoryStore, type SessionOptions, STARTED_AT } from '../../src/express-session/index.js'

const SECRET = 'keyboard cat'
const HOUR = 3_600_000
const servers: Array<{ close(): void }> = []

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(new Date('2026-01-01T00:00:00Z'))
})

afterEach(() => {
  vi.useRealTimers()
  for (const server of servers.splice(0)) server.close()
})

type Data = Record<string, unknown>
interface OldSession {
  regenerate(how: { keepData: boolean }, callback: (error?: unknown) => void): void
}

/** An app on `middleware` with /login, /me (user and ID) and /relogin (regenerate, keeping data). */
async function app(middleware: unknown): Promise<string> {
  const data = (req: express.Request): Data => req.session as unknown as Data
  const onError: ErrorRequestHandler = (error: Error, _req, res, _next) => {
    res.status(500).send(`error: ${error.message}`)
  }
  const server = express()
    .use(middleware as express.RequestHandler)
    .get('/login', (req, res) => {
      data(req).user = req.query.name
      res.send(req.sessionID)
    })
    .get('/me', (req, res) => {
      res.json({ user: data(req).user ?? null, id: req.sessionID })
    })
    .get('/remember', (req, res) => {
      // A per-request lifetime, as "remember me" sets it.
      ;(req.session as unknown as { cookie: { maxAge: number } }).cookie.maxAge = Number(req.query.ms)
      data(req).remember = true
      res.send(req.sessionID)
    })
    .get('/remember-now', (req, res, next) => {
      // The same, saved by the route itself: the store has it before the response is written.
      const sess = req.session as unknown as {
        cookie: { maxAge: number }
        save(cb: (e?: unknown) => void): void
      }
      sess.cookie.maxAge = Number(req.query.ms)
      data(req).remember = true
      sess.save((error) => {
        if (error) return next(error)
        ;(req.sessionStore as unknown as MemoryStore).get(req.sessionID, (getError, record) =>
          getError ? next(getError) : res.json(record),
        )
      })
    })
    .get('/relogin', (req, res, next) => {
      ;(req.session as unknown as OldSession).regenerate({ keepData: true }, (error) =>
        error ? next(error) : res.send(req.sessionID),
      )
    })
    .use(onError)
    .listen(0, '127.0.0.1')
  servers.push(server)
  await new Promise((resolve) => server.once('listening', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const options = (store: unknown, extra: Partial<SessionOptions> = {}): SessionOptions => ({
  secret: SECRET,
  store: store as MemoryStore,
  resave: false,
  saveUninitialized: false,
  rolling: true,
  cookie: { maxAge: 30 * 24 * HOUR },
  ...extra,
})

async function signIn(base: string): Promise<{ cookie: string; sid: string }> {
  const response = await fetch(`${base}/login?name=ada`)
  const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { cookie, sid: await response.text() }
}

async function me(base: string, cookie: string): Promise<{ user: string | null; id: string }> {
  const response = await fetch(`${base}/me`, { headers: { cookie } })
  expect(response.status).toBe(200)
  return (await response.json()) as { user: string | null; id: string }
}

/** The Set-Cookie of `response`: when it expires (ms since the epoch; null without Expires), and its Max-Age. */
function sentCookie(response: Response): { expires: number | null; maxAge: string | null; pair: string } {
  const header = response.headers.get('set-cookie')
  expect(header).not.toBeNull()
  const expires = /;\s*Expires=([^;]+)/i.exec(header as string)?.[1]
  return {
    expires: expires === undefined ? null : new Date(expires).valueOf(),
    maxAge: /;\s*Max-Age=([^;]+)/i.exec(header as string)?.[1] ?? null,
    pair: (header as string).split(';')[0] as string,
  }
}

/** The `expires` of a stored record's cookie, in ms since the epoch. */
const storedExpiry = (record: Data | null | undefined): number =>
  new Date((record?.cookie as { expires?: string } | undefined)?.expires ?? Number.NaN).valueOf()

/** Either MemoryStore (the drop-in's or express-session's), as each types its sessions. */
type AnyMemoryStore = MemoryStore | realSession.MemoryStore

function stored(store: AnyMemoryStore, sid: string): Promise<Data | null | undefined> {
  return new Promise((resolve, reject) =>
    (store as MemoryStore).get(sid, (error, data) =>
      error ? reject(error) : resolve(data as Data | null | undefined),
    ),
  )
}

const later = (ms: number) => vi.setSystemTime(Date.now() + ms)

describe('absoluteTimeoutMs', () => {
  test('off by default: nothing added to the record, an active session lives on', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store)))
    const { cookie, sid } = await signIn(base)
    expect(Object.keys((await stored(store, sid)) ?? {})).toEqual(['cookie', 'user'])
    for (let day = 0; day < 5; day++) {
      later(24 * HOUR)
      expect((await me(base, cookie)).user).toBe('ada')
    }
  })

  test('a session loaded past it is destroyed, and the request gets a new one', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR })))
    const { cookie, sid } = await signIn(base)
    expect((await stored(store, sid))?.[STARTED_AT]).toBe(Date.now())
    for (let hour = 0; hour < 7; hour++) {
      later(HOUR)
      expect(await me(base, cookie)).toEqual({ user: 'ada', id: sid })
    }
    later(HOUR)
    const after = await me(base, cookie)
    expect(after.user).toBeNull()
    expect(after.id).not.toBe(sid)
    expect(await stored(store, sid)).toBeUndefined()
  })

  test('regenerate (a sign-in) starts the clock afresh, even with keepData', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR })))
    const first = await signIn(base)
    later(7 * HOUR)
    const response = await fetch(`${base}/relogin`, { headers: { cookie: first.cookie } })
    const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
    const sid = await response.text()
    expect(sid).not.toBe(first.sid)
    expect((await stored(store, sid))?.[STARTED_AT]).toBe(Date.now())
    later(7 * HOUR)
    expect(await me(base, cookie)).toEqual({ user: 'ada', id: sid })
    later(HOUR)
    expect((await me(base, cookie)).user).toBeNull()
  })

  test('a record with a key that is not a time is past it', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR })))
    const { cookie, sid } = await signIn(base)
    const record = (await stored(store, sid)) as Data
    await new Promise((resolve) => store.set(sid, { ...record, [STARTED_AT]: 'soon' } as never, resolve))
    expect((await me(base, cookie)).user).toBeNull()
    expect(await stored(store, sid)).toBeUndefined()
  })

  test('a session written by express-session starts its window at its first load, and express-session keeps the key', async () => {
    // Two versions of an app in one process: one table of sessions, each app its own MemoryStore.
    const sessions = Object.create(null) as Record<string, string>
    const memory = () => Object.assign(new realSession.MemoryStore(), { sessions })
    const old = await app(realSession(options(memory()) as unknown as realSession.SessionOptions))
    const base = await app(session(options(memory(), { absoluteTimeoutMs: 8 * HOUR })))
    const { cookie, sid } = await signIn(old)
    later(100 * HOUR)
    const firstLoad = Date.now()
    expect((await me(base, cookie)).user).toBe('ada')
    expect((await stored(memory(), sid))?.[STARTED_AT]).toBe(firstLoad)
    later(4 * HOUR)
    expect((await me(old, cookie)).user).toBe('ada')
    await fetch(`${old}/login?name=ada`, { headers: { cookie } })
    expect((await stored(memory(), sid))?.[STARTED_AT]).toBe(firstLoad)
    later(4 * HOUR)
    expect((await me(base, cookie)).user).toBeNull()
    expect(await stored(memory(), sid)).toBeUndefined()
  })

  test('the record key is on the factory too (for require())', () => {
    expect(session.STARTED_AT).toBe(STARTED_AT)
    expect(STARTED_AT).toBe('__latchkeyStartedAt')
  })

  test('refused at startup unless a positive number of milliseconds', () => {
    for (const bad of [0, -1, Number.NaN, '8h']) {
      expect(() => session(options(undefined, { absoluteTimeoutMs: bad as number }))).toThrow(
        /absoluteTimeoutMs option must be a positive number/,
      )
    }
  })
})

describe('absoluteTimeoutMs: the cookie never outlives the deadline', () => {
  test("a new session's cookie expires at the deadline, not after its maxAge (in the store too)", async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR })))
    const started = Date.now()
    const response = await fetch(`${base}/login?name=ada`)
    const sid = await response.text()
    const sent = sentCookie(response)
    expect(sent.expires).toBe(started + 8 * HOUR)
    expect(sent.maxAge).toBeNull()
    const record = await stored(store, sid)
    expect(storedExpiry(record)).toBe(started + 8 * HOUR)
    // The configured lifetime is kept: the next touch starts from it, and is capped again.
    expect((record?.cookie as { originalMaxAge?: number } | undefined)?.originalMaxAge).toBe(30 * 24 * HOUR)
  })

  test('with rolling, each request moves the cookie on, but never past the deadline', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR, cookie: { maxAge: HOUR } })))
    const started = Date.now()
    const { cookie, sid } = await signIn(base)
    for (let step = 1; step <= 15; step++) {
      later(HOUR / 2)
      const response = await fetch(`${base}/me`, { headers: { cookie } })
      expect(response.status).toBe(200)
      const sent = sentCookie(response)
      // Rolling: an hour from now, until the deadline is nearer than that.
      expect(sent.expires).toBe(Math.min(Date.now() + HOUR, started + 8 * HOUR))
      expect(storedExpiry(await stored(store, sid))).toBe(Math.min(Date.now() + HOUR, started + 8 * HOUR))
    }
  })

  test('a per-request req.session.cookie.maxAge is capped too', async () => {
    const store = new MemoryStore()
    const base = await app(session(options(store, { absoluteTimeoutMs: 8 * HOUR, rolling: false })))
    const started = Date.now()
    const { cookie, sid } = await signIn(base)
    later(2 * HOUR)
    const response = await fetch(`${base}/remember?ms=${365 * 24 * HOUR}`, { headers: { cookie } })
    expect(await response.text()).toBe(sid)
    expect(sentCookie(response).expires).toBe(started + 8 * HOUR)
    const record = await stored(store, sid)
    expect(record?.remember).toBe(true)
    expect(storedExpiry(record)).toBe(started + 8 * HOUR)
    // Saved by the route before the response: the store never holds the longer expiry.
    const saved = await fetch(`${base}/remember-now?ms=${365 * 24 * HOUR}`, { headers: { cookie } })
    expect(storedExpiry((await saved.json()) as Data)).toBe(started + 8 * HOUR)
  })

  test('a cookie ending before the deadline is left as it is; without the option nothing is capped', async () => {
    const capped = await app(
      session(options(new MemoryStore(), { absoluteTimeoutMs: 8 * HOUR, cookie: { maxAge: HOUR } })),
    )
    expect(sentCookie(await fetch(`${capped}/login?name=ada`)).expires).toBe(Date.now() + HOUR)
    const plain = await app(session(options(new MemoryStore())))
    expect(sentCookie(await fetch(`${plain}/login?name=ada`)).expires).toBe(Date.now() + 30 * 24 * HOUR)
  })

  test('a session written by express-session is capped from its first load under the option', async () => {
    const sessions = Object.create(null) as Record<string, string>
    const memory = () => Object.assign(new realSession.MemoryStore(), { sessions })
    const old = await app(realSession(options(memory()) as unknown as realSession.SessionOptions))
    const base = await app(session(options(memory(), { absoluteTimeoutMs: 8 * HOUR })))
    const { cookie } = await signIn(old)
    later(HOUR)
    const firstLoad = Date.now()
    const response = await fetch(`${base}/me`, { headers: { cookie } })
    expect(sentCookie(response).expires).toBe(firstLoad + 8 * HOUR)
  })

  test('a browser-session cookie (no maxAge) stays one: no Expires is added', async () => {
    const base = await app(session(options(new MemoryStore(), { absoluteTimeoutMs: 8 * HOUR, cookie: {} })))
    const sent = sentCookie(await fetch(`${base}/login?name=ada`))
    expect(sent.expires).toBeNull()
    expect(sent.maxAge).toBeNull()
  })
})

// express-session habits on a latchkey session, from plain CommonJS JavaScript: each one throws a
// TypeError that says what to do instead, never a silent no-op or a callback that is never called.
// The habits themselves run in sloppy mode (test/support/sloppy-habits.cjs, loaded by Node's require),
// where an assignment to a frozen object fails without a word. vitest runs this file with its globals
// (describe, test, expect); latchkey is loaded from its TypeScript sources through tsx, so no build is needed.
const { createServer } = require('node:http')
const express = require('express')
const tsx = require('tsx/cjs/api')
const habits = require('./support/sloppy-habits.cjs')

const { createSessionManager, generateKey, ManualClock, MemoryStore } = tsx.require(
  '../src/index.ts',
  __filename,
)
const { sessions } = tsx.require('../src/adapters/express.ts', __filename)

// The drop-in exists (src/express-session, docs/express-session.md): every message that names it says
// how to use it, never that it is still to come.
const DROP_IN =
  /\(For express-session's API as it is, use its drop-in, session\(\) from 'latchkey\/express-session', in place of express-session's: see docs\/express-session\.md\.\)$/

function makeManager() {
  const clock = new ManualClock()
  return createSessionManager({
    store: new MemoryStore({ clock }),
    keys: [generateKey()],
    clock,
    cookie: { secure: false },
  })
}

/** A stored session holding { cart: 1 }, loaded again as the next request would, and its ID. */
async function storedSession(manager) {
  const first = await manager.load({})
  first.set('cart', 1)
  const id = (await manager.commit(first)).setCookie.match(/^sid=([^;]+)/)[1]
  return { id, session: await manager.load({ cookie: `sid=${id}` }) }
}

test('the habits run in sloppy mode, where a frozen object ignores an assignment without a word', () => {
  expect(habits.isSloppy()).toBe(true)
  expect(habits.assignToFrozen()).toBeUndefined()
})

describe('assignments to the session object', () => {
  test('session.user = … throws a TypeError naming set() and the drop-in, and stores nothing', async () => {
    const manager = makeManager()
    const { session } = await storedSession(manager)
    expect(() => habits.assignUser(session)).toThrow(TypeError)
    expect(() => habits.assignUser(session)).toThrow(
      /session\.user = … stores nothing.*session\.set\('user', value\)/,
    )
    expect(() => habits.assignUser(session)).toThrow(DROP_IN)
    expect(session.user).toBeUndefined()
    expect(session.get('user')).toBeUndefined()
  })

  test('delete session.user and Object.defineProperty throw too', async () => {
    const { session } = await storedSession(makeManager())
    expect(() => habits.deleteUser(session)).toThrow(
      /delete session\.user removes nothing: use session\.delete\('user'\)/,
    )
    expect(() => Object.defineProperty(session, 'user', { value: 'x' })).toThrow(TypeError)
    expect(() => Object.assign(session, { user: 'x' })).toThrow(/session\.set\('user', value\)/)
  })

  test('assigning a member of the API (userId) throws, pointing to login()', async () => {
    const { session } = await storedSession(makeManager())
    expect(() => habits.assignUserId(session)).toThrow(
      /session\.userId is part of the Session API.*session\.login\(userId\)/,
    )
    expect(session.userId).toBeNull()
  })

  test('the session still works as it should: set() stores', async () => {
    const manager = makeManager()
    const { id, session } = await storedSession(manager)
    session.set('user', 'x')
    await manager.commit(session)
    expect((await manager.load({ cookie: `sid=${id}` })).get('user')).toBe('x')
  })
})

describe('callbacks and express-session methods, on the bare manager', () => {
  test('destroy(cb), regenerate(cb) and logout(cb) throw at once, call nothing, and change nothing', async () => {
    const manager = makeManager()
    const { id, session } = await storedSession(manager)
    const callback = () => {
      throw new Error('the callback must never be called')
    }
    expect(() => session.destroy(callback)).toThrow(
      /session\.destroy\(\) takes no callback.*ended when the response is committed/,
    )
    expect(() => session.destroy(callback)).toThrow(DROP_IN)
    expect(() => session.regenerate(callback)).toThrow(
      /session\.regenerate\(\) takes no callback.*new ID is made when the response is committed/,
    )
    expect(() => session.logout(callback)).toThrow(TypeError)
    // Nothing was applied: the session is as it was, and the next request still finds it.
    const result = await manager.commit(session)
    expect(result.setCookie).toBeNull()
    expect((await manager.load({ cookie: `sid=${id}` })).get('cart')).toBe(1)
  })

  test('save(cb), reload(cb) and touch() throw, saying what latchkey does instead', async () => {
    const { session } = await storedSession(makeManager())
    expect(() => session.save(() => {})).toThrow(
      /session\.save\(\) does not exist: there is nothing to save by hand/,
    )
    expect(() => session.reload(() => {})).toThrow(/session\.reload\(\) does not exist/)
    expect(() => session.touch()).toThrow(/session\.touch\(\) does not exist.*idle deadline/)
    expect(() => session.save()).toThrow(DROP_IN)
  })

  test('every message that names the drop-in says it exists and how to use it, none that it is planned', async () => {
    const { session } = await storedSession(makeManager())
    const callback = () => {}
    const habitsNamingIt = [
      () => habits.assignUser(session),
      () => habits.deleteUser(session),
      () => Object.defineProperty(session, 'user', { value: 'x' }),
      () => session.destroy(callback),
      () => session.logout(callback),
      () => session.regenerate(callback),
      () => session.reauthenticate(callback),
      () => session.save(callback),
      () => session.reload(callback),
      () => session.touch(),
    ]
    for (const habit of habitsNamingIt) {
      let message
      try {
        habit()
      } catch (error) {
        expect(error).toBeInstanceOf(TypeError)
        message = error.message
      }
      expect(message).toMatch(DROP_IN)
      expect(message).not.toMatch(/planned|will come|to come/)
    }
  })

  test('login(userId, callback) is a TypeError, not a sign-in that waits forever', async () => {
    const { session } = await storedSession(makeManager())
    expect(() => session.login('alice', () => {})).toThrow(/takes no callback/)
    expect(session.userId).toBeNull()
  })
})

describe('session.cookie', () => {
  test('is there, with read-only facts: a browser-session cookie by default', async () => {
    const { session } = await storedSession(makeManager())
    expect(session.cookie).toMatchObject({
      persistent: false,
      maxAge: null,
      expires: null,
      httpOnly: true,
      path: '/',
    })
  })

  test('a write throws a TypeError pointing to remember me and the cookie options', async () => {
    const { session } = await storedSession(makeManager())
    expect(() => habits.assignCookieMaxAge(session)).toThrow(TypeError)
    expect(() => habits.assignCookieMaxAge(session)).toThrow(
      /session\.cookie\.maxAge cannot be set.*login\(userId, \{ persistent: true \}\).*cookie\.persistent/,
    )
    expect(() => habits.assignCookieExpires(session)).toThrow(/session\.cookie\.expires cannot be set/)
    expect(session.cookie.maxAge).toBeNull()
  })
})

describe('through a real Express app (latchkey/express)', () => {
  let server
  let base
  const errors = []

  beforeAll(async () => {
    const app = express()
    app.use(sessions(makeManager()))
    habits.expressRoutes(app)
    app.use((error, _req, res, _next) => {
      errors.push(error)
      res.status(500).type('text').send(`${error.name}: ${error.message}`)
    })
    server = createServer(app)
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${server.address().port}`
  })

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve))
  })

  test.each([
    ['/assign', /session\.user = … stores nothing/],
    ['/destroy', /session\.destroy\(\) takes no callback/],
    ['/regenerate', /session\.regenerate\(\) takes no callback/],
    ['/save', /session\.save\(\) does not exist/],
    ['/cookie', /session\.cookie\.maxAge cannot be set/],
  ])('%s answers 500 with the TypeError, at once (no hanging request)', async (path, message) => {
    const response = await fetch(base + path, { signal: AbortSignal.timeout(10_000) })
    expect(response.status).toBe(500)
    const text = await response.text()
    expect(text).toMatch(/^TypeError: latchkey: /)
    expect(text).toMatch(message)
    expect(errors.at(-1)).toBeInstanceOf(TypeError)
  })
})

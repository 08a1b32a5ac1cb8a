// The demo app (examples/demo, Express 5 on SQLite) over real HTTP: every page, the CSRF token on
// every POST (form field and fetch header), the counter, sign-in, the sessions list, revoke, sign out
// everywhere else, sign-out and its flash, the favicon, and a 503 while the store is down.
// The demo imports latchkey by its package name, as an app does. Node would resolve that to the built
// dist (the package's exports map); TypeScript and tsx (`npm start`) resolve it to src through the paths
// of tsconfig.json; vitest reads neither, so the mocks below hand it src too: no build to wait for, and
// the demo is tested against the code as it is. The built package is run by declarations.test.ts.
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import type { DemoServer } from '../examples/demo/app.js'
import { createDemoServer, MAX_BODY_BYTES, PAYLOAD_PREFIX_LENGTH } from '../examples/demo/app.js'
import { generateKey, ManualClock } from '../src/index.js'

vi.mock('latchkey', () => import('../src/index.js'))
vi.mock('latchkey/express', () => import('../src/adapters/express.js'))
vi.mock('latchkey/stores', () => import('../src/stores/index.js'))
vi.mock('latchkey/stores/sqlite', () => import('../src/stores/sqlite/index.js'))

let demo: DemoServer
let dir: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'latchkey-demo-'))
  demo = await createDemoServer({ storePath: join(dir, 'sessions.db'), keys: [generateKey()], port: 0 })
})

afterAll(async () => {
  await demo?.close()
  rmSync(dir, { recursive: true, force: true })
})

interface Page {
  readonly status: number
  readonly body: string
  readonly headers: Headers
  readonly location: string | null
  /** The raw Set-Cookie headers of the response. */
  readonly setCookies: string[]
}

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
/** The cookies of a production app's defaults: `__Host-` names, Secure (browsers send it back to localhost). */
const SID = '__Host-sid'
const CSRF_COOKIE = '__Host-csrf'
const PASSWORD = 'correct horse'

/**
 * A browser, as far as the demo can tell: a cookie jar (the `sid` session cookie and the `csrf`
 * pre-session cookie), redirects not followed. Its forms carry the CSRF token of the last page it was
 * shown, as a real browser's would; when the session changed since (sign-in, sign-out), it loads the
 * home page first for a fresh one.
 */
class Browser {
  readonly cookies = new Map<string, string>()
  /** The `_csrf` value of the last page, while it is still the session's. */
  token: string | null = null
  /** The page's `<meta name="csrf-token">`, which the fetch button sends in `x-csrf-token`. */
  metaToken: string | null = null

  constructor(
    readonly userAgent = 'demo-test',
    readonly server: () => DemoServer = () => demo,
  ) {}

  get sid(): string | null {
    return this.cookies.get(SID) ?? null
  }

  async get(path = '/'): Promise<Page> {
    return this.send(path, { method: 'GET' })
  }

  /** Submits a form of the home page, with its `_csrf` field. */
  async post(path: string, form: Record<string, string> = {}): Promise<Page> {
    if (this.token === null) await this.get()
    return this.send(path, {
      method: 'POST',
      headers: FORM,
      body: new URLSearchParams({ _csrf: this.token ?? '', ...form }).toString(),
    })
  }

  /** What the page's "+1 with fetch" button does: no body, the token in the `x-csrf-token` header. */
  async fetchCounter(token = this.metaToken): Promise<Page> {
    if (token === null) throw new Error('no page loaded')
    return this.send('/counter', {
      method: 'POST',
      headers: { 'x-csrf-token': token, accept: 'application/json' },
    })
  }

  async send(path: string, init: RequestInit): Promise<Page> {
    const headers = new Headers(init.headers)
    headers.set('user-agent', this.userAgent)
    if (this.cookies.size > 0) {
      headers.set('cookie', [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; '))
    }
    const response = await fetch(this.server().url + path, { ...init, headers, redirect: 'manual' })
    const setCookies = response.headers.getSetCookie()
    for (const header of setCookies) {
      const [pair = ''] = header.split(';')
      const at = pair.indexOf('=')
      const name = pair.slice(0, at)
      if (isExpired(header)) this.cookies.delete(name)
      else this.cookies.set(name, pair.slice(at + 1))
      if (name === SID) {
        this.token = null
        this.metaToken = null
      }
    }
    const body = await response.text()
    this.token = /name="_csrf" value="([^"]+)"/.exec(body)?.[1] ?? this.token
    this.metaToken = /<meta name="csrf-token" content="([^"]+)">/.exec(body)?.[1] ?? this.metaToken
    return {
      status: response.status,
      body,
      headers: response.headers,
      location: response.headers.get('location'),
      setCookies,
    }
  }
}

function isExpired(setCookie: string): boolean {
  return /;\s*max-age=0(;|$)/i.test(setCookie) || /;\s*expires=thu, 01 jan 1970/i.test(setCookie)
}

function count(page: Page): number {
  const match = /<strong id="count">(\d+)<\/strong>/.exec(page.body)
  if (!match) throw new Error(`no counter in the page:\n${page.body}`)
  return Number(match[1])
}

function flash(page: Page): string | null {
  return /<p class="flash" role="status">([^<]*)<\/p>/.exec(page.body)?.[1] ?? null
}

function signedInAs(page: Page): string | null {
  return /Signed in as <strong id="user">([^<]*)<\/strong>/.exec(page.body)?.[1] ?? null
}

/** The rows of the sessions list: this session's offers sign-out, the others a revoke handle. */
function sessionRows(page: Page): { current: boolean; handle: string | null; action: string }[] {
  return [...page.body.matchAll(/<tr class="device" data-session="(current|other)">([\s\S]*?)<\/tr>/g)].map(
    (match) => ({
      current: match[1] === 'current',
      handle: /name="handle" value="([^"]+)"/.exec(match[2] ?? '')?.[1] ?? null,
      action: /action="([^"]+)"/.exec(match[2] ?? '')?.[1] ?? '',
    }),
  )
}

function expectRedirectHome(page: Page): void {
  expect(page.status).toBe(303)
  expect(page.location).toBe('/')
}

async function signIn(browser: Browser, name: string, password = PASSWORD): Promise<void> {
  expectRedirectHome(await browser.post('/login', { name, password }))
}

/** A 403 from the CSRF check, rendered as the demo's page. */
function expectCsrfPage(page: Page, reason: string): void {
  expect(page.status).toBe(403)
  expect(page.headers.get('content-type')).toMatch(/^text\/html/)
  expect(page.body).toContain('<h1>403</h1>')
  expect(page.body).toContain(`sent from another site (${reason})`)
  expect(page.body).toContain('reload the page')
  expect(page.body).toContain('<a href="/">Back to the demo</a>')
}

describe('pages', () => {
  test('the home page of a first visit: counter, sign-in form with a token, the demo notice, no stored session', async () => {
    const browser = new Browser()
    const page = await browser.get()
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
    expect(count(page)).toBe(0)
    expect(page.body).toContain('<form method="post" action="/login">')
    expect(page.body).toMatch(/<form method="post" action="\/login">\s*<input type="hidden" name="_csrf"/)
    expect(page.body).toContain('a new name signs up with the password you type')
    expect(page.body).toContain('<script src="/counter.js" defer></script>')
    expect(browser.metaToken).not.toBeNull()
    expect(signedInAs(page)).toBeNull()
    // The login form's token is bound to a short-lived pre-session cookie, not to a stored session.
    expect(page.setCookies).toHaveLength(1)
    const cookie = page.setCookies[0] as string
    expect(cookie).toMatch(/^__Host-csrf=[^;]+; Max-Age=\d+;/)
    expect(cookie).toMatch(/; HttpOnly(;|$)/)
    expect(cookie).toMatch(/; SameSite=Lax(;|$)/)
    expect(cookie).toMatch(/; Secure(;|$)/)
    expect(cookie).toMatch(/; Path=\/(;|$)/)
    expect(cookie).not.toMatch(/Domain=/i)
    expect(browser.sid).toBeNull()
    expect(page.headers.get('cache-control')).toBe('no-store')
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'")
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'")
    expect(page.headers.get('x-content-type-options')).toBe('nosniff')
    expect(page.headers.get('x-powered-by')).toBeNull()
  })

  test('HEAD / answers like GET, without a body', async () => {
    const page = await new Browser().send('/', { method: 'HEAD' })
    expect(page.status).toBe(200)
    expect(page.body).toBe('')
  })

  test('/counter.js is the fetch button, sending the page token in x-csrf-token', async () => {
    const browser = new Browser()
    const page = await browser.get('/counter.js')
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/javascript/)
    expect(page.body).toContain("'x-csrf-token': token")
    expect(page.body).toContain('meta[name="csrf-token"]')
    expect(page.setCookies).toEqual([])
  })

  test('/favicon.ico answers 204 without touching the session', async () => {
    const browser = new Browser()
    await signIn(browser, 'Favicon')
    const sid = browser.sid
    const page = await browser.get('/favicon.ico')
    expect(page.status).toBe(204)
    expect(page.body).toBe('')
    expect(page.setCookies).toEqual([])
    expect(page.headers.get('cache-control')).toBeNull()
    // A cookie the session middleware would clear is not even looked at.
    const stranger = new Browser()
    stranger.cookies.set(SID, 'not-a-session-id')
    stranger.cookies.set(CSRF_COOKIE, 'garbage')
    expect((await stranger.get('/favicon.ico')).setCookies).toEqual([])
    expect(browser.sid).toBe(sid)
  })

  test('unknown pages are a 404 page; actions answer 405 to anything but POST', async () => {
    const browser = new Browser()
    const missing = await browser.get('/nowhere')
    expect(missing.status).toBe(404)
    expect(missing.body).toContain('There is no such page.')
    for (const path of ['/counter', '/login', '/logout', '/logout-others', '/revoke', '/confirm']) {
      const page = await browser.get(path)
      expect(page.status, path).toBe(405)
      expect(page.headers.get('allow'), path).toBe('POST')
    }
  })
})

describe('the CSRF token on every POST', () => {
  const actions: [string, Record<string, string>][] = [
    ['/counter', {}],
    ['/login', { name: 'Mallory', password: PASSWORD }],
    ['/logout', {}],
    ['/logout-others', {}],
    ['/revoke', { handle: 'x' }],
  ]

  test('a signed-in browser: a POST without the token, or with a wrong one, gets the 403 page and changes nothing', async () => {
    const browser = new Browser('Victim')
    const other = new Browser('Other')
    await signIn(browser, 'Victim')
    await signIn(other, 'Victim')
    expectRedirectHome(await browser.post('/counter'))
    const before = await browser.get()
    expect(count(before)).toBe(1)
    const [row] = sessionRows(before).filter((r) => !r.current)
    const foreignToken = (await new Browser().get()).body.match(/name="_csrf" value="([^"]+)"/)?.[1] ?? ''
    for (const [path, fields] of actions) {
      const form = { ...fields, ...(path === '/revoke' ? { handle: row?.handle ?? '' } : {}) }
      const missing = await browser.send(path, {
        method: 'POST',
        headers: FORM,
        body: new URLSearchParams(form).toString(),
      })
      expectCsrfPage(missing, 'missing-token')
      const empty = await browser.send(path, { method: 'POST', headers: FORM, body: '' })
      expectCsrfPage(empty, 'missing-token')
      const forged = await browser.send(path, {
        method: 'POST',
        headers: FORM,
        body: new URLSearchParams({ ...form, _csrf: foreignToken }).toString(),
      })
      expectCsrfPage(forged, 'bad-token')
      const garbage = await browser.send(path, {
        method: 'POST',
        headers: { ...FORM, 'x-csrf-token': 'garbage' },
        body: new URLSearchParams(form).toString(),
      })
      expectCsrfPage(garbage, 'bad-token')
    }
    const after = await browser.get()
    expect(signedInAs(after)).toBe('Victim')
    expect(count(after)).toBe(1)
    expect(sessionRows(after)).toHaveLength(2)
    expect(signedInAs(await other.get())).toBe('Victim')
  })

  test('before sign-in: the login form and the counter need the token too', async () => {
    const browser = new Browser()
    await browser.get()
    for (const [path, fields] of actions) {
      const page = await browser.send(path, {
        method: 'POST',
        headers: FORM,
        body: new URLSearchParams(fields).toString(),
      })
      expectCsrfPage(page, 'missing-token')
    }
    const page = await browser.get()
    expect(signedInAs(page)).toBeNull()
    expect(count(page)).toBe(0)
    expect(browser.sid).toBeNull()
  })

  test('a token from before sign-in is dead after it: the CSRF secret rotates at login', async () => {
    const browser = new Browser()
    await browser.get()
    const anonymousToken = browser.token as string
    await signIn(browser, 'Rotating')
    const page = await browser.send('/counter', {
      method: 'POST',
      headers: FORM,
      body: new URLSearchParams({ _csrf: anonymousToken }).toString(),
    })
    expectCsrfPage(page, 'bad-token')
    expectRedirectHome(await browser.post('/counter'))
    expect(count(await browser.get())).toBe(1)
  })

  test('every form gets a token of its own, and the page carries one more for fetch', async () => {
    const browser = new Browser()
    await signIn(browser, 'Tokens')
    const page = await browser.get()
    const tokens = [...page.body.matchAll(/name="_csrf" value="([^"]+)"/g)].map((match) => match[1])
    // The counter, this session's row (sign out), sign out everywhere else, sign out.
    expect(tokens).toHaveLength(4)
    // And the panel shows one more.
    const shown = /<code id="csrf-token">([^<]+)<\/code>/.exec(page.body)?.[1]
    expect(new Set([...tokens, browser.metaToken, shown]).size).toBe(6)
  })

  test('a cross-site POST is refused even with a valid token', async () => {
    const browser = new Browser()
    await signIn(browser, 'Target')
    await browser.get()
    const token = browser.token ?? ''
    const crossSite = await browser.send('/logout', {
      method: 'POST',
      headers: { ...FORM, 'sec-fetch-site': 'cross-site' },
      body: new URLSearchParams({ _csrf: token }).toString(),
    })
    expectCsrfPage(crossSite, 'cross-site')
    const foreign = await browser.send('/logout', {
      method: 'POST',
      headers: { ...FORM, origin: 'http://evil.example' },
      body: new URLSearchParams({ _csrf: token }).toString(),
    })
    expectCsrfPage(foreign, 'origin-mismatch')
    const sameOrigin = await browser.send('/counter', {
      method: 'POST',
      headers: { ...FORM, 'sec-fetch-site': 'same-origin', origin: demo.url },
      body: new URLSearchParams({ _csrf: token }).toString(),
    })
    expectRedirectHome(sameOrigin)
    expect(signedInAs(await browser.get())).toBe('Target')
  })
})

describe('the counter', () => {
  test('the form raises it by one, stores a session on the first click, and keeps its cookie after', async () => {
    const browser = new Browser()
    await browser.get()
    expect(browser.sid).toBeNull()
    const first = await browser.post('/counter')
    expectRedirectHome(first)
    expect(browser.sid).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const sid = browser.sid
    expect(count(await browser.get())).toBe(1)
    expectRedirectHome(await browser.post('/counter'))
    const second = await browser.post('/counter')
    expect(second.setCookies).toEqual([])
    expect(count(await browser.get())).toBe(3)
    expect(browser.sid).toBe(sid)
  })

  test('the fetch button: the page token in x-csrf-token, JSON back, the same token good for every click', async () => {
    const browser = new Browser()
    await browser.get()
    const token = browser.metaToken as string
    // The first click stores the session, which adopts the pre-session secret: the token stays good.
    for (let n = 1; n <= 3; n++) {
      const answer = await browser.fetchCounter(token)
      expect(answer.status).toBe(200)
      expect(answer.headers.get('content-type')).toMatch(/^application\/json/)
      expect(JSON.parse(answer.body)).toEqual({ count: n })
    }
    expectRedirectHome(await browser.post('/counter'))
    expect(count(await browser.get())).toBe(4)
  })

  test('the fetch button without the header, or with a token of another session, gets a JSON 403', async () => {
    const browser = new Browser()
    await signIn(browser, 'Fetcher')
    await browser.get()
    const stranger = new Browser()
    await stranger.get()
    const bare = await browser.send('/counter', { method: 'POST', headers: { accept: 'application/json' } })
    expect(bare.status).toBe(403)
    expect(JSON.parse(bare.body).error).toContain('missing-token')
    const foreign = await browser.fetchCounter(stranger.metaToken)
    expect(foreign.status).toBe(403)
    expect(JSON.parse(foreign.body).error).toContain('bad-token')
    expect(count(await browser.get())).toBe(0)
    expect(JSON.parse((await browser.fetchCounter()).body)).toEqual({ count: 1 })
  })

  test('50 concurrent clicks count 50', async () => {
    const browser = new Browser()
    await browser.get()
    const token = browser.metaToken
    await browser.fetchCounter(token)
    const answers = await Promise.all(Array.from({ length: 50 }, () => browser.fetchCounter(token)))
    expect(answers.every((answer) => answer.status === 200)).toBe(true)
    expect(count(await browser.get())).toBe(51)
  })
})

describe('signing in and out', () => {
  test('signing in changes the session ID, keeps the counter, greets once, and kills the old ID', async () => {
    const browser = new Browser()
    await browser.post('/counter')
    await browser.post('/counter')
    const before = browser.sid
    await signIn(browser, '  Ada  ')
    expect(browser.sid).not.toBeNull()
    expect(browser.sid).not.toBe(before)
    const page = await browser.get()
    expect(signedInAs(page)).toBe('Ada')
    expect(flash(page)).toBe('Welcome, Ada. Your session ID changed as you signed in.')
    expect(count(page)).toBe(2)
    expect(flash(await browser.get())).toBeNull()

    const replay = new Browser()
    replay.cookies.set(SID, before as string)
    const old = await replay.get()
    expect(signedInAs(old)).toBeNull()
    expect(count(old)).toBe(0)
  })

  test('names are trimmed, must be 1 to 64 characters, and are HTML-escaped', async () => {
    const browser = new Browser()
    for (const name of ['', '   ', 'x'.repeat(65)]) {
      const page = await browser.post('/login', { name })
      expect(page.status).toBe(400)
      expect(page.body).toContain('The name must be 1 to 64 characters long.')
    }
    expect((await browser.post('/login', {})).status).toBe(400)
    await signIn(browser, `<script>alert("x")</script>${'y'.repeat(30)}`)
    expect((await browser.post('/login', { name: 'NoPassword' })).status).toBe(400)
    const page = await browser.get()
    expect(page.body).not.toContain('<script>alert')
    expect(page.body).toContain('&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;')
  })

  test('signing out clears the cookie, shows a flash once, and the old cookie finds no one signed in', async () => {
    const browser = new Browser()
    await signIn(browser, 'Linus')
    const id = browser.sid
    expect(signedInAs(await browser.get())).toBe('Linus')
    const answer = await browser.post('/logout')
    expectRedirectHome(answer)
    expect(browser.sid).not.toBe(id)
    const page = await browser.get()
    expect(flash(page)).toBe('You have signed out: your session is gone from the store.')
    expect(signedInAs(page)).toBeNull()
    expect(page.body).toContain('action="/login"')
    const next = await browser.get()
    expect(flash(next)).toBeNull()

    const replay = new Browser()
    replay.cookies.set(SID, id as string)
    const old = await replay.get()
    expect(signedInAs(old)).toBeNull()
    expect(flash(old)).toBeNull()
  })

  test('signing out when not signed in shows no flash', async () => {
    const browser = new Browser()
    expectRedirectHome(await browser.post('/logout'))
    expect(flash(await browser.get())).toBeNull()
  })
})

describe('your sessions', () => {
  test('the list shows the one session, marked as this one', async () => {
    const browser = new Browser('Browser One')
    await signIn(browser, 'Grace Hopper')
    const page = await browser.get()
    const rows = sessionRows(page)
    expect(rows).toHaveLength(1)
    expect(rows[0]?.current).toBe(true)
    expect(page.body).toContain('Browser One <strong>(this session)</strong>')
    expect(page.body).toContain('Your devices (1)')
  })

  test('revoking a session from a second browser signs the first one out', async () => {
    const first = new Browser('First Browser')
    const second = new Browser('Second Browser')
    await signIn(first, 'Margaret')
    await signIn(second, 'Margaret')
    const page = await second.get()
    const rows = sessionRows(page)
    expect(rows).toHaveLength(2)
    const other = rows.find((row) => !row.current)
    expect(other).toBeDefined()
    expect(page.body).toContain('First Browser')

    expectRedirectHome(await second.post('/revoke', { handle: other?.handle ?? '' }))
    const after = await second.get()
    expect(flash(after)).toBe('Session revoked.')
    expect(sessionRows(after)).toHaveLength(1)

    const signedOut = await first.get()
    expect(signedInAs(signedOut)).toBeNull()
  })

  test("this session's row offers sign-out; its handle, seen from another browser and posted here, ends it too", async () => {
    const browser = new Browser('Self')
    const other = new Browser('Elsewhere')
    await signIn(browser, 'Self')
    await signIn(other, 'Self')
    const rows = sessionRows(await browser.get())
    expect(rows.find((row) => row.current)).toMatchObject({ handle: null, action: '/logout' })
    expect(rows.find((row) => !row.current)).toMatchObject({ action: '/revoke' })
    const own = sessionRows(await other.get()).find((row) => !row.current)
    const answer = await browser.post('/revoke', { handle: own?.handle ?? '' })
    expectRedirectHome(answer)
    expect(signedInAs(await browser.get())).toBeNull()
    const left = await other.get()
    expect(signedInAs(left)).toBe('Self')
    expect(sessionRows(left)).toHaveLength(1)
  })

  test('a handle is useless to another user', async () => {
    const owner = new Browser()
    const ownerElsewhere = new Browser()
    const stranger = new Browser()
    await signIn(owner, 'owner')
    await signIn(ownerElsewhere, 'owner')
    await signIn(stranger, 'stranger')
    const row = sessionRows(await ownerElsewhere.get()).find((r) => !r.current)
    expect(row?.handle).toBeTruthy()
    expectRedirectHome(await stranger.post('/revoke', { handle: row?.handle ?? '' }))
    expect(flash(await stranger.get())).toBe('That session had already ended.')
    expect(signedInAs(await owner.get())).toBe('owner')
    expect(sessionRows(await ownerElsewhere.get())).toHaveLength(2)
  })

  test('signing out everywhere else keeps only this session', async () => {
    const browsers = [new Browser('one'), new Browser('two'), new Browser('three')]
    for (const browser of browsers) await signIn(browser, 'Barbara')
    const [first, second, third] = browsers as [Browser, Browser, Browser]
    expect(sessionRows(await third.get())).toHaveLength(3)
    expectRedirectHome(await third.post('/logout-others'))
    const page = await third.get()
    expect(flash(page)).toBe('Signed out 2 other sessions.')
    expect(sessionRows(page)).toHaveLength(1)
    expect(signedInAs(page)).toBe('Barbara')
    expect(signedInAs(await first.get())).toBeNull()
    expect(signedInAs(await second.get())).toBeNull()
  })
})

describe('bodies', () => {
  test('bodies over 8 KB are refused with 413 (form token or header token), other content types with 415', async () => {
    const browser = new Browser()
    await browser.get()
    const big = await browser.post('/login', { name: 'x'.repeat(MAX_BODY_BYTES) })
    expect(big.status).toBe(413)
    expect(big.body).toContain('Request body too large.')
    const bigWithHeader = await browser.send('/login', {
      method: 'POST',
      headers: { ...FORM, 'x-csrf-token': browser.token ?? '' },
      body: `name=${'x'.repeat(MAX_BODY_BYTES)}`,
    })
    expect(bigWithHeader.status).toBe(413)
    const json = await browser.send('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': browser.token ?? '' },
      body: '{"name":"x"}',
    })
    expect(json.status).toBe(415)
    expect(json.body).toContain('Expected a form submission.')
  })

  test('a form whose token is in the header is still parsed for the route', async () => {
    const browser = new Browser()
    await browser.get()
    const answer = await browser.send('/login', {
      method: 'POST',
      headers: { ...FORM, 'x-csrf-token': browser.token ?? '' },
      body: 'name=Header&password=pw',
    })
    expectRedirectHome(answer)
    expect(signedInAs(await browser.get())).toBe('Header')
  })
})

describe('store down', () => {
  let down: DemoServer
  let downDir: string

  beforeAll(async () => {
    downDir = mkdtempSync(join(tmpdir(), 'latchkey-demo-down-'))
    down = await createDemoServer({
      storePath: join(downDir, 'sessions.db'),
      keys: [generateKey()],
      port: 0,
      busyTimeoutMs: 50,
    })
  })

  afterAll(async () => {
    await down?.close()
    rmSync(downDir, { recursive: true, force: true })
  })

  test('while another process holds the SQLite file locked: 503 pages, the favicon still served; then it recovers', async () => {
    const browser = new Browser('Outage', () => down)
    await signIn(browser, 'Outage')
    const other = new Browser('Other', () => down)
    await signIn(other, 'Outage')
    expectRedirectHome(await browser.post('/counter'))
    const before = await browser.get()
    expect(count(before)).toBe(1)
    // latchkey reports the failed commits on console.error: keep the test output quiet.
    const quiet = vi.spyOn(console, 'error').mockImplementation(() => {})
    const blocker = new Database(join(downDir, 'sessions.db'))
    blocker.exec('BEGIN EXCLUSIVE')
    try {
      // A store call in the route fails: the error handler renders the 503 page.
      const page = await browser.post('/logout-others')
      expect(page.status).toBe(503)
      expect(page.headers.get('retry-after')).toBe('1')
      expect(page.headers.get('content-type')).toMatch(/^text\/html/)
      expect(page.body).toContain('The session store is not answering.')
      expect(page.setCookies).toEqual([])
      // The commit fails: latchkey answers 503 itself and saves nothing.
      const counter = await browser.post('/counter')
      expect(counter.status).toBe(503)
      expect(counter.headers.get('retry-after')).toBe('1')
      const fetched = await browser.fetchCounter()
      expect(fetched.status).toBe(503)
      const login = await new Browser('New', () => down).post('/login', { name: 'Newcomer', password: 'pw' })
      expect(login.status).toBe(503)
      expect((await browser.get('/favicon.ico')).status).toBe(204)
    } finally {
      blocker.exec('COMMIT')
      blocker.close()
      quiet.mockRestore()
    }
    const after = await browser.get()
    expect(after.status).toBe(200)
    expect(signedInAs(after)).toBe('Outage')
    expect(count(after)).toBe(1)
    expect(sessionRows(after)).toHaveLength(2)
    expect(signedInAs(await other.get())).toBe('Outage')
  })
})

describe('what protects this session', () => {
  function panelText(page: Page, id: string): string | null {
    return new RegExp(`id="${id}">([^<]*)<`).exec(page.body)?.[1] ?? null
  }

  test('a visitor: no record in the store, the cookie latchkey would send, a token', async () => {
    const page = await new Browser().get()
    expect(page.body).toContain('<section id="panel" data-stored="false">')
    expect(page.body).toContain('None in the store')
    expect(panelText(page, 'cookie-name')).toBe(SID)
    expect(panelText(page, 'csrf-token')).toMatch(/^[A-Za-z0-9_-]{86}$/)
  })

  test('signed in: the cookie as sent, the record as the store holds it, the deadlines; never the ID', async () => {
    const browser = new Browser()
    await browser.get()
    const login = await browser.post('/login', { name: 'Panel', password: PASSWORD })
    const sent = login.setCookies.find((header) => header.startsWith(`${SID}=`)) ?? ''
    expect(sent).toMatch(/^__Host-sid=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Lax$/)
    await browser.get()
    const page = await browser.get()
    expect(page.body).toContain('<section id="panel" data-stored="true">')
    const attrs = [...page.body.matchAll(/<span class="attr" data-attr="([^"]+)">/g)].map((m) => m[1])
    expect(attrs).toEqual([
      '__Host- prefix',
      'Secure',
      'HttpOnly',
      'SameSite=Lax',
      'Path=/',
      'no Domain (host-only)',
      'no Max-Age (dies with the browser)',
    ])
    const id = browser.sid as string
    const key = createHash('sha256').update(id).digest('base64url')
    const record = await demo.store.get(key)
    expect(record).not.toBeNull()
    expect(panelText(page, 'record-key')).toBe(key)
    expect(panelText(page, 'record-version')).toBe(String(record?.version))
    expect(panelText(page, 'record-payload')).toBe(record?.payload.slice(0, PAYLOAD_PREFIX_LENGTH))
    expect(page.body).not.toContain(id)
    for (const which of ['idle', 'absolute', 'renewal']) {
      const left = new RegExp(`data-countdown="${which}" data-left-ms="(\\d+)"`).exec(page.body)?.[1]
      expect(Number(left), which).toBeGreaterThan(0)
    }
    const token = panelText(page, 'csrf-token') as string
    expect(panelText(await browser.get(), 'csrf-token')).not.toBe(token)
    expect(JSON.parse((await browser.fetchCounter(token)).body)).toEqual({ count: 1 })
  })

  test('/panel.js counts the deadlines down', async () => {
    const page = await new Browser().get('/panel.js')
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/javascript/)
    expect(page.body).toContain('data-countdown')
  })
})

describe('why was I signed out', () => {
  function ended(page: Page): string | null {
    return /<p class="notice" id="ended" data-reason="([^"]+)"/.exec(page.body)?.[1] ?? null
  }

  test('the revoked device is told so, once; the others after "sign out everywhere else" are told that', async () => {
    const laptop = new Browser('Laptop')
    const phone = new Browser('Phone')
    await signIn(laptop, 'Reasons')
    await signIn(phone, 'Reasons')
    const row = sessionRows(await laptop.get()).find((r) => !r.current)
    expectRedirectHome(await laptop.post('/revoke', { handle: row?.handle ?? '' }))
    const told = await phone.get()
    expect(ended(told)).toBe('revoked')
    expect(told.body).toContain('revoked from another of your devices')
    expect(signedInAs(told)).toBeNull()
    expect(ended(await phone.get())).toBeNull()

    await signIn(phone, 'Reasons')
    expectRedirectHome(await laptop.post('/logout-others'))
    expect(ended(await phone.get())).toBe('signed-out-everywhere')
    // A sign-out of one's own is no surprise: nothing to tell.
    expectRedirectHome(await laptop.post('/logout'))
    expect(ended(await laptop.get())).toBeNull()
  })
})

describe('passwords and the fresh-authentication guard', () => {
  let fresh: DemoServer
  let freshDir: string
  const clock = new ManualClock(Date.now())

  beforeAll(async () => {
    freshDir = mkdtempSync(join(tmpdir(), 'latchkey-demo-fresh-'))
    fresh = await createDemoServer({
      storeUrl: `sqlite:${join(freshDir, 'sessions.db')}`,
      keys: [generateKey()],
      port: 0,
      clock,
    })
  })

  afterAll(async () => {
    await fresh?.close()
    rmSync(freshDir, { recursive: true, force: true })
  })

  test('a wrong password is a 401; the first sign-in of a name sets it', async () => {
    const browser = new Browser('a', () => fresh)
    await signIn(browser, 'pw-user', 'first')
    const other = new Browser('b', () => fresh)
    const wrong = await other.post('/login', { name: 'pw-user', password: 'second' })
    expect(wrong.status).toBe(401)
    expect(wrong.body).toContain('Wrong password.')
    expect(other.sid).toBeNull()
  })

  test('/password opens right after sign-in; later it asks for the password, and a confirmation renews the ID', async () => {
    const browser = new Browser('fresh', () => fresh)
    const signedOut = await browser.get('/password')
    expect(signedOut.status).toBe(403)
    expect(signedOut.body).toContain('Sign in first')
    const confirmSignedOut = await browser.post('/confirm', { password: 'x' })
    expect(confirmSignedOut.status).toBe(403)
    expect(confirmSignedOut.body).toContain('Sign in first')
    await signIn(browser, 'guarded', 'old password')
    const open = await browser.get('/password')
    expect(open.status).toBe(200)
    expect(open.body).toContain('id="fresh-auth" data-state="fresh"')

    clock.advance(5 * 60_000 + 1)
    const stale = await browser.get('/password')
    expect(stale.status).toBe(403)
    expect(stale.body).toContain('id="fresh-auth" data-state="required"')
    expect(stale.body).toContain('requireFreshAuth(300000)')
    // The POST is guarded as well.
    const refused = await browser.post('/password', { password: 'new password' })
    expect(refused.status).toBe(403)
    expect(refused.body).toContain('data-state="required"')

    const wrong = await browser.post('/confirm', { password: 'nope' })
    expect(wrong.status).toBe(403)
    expect(wrong.body).toContain('Wrong password.')
    const before = browser.sid
    const confirmed = await browser.post('/confirm', { password: 'old password' })
    expect(confirmed.status).toBe(303)
    expect(confirmed.location).toBe('/password')
    expect(browser.sid).not.toBe(before)
    expect((await browser.get('/password')).status).toBe(200)
    expectRedirectHome(await browser.post('/password', { password: 'new password' }))
    expect(flash(await browser.get())).toBe('Password changed.')

    const elsewhere = new Browser('elsewhere', () => fresh)
    expect((await elsewhere.post('/login', { name: 'guarded', password: 'old password' })).status).toBe(401)
    await signIn(elsewhere, 'guarded', 'new password')
  })
})

describe('the ID renewals the panel shows', () => {
  let renewing: DemoServer
  let renewingDir: string
  const clock = new ManualClock(Date.now())

  beforeAll(async () => {
    renewingDir = mkdtempSync(join(tmpdir(), 'latchkey-demo-renewal-'))
    renewing = await createDemoServer({
      storePath: join(renewingDir, 'sessions.db'),
      keys: [generateKey()],
      port: 0,
      clock,
    })
  })

  afterAll(async () => {
    await renewing?.close()
    rmSync(renewingDir, { recursive: true, force: true })
  })

  function renewal(page: Page): { at: string | null; left: number } {
    return {
      at: /id="renewed-at">([^<]*)</.exec(page.body)?.[1] ?? null,
      left: Number(/data-countdown="renewal" data-left-ms="(\d+)"/.exec(page.body)?.[1]),
    }
  }

  const utc = (ms: number) => `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`

  test('issued at sign-in; the hourly renewal the core makes unasked is shown from the next request', async () => {
    const interval = renewing.manager.options.renewalIntervalMs
    const browser = new Browser('renewal', () => renewing)
    await signIn(browser, 'Renewer')
    const signedInAt = clock.now()
    await browser.get()
    expect(renewal(await browser.get())).toEqual({ at: utc(signedInAt), left: interval })
    // Requests every 20 minutes keep the session alive past the hour (the idle timeout is 30).
    clock.advance(20 * 60_000)
    expect(renewal(await browser.get()).left).toBe(interval - 20 * 60_000)
    clock.advance(20 * 60_000)
    await browser.get()
    clock.advance(20 * 60_000)
    const before = browser.sid
    // This request's commit renews the ID: the page it gets was rendered before.
    await browser.get()
    expect(browser.sid).not.toBe(before)
    const renewedAt = clock.now()
    clock.advance(1000)
    const page = await browser.get()
    expect(renewal(page)).toEqual({ at: utc(renewedAt), left: interval - 1000 })
    expect(signedInAs(page)).toBe('Renewer')
  })
})

describe('the attack page', () => {
  test('is served on a second origin, with a CSP that lets it post to the demo only', async () => {
    expect(demo.attackUrl).not.toBe(demo.url)
    const answer = await fetch(`${demo.attackUrl}/`)
    expect(answer.status).toBe(200)
    const body = await answer.text()
    expect(body).toContain(`data-demo="${demo.url}"`)
    const csp = answer.headers.get('content-security-policy') ?? ''
    expect(csp).toContain(`form-action ${demo.url}`)
    expect(csp).toContain("script-src 'self'")
    expect((await fetch(`${demo.attackUrl}/attack.js`)).headers.get('content-type')).toMatch(/javascript/)
    expect((await fetch(`${demo.attackUrl}/`, { method: 'POST' })).status).toBe(405)
  })

  test('learns what the demo refused of its marked requests, and nothing else', async () => {
    const victim = new Browser()
    await signIn(victim, 'Victim of the page')
    const attempt = 'abc123'
    const refused = await victim.send(`/counter?attempt=${attempt}`, {
      method: 'POST',
      headers: { ...FORM, 'sec-fetch-site': 'same-site' },
      body: '_csrf=made-up',
    })
    expectCsrfPage(refused, 'cross-site')
    const found = await (await fetch(`${demo.attackUrl}/refusals?ids=${attempt},unknown`)).json()
    expect(found).toEqual({
      [attempt]: { path: '/counter', status: 403, reason: 'cross-site', site: 'same-site', cookieCame: true },
    })
    expect(count(await victim.get())).toBe(0)
  })
})

/** Listens on `port` of 127.0.0.1 (0: any); resolves the server, or null when the port is taken. */
function listenOn(port: number): Promise<Server | null> {
  const server = createServer()
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(null) : reject(error),
    )
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

/** A free port whose next port is held by `blocker` (the caller closes it). */
async function portBeforeATakenOne(): Promise<{ port: number; blocker: Server }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const probe = (await listenOn(0)) as Server
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const blocker = port < 65_535 ? await listenOn(port + 1) : null
    if (blocker !== null) return { port, blocker }
  }
  throw new Error('no free port followed by a free one')
}

describe('the ports', () => {
  test('the attack page takes any free port when the one next to the demo is taken', async () => {
    const { port, blocker } = await portBeforeATakenOne()
    const portDir = mkdtempSync(join(tmpdir(), 'latchkey-demo-ports-'))
    let started: DemoServer | undefined
    try {
      started = await createDemoServer({
        storePath: join(portDir, 'sessions.db'),
        keys: [generateKey()],
        port,
      })
      expect(started.url).toBe(`http://127.0.0.1:${port}`)
      expect(started.attackUrl).not.toBe(`http://127.0.0.1:${port + 1}`)
      expect((await fetch(`${started.attackUrl}/`)).status).toBe(200)
    } finally {
      await started?.close()
      blocker.close()
      rmSync(portDir, { recursive: true, force: true })
    }
  })

  test('an attack port asked for explicitly and taken is an error', async () => {
    const blocker = (await listenOn(0)) as Server
    const taken = (blocker.address() as AddressInfo).port
    const portDir = mkdtempSync(join(tmpdir(), 'latchkey-demo-ports-'))
    try {
      await expect(
        createDemoServer({
          storePath: join(portDir, 'sessions.db'),
          keys: [generateKey()],
          port: 0,
          attackPort: taken,
        }),
      ).rejects.toMatchObject({ code: 'EADDRINUSE' })
    } finally {
      blocker.close()
      rmSync(portDir, { recursive: true, force: true })
    }
  })
})

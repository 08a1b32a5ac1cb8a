// The demo app (examples/demo) over real HTTP: counter, sign-in, the sessions list, revoke, sign-out.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { DemoServer } from '../examples/demo/app.js'
import { createDemoServer, MAX_BODY_BYTES } from '../examples/demo/app.js'
import { generateKey } from '../src/index.js'

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
  readonly location: string | null
  /** The raw Set-Cookie headers of the response. */
  readonly setCookies: string[]
}

/**
 * A browser, as far as the demo can tell: one cookie jar holding the `sid` cookie, redirects not
 * followed. Its forms carry the CSRF token of the last page it was shown, as a real browser's would;
 * when the session changed since (sign-in), it loads the home page first for a fresh one.
 */
class Browser {
  cookie: string | null = null
  /** The `_csrf` value of the last page, while it is still the session's. */
  token: string | null = null

  constructor(readonly userAgent = 'demo-test') {}

  async get(path = '/'): Promise<Page> {
    return this.send(path, { method: 'GET' })
  }

  async post(path: string, form: Record<string, string> = {}): Promise<Page> {
    if (this.token === null) await this.get()
    return this.send(path, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: this.token ?? '', ...form }).toString(),
    })
  }

  async send(path: string, init: RequestInit): Promise<Page> {
    const headers = new Headers(init.headers)
    headers.set('user-agent', this.userAgent)
    if (this.cookie !== null) headers.set('cookie', `sid=${this.cookie}`)
    const response = await fetch(demo.url + path, { ...init, headers, redirect: 'manual' })
    const setCookies = response.headers.getSetCookie()
    for (const header of setCookies) {
      const [pair = ''] = header.split(';')
      const [name, value = ''] = pair.split('=')
      if (name !== 'sid') continue
      this.cookie = isExpired(header) ? null : value
      this.token = null
    }
    const body = await response.text()
    this.token = /name="_csrf" value="([^"]+)"/.exec(body)?.[1] ?? this.token
    return {
      status: response.status,
      body,
      location: response.headers.get('location'),
      setCookies,
    }
  }
}

function isExpired(setCookie: string): boolean {
  return /;\s*max-age=0(;|$)/i.test(setCookie) || /;\s*expires=thu, 01 jan 1970/i.test(setCookie)
}

function visits(page: Page): number {
  const match = /visited this page <strong>(\d+)<\/strong>/.exec(page.body)
  if (!match) throw new Error(`no visit counter in the page:\n${page.body}`)
  return Number(match[1])
}

function sessionRows(page: Page): { current: boolean; handle: string }[] {
  return [
    ...page.body.matchAll(/<tr data-session="(current|other)">[\s\S]*?name="handle" value="([^"]+)"/g),
  ].map((match) => ({ current: match[1] === 'current', handle: match[2] ?? '' }))
}

async function signIn(browser: Browser, name: string): Promise<void> {
  const answer = await browser.post('/login', { name })
  expect(answer.status).toBe(303)
  expect(answer.location).toBe('/')
}

describe('demo app', () => {
  test('the first visit counts, so it stores a session and sets a hardened cookie', async () => {
    const browser = new Browser()
    const page = await browser.get()
    expect(page.status).toBe(200)
    expect(visits(page)).toBe(1)
    expect(page.setCookies).toHaveLength(1)
    const cookie = page.setCookies[0] as string
    expect(cookie).toMatch(/^sid=[A-Za-z0-9_-]{43};/)
    expect(cookie).toMatch(/HttpOnly/i)
    expect(cookie).toMatch(/SameSite=Lax/i)
    expect(cookie).not.toMatch(/Secure/i)
    expect(page.body).toContain('action="/login"')
  })

  test('the counter goes up with the cookie and the cookie stays the same', async () => {
    const browser = new Browser()
    await browser.get()
    const id = browser.cookie
    expect(visits(await browser.get())).toBe(2)
    const third = await browser.get()
    expect(visits(third)).toBe(3)
    expect(third.setCookies).toEqual([])
    expect(browser.cookie).toBe(id)
  })

  test('signing in changes the session ID, keeps the counter and kills the old ID', async () => {
    const browser = new Browser()
    await browser.get()
    await browser.get()
    const before = browser.cookie
    await signIn(browser, '  Ada  ')
    expect(browser.cookie).not.toBeNull()
    expect(browser.cookie).not.toBe(before)
    const page = await browser.get()
    expect(page.body).toContain('Signed in as <strong>Ada</strong>')
    expect(visits(page)).toBe(3)

    const replay = new Browser()
    replay.cookie = before
    const old = await replay.get()
    expect(old.body).not.toContain('Signed in as')
    expect(visits(old)).toBe(1)
  })

  test('the sessions list shows the one session, marked as this one', async () => {
    const browser = new Browser('Browser One')
    await signIn(browser, 'Grace Hopper')
    const page = await browser.get()
    const rows = sessionRows(page)
    expect(rows).toHaveLength(1)
    expect(rows[0]?.current).toBe(true)
    expect(page.body).toContain('Browser One <strong>(this session)</strong>')
    expect(page.body).toContain('Your active sessions (1)')
  })

  test('signing out clears the cookie, and replaying the old cookie finds no one signed in', async () => {
    const browser = new Browser()
    await signIn(browser, 'Linus')
    const id = browser.cookie
    expect((await browser.get()).body).toContain('Signed in as <strong>Linus</strong>')
    const answer = await browser.post('/logout')
    expect(answer.status).toBe(303)
    const cleared = answer.setCookies.find((header) => header.startsWith('sid='))
    expect(cleared).toBeDefined()
    expect(isExpired(cleared as string)).toBe(true)
    expect(browser.cookie).toBeNull()

    const replay = new Browser()
    replay.cookie = id
    const page = await replay.get()
    expect(page.body).not.toContain('Signed in as')
    expect(page.body).toContain('action="/login"')
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

    const answer = await second.post('/revoke', { handle: other?.handle ?? '' })
    expect(answer.status).toBe(303)
    const after = await second.get()
    expect(after.body).toContain('Session revoked.')
    expect(sessionRows(after)).toHaveLength(1)

    const signedOut = await first.get()
    expect(signedOut.body).not.toContain('Signed in as')
    expect(visits(signedOut)).toBe(1)
  })

  test('a handle is useless to another user', async () => {
    const owner = new Browser()
    const stranger = new Browser()
    await signIn(owner, 'owner')
    await signIn(stranger, 'stranger')
    const [row] = sessionRows(await owner.get())
    await stranger.post('/revoke', { handle: row?.handle ?? '' })
    expect((await stranger.get()).body).toContain('That session had already ended.')
    expect((await owner.get()).body).toContain('Signed in as <strong>owner</strong>')
  })

  test('signing out everywhere else keeps only this session', async () => {
    const browsers = [new Browser('one'), new Browser('two'), new Browser('three')]
    for (const browser of browsers) await signIn(browser, 'Barbara')
    const [first, second, third] = browsers as [Browser, Browser, Browser]
    expect(sessionRows(await third.get())).toHaveLength(3)
    expect((await third.post('/logout-others')).status).toBe(303)
    const page = await third.get()
    expect(page.body).toContain('Signed out 2 other sessions.')
    expect(sessionRows(page)).toHaveLength(1)
    expect((await first.get()).body).not.toContain('Signed in as')
    expect((await second.get()).body).not.toContain('Signed in as')
  })

  test('names are trimmed, must be 1 to 64 characters, and are HTML-escaped', async () => {
    const browser = new Browser()
    for (const name of ['', '   ', 'x'.repeat(65)]) {
      expect((await browser.post('/login', { name })).status).toBe(400)
    }
    expect((await browser.post('/login', {})).status).toBe(400)
    await signIn(browser, `<script>alert("x")</script>${'y'.repeat(30)}`)
    const page = await browser.get()
    expect(page.body).not.toContain('<script>alert')
    expect(page.body).toContain('&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;')
  })

  test('bodies over 8 KB are refused with 413, other content types with 415', async () => {
    const browser = new Browser()
    const big = await browser.post('/login', { name: 'x'.repeat(MAX_BODY_BYTES) })
    expect(big.status).toBe(413)
    const json = await browser.send('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': browser.token ?? '' },
      body: '{"name":"x"}',
    })
    expect(json.status).toBe(415)
  })

  test('every form carries a CSRF token, different on each form, and a post without one is refused', async () => {
    const browser = new Browser()
    await signIn(browser, 'Tokens')
    const page = await browser.get()
    const tokens = [...page.body.matchAll(/name="_csrf" value="([^"]+)"/g)].map((match) => match[1])
    expect(tokens).toHaveLength(3)
    expect(new Set(tokens).size).toBe(3)
    const refused = await browser.send('/logout', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    })
    expect(refused.status).toBe(403)
    expect(refused.body).toContain('reload the page')
    expect((await browser.get()).body).toContain('Signed in as <strong>Tokens</strong>')
  })

  test('cross-site form posts are refused; actions want POST; unknown pages are 404', async () => {
    const browser = new Browser()
    const crossSite = await browser.send('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'cross-site' },
      body: 'name=mallory',
    })
    expect(crossSite.status).toBe(403)
    const foreign = await browser.send('/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example' },
      body: 'name=mallory',
    })
    expect(foreign.status).toBe(403)
    expect((await browser.get('/login')).status).toBe(405)
    expect((await browser.get('/nowhere')).status).toBe(404)
  })
})

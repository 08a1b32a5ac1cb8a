// The CSRF check over real HTTP, through withSessions: every line of the CSRF part of SECURITY.md and
// issue 8. A small app makes tokens on GET and changes state on unsafe requests; a cookie jar plays
// the browser, and the fetch metadata a browser would send is set by hand.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer, request as httpRequest } from 'node:http'
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterEach, describe, expect, test } from 'vitest'
import type { NodeAdapterOptions } from '../src/adapters/node.js'
import { readBody, withSessions } from '../src/adapters/node.js'
import type { SessionManagerOptions } from '../src/core/options.js'
import type { CsrfOptions, Session } from '../src/index.js'
import { CsrfError, createSessionManager, generateKey, ManualClock, MemoryStore } from '../src/index.js'

type Data = { acted?: number; k?: string }

/** The app: GET pages make tokens, every other route changes the session. Answers JSON. */
async function app(req: IncomingMessage, res: ServerResponse, session: Session<Data>): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://app.invalid')
  const send = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify(body))
  }
  switch (url.pathname) {
    case '/form':
      return send(200, { token: session.csrfToken(), stored: !session.isNew })
    case '/form-stream': {
      // Headers set one by one and the body streamed: the commit's headers join them (applyCommitHeaders).
      const token = session.csrfToken()
      res.setHeader('content-type', 'application/json')
      res.setHeader('set-cookie', 'theme=dark; Path=/')
      res.write('{"token":')
      res.end(`${JSON.stringify(token)}}`)
      return
    }
    case '/tokens':
      return send(200, { a: session.csrfToken(), b: session.csrfToken() })
    case '/store':
      session.set('k', 'v')
      return send(200, { token: session.csrfToken() })
    case '/state':
      return send(200, { acted: session.get('acted') ?? 0, userId: session.userId, stored: !session.isNew })
    case '/login':
      session.login(url.searchParams.get('user') ?? 'alice')
      return send(200, { userId: session.userId })
    case '/logout':
      session.logout()
      return send(200, {})
    case '/echo': {
      const body = await readBody(req)
      return send(200, { body: body.toString('latin1') })
    }
    case '/echo-stream': {
      // The stream itself, as a handler that knows nothing of latchkey would read it.
      const chunks: Buffer[] = []
      for await (const chunk of req) chunks.push(chunk as Buffer)
      return send(200, { body: Buffer.concat(chunks).toString('latin1') })
    }
    default: {
      const acted = session.update('acted', (n = 0) => n + 1)
      return send(200, { acted, method: req.method })
    }
  }
}

interface Started {
  readonly url: string
  readonly port: number
  readonly manager: ReturnType<typeof createSessionManager<Data>>
  readonly store: MemoryStore
  readonly clock: ManualClock
  readonly errors: unknown[]
  browser(): Browser
}

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** Answers a failed check with its reason as JSON, so tests can tell the reasons apart. */
const reasonAsJson: NonNullable<NodeAdapterOptions<Data>['onCsrfError']> = (error, _req, res) => {
  res.writeHead(error.status, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ reason: error.reason, csrf: error instanceof CsrfError }))
}

interface StartOptions {
  csrf?: CsrfOptions | false
  manager?: Partial<SessionManagerOptions>
  onCsrfError?: NodeAdapterOptions<Data>['onCsrfError'] | null
  tls?: { key: Buffer; cert: Buffer }
}

async function start(options: StartOptions = {}): Promise<Started> {
  const clock = new ManualClock()
  const store = new MemoryStore({ clock })
  const manager = createSessionManager<Data>({
    cookie: { secure: false },
    ...options.manager,
    store,
    keys: (options.manager?.keys as string[] | undefined) ?? [generateKey()],
    clock,
  })
  const errors: unknown[] = []
  const adapterOptions: NodeAdapterOptions<Data> = { onError: (error) => errors.push(error) }
  if (options.csrf !== undefined) adapterOptions.csrf = options.csrf
  if (options.onCsrfError !== null) adapterOptions.onCsrfError = options.onCsrfError ?? reasonAsJson
  const handler = withSessions(manager, app, adapterOptions)
  const server: Server = options.tls ? createHttpsServer(options.tls, handler) : createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`
  cleanups.push(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await manager.close()
  })
  return { url, port, manager, store, clock, errors, browser: () => new Browser(url) }
}

/** `start(options)`, and a browser on it whose session is stored (its tokens are that session's). */
async function startStored(options: StartOptions = {}): Promise<{ s: Started; browser: Browser }> {
  const s = await start(options)
  const browser = s.browser()
  await browser.stored()
  return { s, browser }
}

interface Answer {
  readonly status: number
  readonly body: Record<string, unknown>
  readonly setCookies: string[]
  readonly headers: Headers
}

/** A cookie jar over fetch: keeps every cookie it is given (and drops cleared ones), redirects not followed. */
class Browser {
  readonly cookies = new Map<string, string>()

  constructor(readonly base: string) {}

  get cookieHeader(): string | undefined {
    if (this.cookies.size === 0) return undefined
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  }

  async send(
    path: string,
    init: { method?: string; headers?: Record<string, string>; body?: RequestInit['body'] } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...init.headers }
    const cookie = this.cookieHeader
    if (cookie !== undefined && headers.cookie === undefined) headers.cookie = cookie
    const response = await fetch(this.base + path, { ...init, headers, redirect: 'manual' })
    const setCookies = response.headers.getSetCookie()
    for (const raw of setCookies) {
      const [pair = ''] = raw.split(';')
      const at = pair.indexOf('=')
      const name = pair.slice(0, at).trim()
      const value = pair.slice(at + 1).trim()
      if (/;\s*max-age=0(;|$)/i.test(raw) || value === '') this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
    const text = await response.text()
    const body = text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : { text }
    return { status: response.status, body, setCookies, headers: response.headers }
  }

  /** A POST with exactly these headers, and `body` when given. */
  post(path: string, headers: Record<string, string> = {}, body?: RequestInit['body']): Promise<Answer> {
    return this.send(
      path,
      body === undefined ? { method: 'POST', headers } : { method: 'POST', headers, body },
    )
  }

  /** A token from `GET /form`. */
  async token(): Promise<string> {
    return (await this.send('/form')).body.token as string
  }

  /** GET /store: stores a session, and answers a token of it. */
  async stored(): Promise<string> {
    return (await this.send('/store')).body.token as string
  }
}

/** What a browser's own same-origin fetch sends along. */
const SAME_ORIGIN = { 'sec-fetch-site': 'same-origin' }

function urlencoded(fields: Record<string, string>, type = 'application/x-www-form-urlencoded') {
  return { headers: { 'content-type': type }, body: new URLSearchParams(fields).toString() }
}

function multipart(fields: Record<string, string>, type = 'multipart/form-data') {
  const boundary = '----latchkeyBoundary7MA4YWxk'
  const parts = Object.entries(fields).map(
    ([name, value]) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`,
  )
  const file = `--${boundary}\r\nContent-Disposition: form-data; name="upload"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nfile contents\r\n`
  return {
    headers: { 'content-type': `${type}; boundary=${boundary}` },
    body: `${parts.join('')}${file}--${boundary}--\r\n`,
  }
}

describe('which requests are checked', () => {
  test('GET, HEAD and OPTIONS are not checked; POST, PUT, PATCH, DELETE and any other method are', async () => {
    const s = await start()
    const browser = s.browser()
    const hostile = { 'sec-fetch-site': 'cross-site', origin: 'https://evil.test' }
    for (const method of ['GET', 'HEAD', 'OPTIONS']) {
      expect((await browser.send('/act', { method, headers: hostile })).status, method).toBe(200)
    }
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'PROPFIND']) {
      const answer = await browser.send('/act', { method, headers: hostile })
      expect(answer.status, method).toBe(403)
      expect(answer.body.reason, method).toBe('cross-site')
    }
    expect((await browser.send('/state')).body.acted).toBe(3)
  })

  test('method override: a GET tunnelled to another method by _method or a header is checked', async () => {
    const { browser } = await startStored()
    const tunnels: { path: string; headers?: Record<string, string> }[] = [
      { path: '/act?_method=POST' },
      { path: '/act?_method=delete' },
      { path: '/act?%5Fmethod=PUT' },
      { path: '/act?x=1&_method=PATCH' },
      { path: '/act', headers: { 'x-http-method-override': 'DELETE' } },
      { path: '/act', headers: { 'x-http-method-override': 'post' } },
      { path: '/act', headers: { 'x-http-method': 'PUT' } },
      { path: '/act', headers: { 'x-method-override': 'PATCH' } },
    ]
    for (const { path, headers } of tunnels) {
      const crossSite = await browser.send(path, { headers: { ...headers, 'sec-fetch-site': 'cross-site' } })
      expect(crossSite.status, path).toBe(403)
      expect(crossSite.body.reason).toBe('cross-site')
      const noToken = await browser.send(path, { headers: { ...headers, ...SAME_ORIGIN } })
      expect(noToken.status, path).toBe(403)
      expect(noToken.body.reason).toBe('missing-token')
      const withToken = await browser.send(path, {
        headers: { ...headers, ...SAME_ORIGIN, 'x-csrf-token': await browser.token() },
      })
      expect(withToken.status, path).toBe(200)
    }
    expect((await browser.send('/state')).body.acted).toBe(tunnels.length)
    // A tunnel to a safe method stays a safe request.
    const safe = await browser.send('/act?_method=GET', {
      headers: { 'x-http-method-override': 'HEAD', 'sec-fetch-site': 'cross-site' },
    })
    expect(safe.status).toBe(200)
  })

  test('a POST overridden to GET by its _method field or header is still checked as a POST', async () => {
    const { browser } = await startStored()
    const form = urlencoded({ _method: 'GET' })
    const answer = await browser.post(
      '/act',
      { ...form.headers, 'x-http-method-override': 'GET', 'sec-fetch-site': 'cross-site' },
      form.body,
    )
    expect(answer.status).toBe(403)
    expect((await browser.send('/state')).body.acted).toBe(0)
  })
})

describe('layer 1: where the request comes from', () => {
  test('Sec-Fetch-Site: same-origin and none pass; cross-site and same-site fail; same-site passes when trusted', async () => {
    const { browser } = await startStored({ csrf: { trustedOrigins: ['http://admin.localhost:4000'] } })
    const cases: [Record<string, string>, number, string?][] = [
      [{ 'sec-fetch-site': 'same-origin' }, 200],
      [{ 'sec-fetch-site': 'none' }, 200],
      [{ 'sec-fetch-site': 'cross-site', origin: 'https://evil.test' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'cross-site' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'same-site', origin: 'http://localhost:4000' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'same-site' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'same-site', origin: 'http://admin.localhost:4000' }, 200],
      [{ 'sec-fetch-site': 'same-site', origin: 'http://admin.localhost:4001' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'Same-Origin' }, 403, 'cross-site'],
      [{ 'sec-fetch-site': 'nonsense' }, 403, 'cross-site'],
      // Fetch metadata is read first: a browser that sends it is believed over Origin.
      [{ 'sec-fetch-site': 'same-origin', origin: 'https://evil.test' }, 200],
    ]
    for (const [headers, status, reason] of cases) {
      const answer = await browser.post('/act', { ...headers, 'x-csrf-token': await browser.token() })
      expect(answer.status, JSON.stringify(headers)).toBe(status)
      if (reason) expect(answer.body.reason, JSON.stringify(headers)).toBe(reason)
    }
    expect((await browser.send('/state')).body.acted).toBe(4)
  })

  test('a trusted origin passes whatever Sec-Fetch-Site says, as it does without fetch metadata', async () => {
    const { browser } = await startStored({ csrf: { trustedOrigins: ['https://partner.example'] } })
    for (const headers of [
      { 'sec-fetch-site': 'cross-site', origin: 'https://partner.example' } as Record<string, string>,
      { origin: 'https://partner.example' },
    ]) {
      const answer = await browser.post('/act', { ...headers, 'x-csrf-token': await browser.token() })
      expect(answer.status).toBe(200)
    }
    // It still needs a token.
    const noToken = await browser.post('/act', {
      'sec-fetch-site': 'cross-site',
      origin: 'https://partner.example',
    })
    expect(noToken.body.reason).toBe('missing-token')
  })

  test('without fetch metadata, Origin must equal the own origin exactly: scheme, host and port', async () => {
    const { s, browser } = await startStored({ csrf: { trustedOrigins: ['https://partner.example:8443'] } })
    const own = `http://127.0.0.1:${s.port}`
    const failing = [
      `http://127.0.0.1:${s.port}.evil.test`,
      'null',
      `http://127.0.0.1:${s.port + 1}`,
      'http://127.0.0.1',
      `https://127.0.0.1:${s.port}`,
      `http://localhost:${s.port}`,
      `${own}/`,
      `HTTP://127.0.0.1:${s.port}`,
      `http://evil.test/${own}`,
      `http://127.0.0.1:${s.port}@evil.test`,
      'https://partner.example',
      'https://partner.example:8444',
      '',
    ]
    for (const origin of failing) {
      const answer = await browser.post('/act', { origin, 'x-csrf-token': await browser.token() })
      expect(answer.status, origin).toBe(403)
      expect(answer.body.reason, origin).toBe('origin-mismatch')
    }
    for (const origin of [own, 'https://partner.example:8443']) {
      const answer = await browser.post('/act', { origin, 'x-csrf-token': await browser.token() })
      expect(answer.status, origin).toBe(200)
    }
    expect((await browser.send('/state')).body.acted).toBe(2)
  })

  test('a configured origin is the own origin, whatever the Host header says', async () => {
    const { s, browser } = await startStored({ csrf: { origin: 'http://localhost:3000' } })
    const post = async (origin: string) =>
      browser.post('/act', { origin, 'x-csrf-token': await browser.token() })
    expect((await post('http://localhost:3000')).status).toBe(200)
    expect((await post('http://localhost:3000.evil.test')).body.reason).toBe('origin-mismatch')
    expect((await post(`http://127.0.0.1:${s.port}`)).body.reason).toBe('origin-mismatch')
  })

  test('the own origin comes from Host and the connection, never from X-Forwarded-* unless a proxy is trusted', async () => {
    const { s: plain, browser } = await startStored()
    const forged = {
      origin: 'https://evil.test',
      'x-forwarded-host': 'evil.test',
      'x-forwarded-proto': 'https',
    }
    const refused = await browser.post('/act', { ...forged, 'x-csrf-token': await browser.token() })
    expect(refused.body.reason).toBe('origin-mismatch')
    // The Host header a browser sends names the site it is talking to.
    const viaHost = await rawPost(plain.port, '/act', {
      host: 'app.test:8080',
      origin: 'http://app.test:8080',
      cookie: browser.cookieHeader ?? '',
      'x-csrf-token': await browser.token(),
    })
    expect(viaHost.status).toBe(200)

    const { browser: behind } = await startStored({ csrf: { trustProxy: true } })
    const proxy = { 'x-forwarded-host': 'app.example', 'x-forwarded-proto': 'https' }
    const post = async (headers: Record<string, string>) =>
      behind.post('/act', { ...headers, 'x-csrf-token': await behind.token() })
    expect((await post({ ...proxy, origin: 'https://app.example' })).status).toBe(200)
    expect((await post({ ...proxy, origin: 'http://app.example' })).body.reason).toBe('origin-mismatch')
    // The proxy's own value is the last one: a value the client put in front is not believed.
    const appended = { 'x-forwarded-host': 'evil.test, app.example', 'x-forwarded-proto': 'http, https' }
    expect((await post({ ...appended, origin: 'https://app.example' })).status).toBe(200)
    expect((await post({ ...appended, origin: 'https://evil.test' })).body.reason).toBe('origin-mismatch')
  })

  test('without Origin over HTTPS (a trusted proxy says so), Referer must name the own origin', async () => {
    const { browser } = await startStored({ csrf: { trustProxy: true } })
    const https = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example' }
    const post = async (headers: Record<string, string>) =>
      browser.post('/act', { ...https, ...headers, 'x-csrf-token': await browser.token() })
    expect((await post({ referer: 'https://app.example/form?x=1' })).status).toBe(200)
    for (const referer of [
      'https://evil.test/',
      'https://app.example.evil.test/',
      'http://app.example/form',
      'https://app.example:444/',
      'not a url',
      'about:blank',
    ]) {
      const answer = await post({ referer })
      expect(answer.status, referer).toBe(403)
      expect(answer.body.reason, referer).toBe('origin-mismatch')
    }
    // No Origin and no Referer: a non-browser client, decided by the token.
    expect((await post({})).status).toBe(200)
  })

  test('Referer over real TLS: checked without Origin; over plain HTTP it is not', async () => {
    const tls = selfSignedCertificate()
    if (tls === null) return
    const s = await start({ tls })
    const jar = new Map<string, string>()
    const send = async (headers: Record<string, string>, path = '/act', method = 'POST') => {
      const answer = await httpsSend(s.port, path, method, {
        ...headers,
        cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      })
      for (const raw of answer.setCookies) {
        const [pair = ''] = raw.split(';')
        const [name = '', value = ''] = pair.split('=')
        jar.set(name, value)
      }
      return answer
    }
    await send({}, '/store', 'GET')
    const token = async () => (await send({}, '/form', 'GET')).body.token as string
    expect((await send({ referer: `${s.url}/form`, 'x-csrf-token': await token() })).status).toBe(200)
    const foreign = await send({ referer: 'https://evil.test/', 'x-csrf-token': await token() })
    expect(foreign.status).toBe(403)
    expect(foreign.body.reason).toBe('origin-mismatch')
    expect((await send({ origin: s.url, 'x-csrf-token': await token() })).status).toBe(200)
    expect((await send({ 'x-csrf-token': await token() })).status).toBe(200)

    const { browser } = await startStored()
    const answer = await browser.post('/act', {
      referer: 'https://evil.test/',
      'x-csrf-token': await browser.token(),
    })
    expect(answer.status).toBe(200)
  })

  test('no Sec-Fetch-Site, Origin or Referer (a non-browser client): the token alone decides', async () => {
    const { browser } = await startStored()
    expect((await browser.post('/act')).body.reason).toBe('missing-token')
    expect((await browser.post('/act', { 'x-csrf-token': 'x' })).body.reason).toBe('bad-token')
    const answer = await browser.post('/act', { 'x-csrf-token': await browser.token() })
    expect(answer.status).toBe(200)
  })
})

describe('layer 2: the token', () => {
  test('from the x-csrf-token header, or the _csrf field of urlencoded and multipart forms', async () => {
    const { browser } = await startStored()
    expect(
      (await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': await browser.token() })).status,
    ).toBe(200)
    for (const form of [
      urlencoded({ _csrf: await browser.token(), name: 'x' }),
      urlencoded(
        { name: 'x', _csrf: await browser.token() },
        'application/x-www-form-urlencoded; charset=UTF-8',
      ),
      multipart({ name: 'x', _csrf: await browser.token() }),
    ]) {
      const answer = await browser.post('/act', { ...form.headers, ...SAME_ORIGIN }, form.body)
      expect(answer.status, form.headers['content-type']).toBe(200)
    }
    expect((await browser.send('/state')).body.acted).toBe(4)
  })

  test('never from the query string', async () => {
    const { browser } = await startStored()
    const token = await browser.token()
    const answer = await browser.post(
      `/act?_csrf=${encodeURIComponent(token)}&x-csrf-token=${token}`,
      SAME_ORIGIN,
    )
    expect(answer.status).toBe(403)
    expect(answer.body.reason).toBe('missing-token')
    const form = urlencoded({ name: 'x' })
    const withForm = await browser.post(
      `/act?_csrf=${encodeURIComponent(token)}`,
      { ...form.headers, ...SAME_ORIGIN },
      form.body,
    )
    expect(withForm.body.reason).toBe('missing-token')
    expect((await browser.send('/state')).body.acted).toBe(0)
  })

  test('the header decides when it is there: a bad header token is not rescued by a good form field', async () => {
    const { browser } = await startStored()
    const form = urlencoded({ _csrf: await browser.token() })
    const answer = await browser.post(
      '/act',
      { ...form.headers, ...SAME_ORIGIN, 'x-csrf-token': 'forged' },
      form.body,
    )
    expect(answer.body.reason).toBe('bad-token')
  })

  test('each call makes another token, and all of them pass', async () => {
    const { browser } = await startStored()
    const { a, b } = (await browser.send('/tokens')).body as { a: string; b: string }
    const c = await browser.token()
    expect(new Set([a, b, c]).size).toBe(3)
    for (const token of [a, b, c, a]) {
      const answer = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': token })
      expect(answer.status).toBe(200)
    }
  })

  test("a token of another session fails, and so does one of another browser's pre-session cookie", async () => {
    const s = await start()
    const alice = s.browser()
    const mallory = s.browser()
    await alice.stored()
    await mallory.stored()
    const answer = await alice.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': await mallory.token() })
    expect(answer.body.reason).toBe('bad-token')

    const anonymous = s.browser()
    await anonymous.token()
    const stranger = s.browser()
    const strangers = await stranger.token()
    const login = await anonymous.post('/login', { ...SAME_ORIGIN, 'x-csrf-token': strangers })
    expect(login.body.reason).toBe('bad-token')
    // The same token with another manager's keys (another app) fails as well.
    const { browser: elsewhere } = await startStored()
    expect(
      (await alice.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': await elsewhere.token() })).body.reason,
    ).toBe('bad-token')
  })

  test('malformed tokens fail with 403, never an exception (property-based)', async () => {
    const { s, browser } = await startStored()
    const good = await browser.token()
    const printable = fc.stringMatching(/^[\x21-\x7e]{0,200}$/)
    const nearMiss = fc
      .tuple(fc.nat({ max: good.length - 1 }), fc.constantFrom(...'ABCabc012-_+/=.'))
      .map(([at, char]) => good.slice(0, at) + char + good.slice(at + 1))
      .filter((token) => token !== good)
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(printable, nearMiss, fc.constant(`${good}A`), fc.constant(good.slice(1))),
        async (token) => {
          const form = urlencoded({ _csrf: token })
          const answer = await browser.post('/act', { ...form.headers, ...SAME_ORIGIN }, form.body)
          expect(answer.status).toBe(403)
          expect(['bad-token', 'missing-token']).toContain(answer.body.reason)
        },
      ),
      { numRuns: 150 },
    )
    expect(s.errors).toEqual([])
    expect((await browser.send('/state')).body.acted).toBe(0)
  })

  test('the secret rotates at login: a token made before signing in fails after it', async () => {
    const s = await start()
    const browser = s.browser()
    const before = await browser.stored()
    const login = await browser.post('/login', { ...SAME_ORIGIN, 'x-csrf-token': before })
    expect(login.status).toBe(200)
    const stale = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': before })
    expect(stale.body.reason).toBe('bad-token')
    const fresh = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': await browser.token() })
    expect(fresh.status).toBe(200)
    // And at logout.
    const signedIn = await browser.token()
    await browser.post('/logout', { ...SAME_ORIGIN, 'x-csrf-token': signedIn })
    const afterLogout = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': signedIn })
    expect(afterLogout.body.reason).toBe('bad-token')
  })

  test('tokens survive a key rotation and an ID renewal; a removed key voids them', async () => {
    const [oldKey, newKey] = [generateKey(), generateKey()]
    const { s: first, browser } = await startStored({
      manager: { keys: [oldKey], renewalIntervalMs: 60_000 },
    })
    const token = await browser.token()
    expect(first.manager.verifyCsrfToken(await sessionOf(first, browser), token)).toBe(true)
    // The same store read by a manager whose first key is new: the old key still opens and verifies.
    const rotated = createSessionManager<Data>({
      cookie: { secure: false },
      store: first.store,
      keys: [newKey, oldKey],
      clock: first.clock,
    })
    expect(rotated.verifyCsrfToken(await sessionOf(first, browser, rotated), token)).toBe(true)
    const removed = createSessionManager<Data>({
      cookie: { secure: false },
      store: first.store,
      keys: [newKey],
      clock: first.clock,
    })
    // Without the old key the record does not open at all: a fresh session, no secret, the token fails.
    expect(removed.verifyCsrfToken(await sessionOf(first, browser, removed), token)).toBe(false)

    first.clock.advance(60_001)
    const before = browser.cookies.get('sid')
    await browser.send('/state')
    expect(browser.cookies.get('sid')).not.toBe(before)
    const answer = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': token })
    expect(answer.status).toBe(200)
  })
})

/** The session `browser`'s cookies name, loaded by `manager` (default: the server's). */
async function sessionOf(s: Started, browser: Browser, manager = s.manager): Promise<Session<Data>> {
  return manager.load({ cookie: browser.cookieHeader })
}

describe('the login form, before any session', () => {
  test('viewing forms stores no session: the secret waits in a short-lived sealed cookie', async () => {
    const s = await start()
    const browser = s.browser()
    const first = await browser.send('/form')
    expect(first.body.stored).toBe(false)
    expect(first.headers.get('cache-control')).toBe('no-store')
    expect(first.headers.get('vary')).toBe('Cookie')
    expect(first.setCookies).toHaveLength(1)
    const cookie = first.setCookies[0] as string
    expect(cookie).toMatch(/^csrf=[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]+; /)
    expect(cookie).toMatch(/; Max-Age=7200(;|$)/)
    expect(cookie).toMatch(/; Path=\/(;|$)/)
    expect(cookie).toMatch(/; HttpOnly(;|$)/)
    expect(cookie).toMatch(/; SameSite=Lax(;|$)/)
    expect(cookie).not.toMatch(/Domain=/i)
    // The secret is sealed: the token's bytes and the cookie's have nothing readable in common.
    expect(browser.cookies.has('sid')).toBe(false)
    for (let i = 0; i < 5; i++) {
      const again = await browser.send('/form')
      // The cookie is kept, not re-issued, while it is fresh; each page still gets its own token.
      expect(again.setCookies).toEqual([])
      expect(again.headers.get('cache-control')).toBe('no-store')
    }
    expect(await s.store.count()).toBe(0)
  })

  test('the login POST passes with the token and its cookie, fails without either, and stores nothing when it fails', async () => {
    const s = await start()
    const browser = s.browser()
    const token = await browser.token()
    const noToken = await browser.post('/login', SAME_ORIGIN)
    expect(noToken.body.reason).toBe('missing-token')
    const noCookie = await browser.post('/login', { ...SAME_ORIGIN, cookie: '', 'x-csrf-token': token })
    expect(noCookie.body.reason).toBe('bad-token')
    const crossSite = await browser.post('/login', { 'sec-fetch-site': 'cross-site', 'x-csrf-token': token })
    expect(crossSite.body.reason).toBe('cross-site')
    expect(await s.store.count()).toBe(0)

    const form = urlencoded({ user: 'ada', _csrf: token })
    const login = await browser.post('/login', { ...form.headers, ...SAME_ORIGIN }, form.body)
    expect(login.status).toBe(200)
    expect(login.body.userId).toBe('alice')
    // The signed-in session and its pending notice of a timeout (session.endedBecause).
    expect(await s.store.count()).toBe(2)
    // The session has its own secret now: the pre-session cookie is cleared, and its token is spent.
    const cleared = login.setCookies.find((raw) => raw.startsWith('csrf='))
    expect(cleared).toMatch(/Max-Age=0/)
    expect(browser.cookies.has('csrf')).toBe(false)
    const replay = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': token })
    expect(replay.body.reason).toBe('bad-token')
  })

  test("the pre-session cookie joins the handler's own cookies, however it writes its response", async () => {
    const s = await start()
    const browser = s.browser()
    const answer = await browser.send('/form-stream')
    expect(answer.setCookies.map((raw) => raw.split('=')[0])).toEqual(['theme', 'csrf'])
    expect(answer.headers.get('cache-control')).toBe('no-store')
    const post = await browser.post('/login', { ...SAME_ORIGIN, 'x-csrf-token': answer.body.token as string })
    expect(post.status).toBe(200)
  })

  test('a pre-session token stays valid when the session is stored later (the session adopts the secret)', async () => {
    const s = await start()
    const browser = s.browser()
    const early = await browser.token()
    const stored = await browser.send('/store')
    expect(stored.setCookies.some((raw) => raw.startsWith('sid='))).toBe(true)
    expect(stored.setCookies.find((raw) => raw.startsWith('csrf='))).toMatch(/Max-Age=0/)
    const answer = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': early })
    expect(answer.status).toBe(200)
  })

  test('the pre-session secret expires by the server clock; an aging cookie is re-issued when a form is shown', async () => {
    const s = await start()
    const browser = s.browser()
    const token = await browser.token()
    const sealed = browser.cookies.get('csrf')
    s.clock.advance(3_600_001)
    const aging = await browser.send('/form')
    expect(aging.setCookies).toHaveLength(1)
    expect(browser.cookies.get('csrf')).not.toBe(sealed)
    // The same secret, a new deadline: the first token still passes.
    const early = await browser.post('/act', { ...SAME_ORIGIN, 'x-csrf-token': token })
    expect(early.status).toBe(200)

    const late = s.browser()
    const lateToken = await late.token()
    const lateCookie = late.cookies.get('csrf') as string
    s.clock.advance(7_200_000)
    // A cookie replayed past its deadline opens, but is refused, and cleared.
    const expired = await late.post('/login', {
      ...SAME_ORIGIN,
      cookie: `csrf=${lateCookie}`,
      'x-csrf-token': lateToken,
    })
    expect(expired.body.reason).toBe('bad-token')
    expect(expired.setCookies.find((raw) => raw.startsWith('csrf='))).toMatch(/Max-Age=0/)
    expect(late.cookies.has('sid')).toBe(false)
  })

  test('a tampered, foreign or duplicated pre-session cookie counts as none and is cleared', async () => {
    const s = await start()
    const browser = s.browser()
    const token = await browser.token()
    const sealed = browser.cookies.get('csrf') as string
    const flipped = `${sealed.slice(0, -2)}${sealed.at(-2) === 'A' ? 'B' : 'A'}${sealed.at(-1)}`
    const other = await start()
    const foreign = other.browser()
    await foreign.token()
    for (const cookie of [
      `csrf=${flipped}`,
      `csrf=${foreign.cookies.get('csrf')}`,
      `csrf=${sealed}; csrf=${sealed}`,
      'csrf=garbage',
    ]) {
      const answer = await browser.post('/act', { ...SAME_ORIGIN, cookie, 'x-csrf-token': token })
      expect(answer.body.reason, cookie).toBe('bad-token')
      expect(
        answer.setCookies.find((raw) => raw.startsWith('csrf=')),
        cookie,
      ).toMatch(/Max-Age=0/)
    }
    expect(s.errors).toEqual([])
  })

  test('with a secure session cookie the pre-session cookie is __Host-csrf; its name and lifetime are options', async () => {
    const secure = await start({ manager: { cookie: {} } })
    const first = await secure.browser().send('/form')
    expect(first.setCookies[0]).toMatch(
      /^__Host-csrf=.*; Max-Age=7200; Path=\/; HttpOnly; Secure; SameSite=Lax$/,
    )
    const custom = await start({
      manager: {
        cookie: { secure: false, sameSite: 'strict' },
        csrfCookie: { name: 'pre', maxAgeMs: 600_000 },
      },
    })
    const page = await custom.browser().send('/form')
    expect(page.setCookies[0]).toMatch(/^pre=.*; Max-Age=600; Path=\/; HttpOnly; SameSite=Strict$/)
  })
})

describe('the Content-Type never decides whether a request is checked', () => {
  const types = [
    'text/plain',
    'TEXT/PLAIN;charset=UTF-8',
    'Application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/json',
    'application/csp-report',
    null,
  ]

  test('cross-site: refused for every type, before any body is looked at', async () => {
    const { browser } = await startStored()
    for (const type of types) {
      const answer = await browser.post(
        '/act',
        { 'sec-fetch-site': 'cross-site', ...(type === null ? {} : { 'content-type': type }) },
        type === null ? Buffer.from('{"a":1}') : `_csrf=${await browser.token()}&{"a":1}`,
      )
      expect(answer.status, String(type)).toBe(403)
      expect(answer.body.reason).toBe('cross-site')
    }
    expect((await browser.send('/state')).body.acted).toBe(0)
  })

  test('same origin without a header token: every type needs one; a text/plain body smuggling _csrf is not a form', async () => {
    const { browser } = await startStored()
    for (const type of types) {
      const answer = await browser.post(
        '/act',
        { ...SAME_ORIGIN, ...(type === null ? {} : { 'content-type': type }) },
        type === null ? Buffer.from('x') : 'name=x',
      )
      expect(answer.status, String(type)).toBe(403)
      expect(answer.body.reason, String(type)).toBe('missing-token')
    }
    for (const type of ['text/plain', 'TEXT/PLAIN;charset=UTF-8', 'application/json']) {
      const answer = await browser.post(
        '/act',
        { ...SAME_ORIGIN, 'content-type': type },
        `_csrf=${await browser.token()}`,
      )
      expect(answer.body.reason, type).toBe('missing-token')
    }
    // Form types are known by their essence, whatever the case: their _csrf field is read.
    const upper = urlencoded(
      { _csrf: await browser.token() },
      'Application/X-WWW-Form-Urlencoded ; charset=utf-8',
    )
    expect((await browser.post('/act', { ...upper.headers, ...SAME_ORIGIN }, upper.body)).status).toBe(200)
    const multi = multipart({ _csrf: await browser.token() }, 'MULTIPART/Form-Data')
    expect((await browser.post('/act', { ...multi.headers, ...SAME_ORIGIN }, multi.body)).status).toBe(200)
    // Any type passes with the header token.
    for (const type of types) {
      const answer = await browser.post(
        '/act',
        {
          ...SAME_ORIGIN,
          'x-csrf-token': await browser.token(),
          ...(type === null ? {} : { 'content-type': type }),
        },
        'x',
      )
      expect(answer.status, String(type)).toBe(200)
    }
    expect((await browser.send('/state')).body.acted).toBe(2 + types.length)
  })
})

describe('bodies', () => {
  test('a form body the check read is left for the handler (readBody, or the stream itself), urlencoded and multipart', async () => {
    const { browser } = await startStored()
    for (const form of [
      urlencoded({ _csrf: await browser.token(), name: 'ada' }),
      multipart({ _csrf: await browser.token(), name: 'ada' }),
    ]) {
      for (const path of ['/echo', '/echo-stream']) {
        const answer = await browser.post(path, { ...form.headers, ...SAME_ORIGIN }, form.body)
        expect(answer.status).toBe(200)
        expect(answer.body.body).toBe(form.body)
      }
    }
    // Not read by the check (the token came in the header): readBody reads it then.
    const json = await browser.post(
      '/echo',
      { ...SAME_ORIGIN, 'content-type': 'application/json', 'x-csrf-token': await browser.token() },
      '{"a":1}',
    )
    expect(json.body.body).toBe('{"a":1}')
  })

  test('an oversized form body is refused with 413 before it is read, declared or streamed', async () => {
    const { s, browser } = await startStored({ csrf: { maxBodyBytes: 1024 } })
    const token = await browser.token()
    const formHeaders = {
      ...SAME_ORIGIN,
      cookie: browser.cookieHeader ?? '',
      'content-type': 'application/x-www-form-urlencoded',
    }
    // Declared: 10 MB announced, a few bytes sent; the answer comes at once, the rest is never awaited.
    const declared = await rawPost(
      s.port,
      '/act',
      { ...formHeaders, 'content-length': String(10_000_000) },
      `_csrf=${token}`,
      false,
    )
    expect(declared.status).toBe(413)
    expect(declared.headers.connection).toBe('close')
    // Streamed (chunked, no length): refused once past the limit.
    const streamed = await rawPost(s.port, '/act', formHeaders, `_csrf=${token}&pad=${'x'.repeat(4096)}`)
    expect(streamed.status).toBe(413)
    expect(JSON.parse(streamed.body)).toEqual({ reason: 'body-too-large', csrf: true })
    // With the token in the header the body is not the check's business: it reaches the handler.
    const big = await browser.post(
      '/act',
      { ...SAME_ORIGIN, 'content-type': 'application/x-www-form-urlencoded', 'x-csrf-token': token },
      `pad=${'x'.repeat(4096)}`,
    )
    expect(big.status).toBe(200)
    expect((await browser.send('/state')).body.acted).toBe(1)
  })
})

describe('opting out, and rendering a failure', () => {
  test('an exempt route (a webhook) is not checked; its neighbours are', async () => {
    const s = await start({ csrf: { exempt: ['/hooks/*', '/ping'] } })
    const browser = s.browser()
    const hostile = { 'sec-fetch-site': 'cross-site', origin: 'https://evil.test' }
    expect((await browser.post('/hooks/stripe', hostile)).status).toBe(200)
    expect((await browser.post('/ping?x=1', hostile)).status).toBe(200)
    for (const path of [
      '/hooks',
      '/hooks/',
      '/pingx',
      '/act',
      '/hooks/%2e%2e/act',
      '/hooks/../act',
      '/HOOKS/x',
    ]) {
      const answer = await rawPost(s.port, path, hostile)
      expect(answer.status, path).toBe(403)
    }
    const predicate = await start({
      csrf: { exempt: (request) => request.header('x-hub-signature') !== undefined },
    })
    const hook = predicate.browser()
    expect((await hook.post('/act', { ...hostile, 'x-hub-signature': 'sha256=x' })).status).toBe(200)
    expect((await hook.post('/act', hostile)).status).toBe(403)
  })

  test('csrf: false turns the check off for the whole app', async () => {
    const s = await start({ csrf: false })
    const browser = s.browser()
    const answer = await browser.post('/act', { 'sec-fetch-site': 'cross-site' })
    expect(answer.status).toBe(200)
  })

  test('the default answer is a plain 403 naming the reason, never cached, and the handler does not run', async () => {
    const { s, browser } = await startStored({ onCsrfError: null })
    const answer = await browser.post('/act', { 'sec-fetch-site': 'cross-site' })
    expect(answer.status).toBe(403)
    expect(answer.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(answer.headers.get('cache-control')).toBe('no-store')
    expect(answer.body.text).toContain('(cross-site)')
    expect((await browser.send('/state')).body.acted).toBe(0)
    expect(s.errors).toEqual([])
  })

  test('onCsrfError renders the failure, with the session at hand to show the form again', async () => {
    const s = await start({
      onCsrfError: (error, _req, res, session) => {
        // The token first: for a visitor without a stored session its cookie leaves with the headers.
        const token = session.csrfToken()
        res.writeHead(error.status, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ reason: error.reason, code: error.code, token }))
      },
    })
    const browser = s.browser()
    const answer = await browser.post('/login', SAME_ORIGIN)
    expect(answer.status).toBe(403)
    expect(answer.body).toMatchObject({ reason: 'missing-token', code: 'ERR_LATCHKEY_CSRF' })
    // The new form's token works (its pre-session cookie came with the 403).
    const retry = await browser.post('/login', {
      ...SAME_ORIGIN,
      'x-csrf-token': answer.body.token as string,
    })
    expect(retry.status).toBe(200)
  })

  test('an onCsrfError that throws gets the 500 of any failing handler', async () => {
    const s = await start({
      onCsrfError: () => {
        throw new Error('renderer broke')
      },
    })
    const answer = await s.browser().post('/act')
    expect(answer.status).toBe(500)
    expect(s.errors.splice(0)).toHaveLength(1)
  })
})

/**
 * A POST over a plain socket with exactly these headers (fetch cannot set Host, and always finishes
 * its body): `body` is sent chunked when no content-length is given, and left unfinished when
 * `finish` is false. Resolves the status, headers and body of the answer.
 */
function rawPost(
  port: number,
  path: string,
  headers: Record<string, string>,
  body = '',
  finish = true,
): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({
      host: '127.0.0.1',
      port,
      path,
      method: 'POST',
      headers,
      setHost: headers.host === undefined,
    })
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => {
        const flat: Record<string, string> = {}
        for (const [name, value] of Object.entries(response.headers)) flat[name] = String(value)
        resolve({ status: response.statusCode ?? 0, headers: flat, body: Buffer.concat(chunks).toString() })
        request.destroy()
      })
    })
    request.on('error', (error) => {
      if ((error as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(error)
    })
    if (body !== '') request.write(body)
    if (finish) request.end()
  })
}

/** A request over HTTPS to a self-signed loopback server. */
function httpsSend(
  port: number,
  path: string,
  method: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown>; setCookies: string[] }> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest({
      host: '127.0.0.1',
      port,
      path,
      method,
      headers,
      rejectUnauthorized: false,
    })
    request.on('response', (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () =>
        resolve({
          status: response.statusCode ?? 0,
          body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>,
          setCookies: response.headers['set-cookie'] ?? [],
        }),
      )
    })
    request.on('error', reject)
    request.end()
  })
}

/** A throwaway self-signed certificate for 127.0.0.1 (openssl), or `null` where openssl is missing. */
function selfSignedCertificate(): { key: Buffer; cert: Buffer } | null {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-tls-'))
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'key.pem',
        '-out',
        'cert.pem',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
      ],
      { cwd: dir, stdio: 'ignore' },
    )
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } catch {
    return null
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

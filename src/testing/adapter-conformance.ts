/**
 * The adapter conformance suite: every rule a latchkey front door (node:http, Express, Fastify, Hono,
 * Koa, or a third-party adapter) must keep, checked over real HTTP against a small app.
 *
 * The suite owns the app: its routes ({@link ConformanceApp.handle}), its manager (a `MemoryStore`
 * seen through a wrapper that can slow, hold or fail the store, on a {@link ManualClock}). A front door
 * only provides {@link AdapterConformanceOptions.serve}: a tiny app of its framework that mounts the
 * adapter with the manager and options it is given, hands every request to `handle` with the
 * session the adapter loaded, sends the reply in the framework's own way (JSON, a redirect, a
 * streamed body, a thrown error), and reports the errors it hears to `onError`.
 *
 * It is runner-agnostic, like the store suite: assertions use `node:assert/strict`,
 * {@link adapterScenarios} are plain async functions, and {@link defineAdapterConformance} registers
 * them through whatever `describe`/`test` pair it is handed.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { request as httpRequest } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseSetCookie, type SetCookie } from 'cookie'
import { ManualClock } from '../core/clock.js'
import { generateKey } from '../core/crypto.js'
import { generateId, storeKeyOf } from '../core/id.js'
import { noticeKeyOf } from '../core/lifecycle/notice.js'
import { createSessionManager, type SessionManager } from '../core/manager.js'
import type { SessionManagerOptions } from '../core/options.js'
import type { Session } from '../core/session.js'
import type { CsrfOptions } from '../csrf/index.js'
import { isCsrfError } from '../csrf/index.js'
import { MemoryStore } from '../stores/memory/index.js'
import type { ConformanceRunner } from './conformance.js'

/** The session data of the conformance app. */
export type ConformanceData = Record<string, unknown>

/** A request as the front door hands it to {@link ConformanceApp.handle}. */
export interface ConformanceRequest {
  /** The request method, as received (`HEAD` included). */
  readonly method: string
  /** The path and query string, as in the request line. */
  readonly url: string
  /** The session the adapter loaded. */
  readonly session: Session<ConformanceData>
  /** The form fields of the body as the app's body parser read them; `{}` when there are none. */
  form(): Promise<Record<string, unknown>> | Record<string, unknown>
  /**
   * node's response, where the framework lets the front door reach it (`res`, `reply.raw`, `ctx.res`,
   * Hono's `c.env.outgoing`): the backpressure scenarios listen to its 'drain' and 'close'.
   */
  readonly nodeResponse?: NodeResponseEvents
}

/**
 * What the backpressure scenarios need of node's response (`ServerResponse` has it): its 'drain' and
 * 'close' events. Typed by shape, so `latchkey/testing` compiles without node's types.
 */
export interface NodeResponseEvents {
  on(event: 'drain', listener: () => void): unknown
  once(event: 'close', listener: () => void): unknown
}

/** What the app sends; the front door sends it in its framework's own way. */
export type ConformanceReply =
  /** A JSON body with `status`; `headers` set and `cookies` appended (as `Set-Cookie`) by the app. */
  | {
      readonly kind: 'json'
      readonly status: number
      readonly body: unknown
      readonly headers?: Readonly<Record<string, string>>
      readonly cookies?: readonly string[]
    }
  /** A `303 See Other` to `location`, by the framework's redirect. */
  | { readonly kind: 'redirect'; readonly location: string }
  /**
   * A `text/plain` body streamed from `body()`, chunk by chunk as it yields (pauses between). When
   * the iterator throws, the handler fails after its response started: let the framework deal with it.
   */
  | { readonly kind: 'stream'; body(): AsyncIterable<string> }
  /** The handler throws `error` before it responds (in an async handler: rejects). */
  | { readonly kind: 'throw'; readonly error: Error }

/** Adapter options the front door passes to its adapter as they are. */
export interface ConformanceAdapterOptions {
  /** Errors the adapter answers itself, where it has such an option: pass {@link ConformanceApp.onError}. */
  readonly onError?: (error: unknown) => void
  /** The CSRF check: `false` in the session scenarios, options in the CSRF scenarios. */
  readonly csrf: CsrfOptions | false
}

/** The app a front door serves for one scenario. */
export interface ConformanceApp {
  /** The session manager to mount the adapter with. */
  readonly manager: SessionManager<ConformanceData>
  /** Options for the adapter, to pass as they are (`onError` included). */
  readonly adapterOptions: ConformanceAdapterOptions
  /** Answers every request (every method, every path), after the adapter loaded its session. */
  handle(request: ConformanceRequest): Promise<ConformanceReply>
  /** The scenario wants CsrfErrors caught and rendered by the app ({@link csrfReply}). */
  readonly catchesCsrf: boolean
  /**
   * What the app's error handling sends for `error` when it catches it, the framework's way (an
   * error middleware, `setErrorHandler`, `app.onError`, the node adapter's `onCsrfError`): a reply for
   * a `CsrfError` the scenario wants caught, `null` for anything to leave to the framework.
   */
  csrfReply(error: unknown): ConformanceReply | null
  /** Hears the errors the front door hears: the adapter's `onError`, the framework's error handler or event. */
  onError(error: unknown): void
}

/** A front door serving a {@link ConformanceApp}. */
export interface ServedConformanceApp {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string
  /** Stops the server (dropping open connections). */
  close(): Promise<void>
}

/** How the suite reaches a front door. */
export interface AdapterConformanceOptions {
  /** Shown in the suite name: `${name} adapter conformance`. */
  name: string
  /** Serves `app` through the front door on a loopback port; called once per scenario. */
  serve(app: ConformanceApp): Promise<ServedConformanceApp>
}

/** One scenario: resolves when the front door conforms, rejects with an assertion error otherwise. */
export type AdapterScenario = (options: AdapterConformanceOptions) => Promise<void>

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const STORE_ERROR = 'ERR_LATCHKEY_STORE'
const BASE = 'http://conformance.test'

// ---------------------------------------------------------------------------------------------
// The store under the app: a MemoryStore that the scenarios can slow down, hold, or take down.

const WRITES = new Set(['create', 'update', 'touch', 'destroy'])

/** Control over the store of a scenario. */
interface StoreControl {
  /** Every call fails (rejects, or throws for the synchronous ones): the backend is down. */
  down: boolean
  /** Only writes (create, update, touch, destroy) fail. */
  writesDown: boolean
  /** Each asynchronous write waits this long first (a slow network store). */
  writeDelayMs: number
  /** Store operations called so far, in order (`getSync` counts as `get`). */
  readonly calls: string[]
  /** Holds the next call of `operation` once the store answered it, until `release()`. */
  hold(operation: string): { reached: Promise<void>; release(): void }
  /** Releases every held call (cleanup). */
  releaseAll(): void
}

function controlled(store: MemoryStore, asyncOnly: boolean): { store: MemoryStore; control: StoreControl } {
  const holds = new Map<string, { arrive(): void; gate: Promise<void> }>()
  const releases: (() => void)[] = []
  const control: StoreControl = {
    down: false,
    writesDown: false,
    writeDelayMs: 0,
    calls: [],
    hold(operation) {
      let arrive = (): void => {}
      let release = (): void => {}
      const reached = new Promise<void>((resolve) => {
        arrive = resolve
      })
      const gate = new Promise<void>((resolve) => {
        release = resolve
      })
      holds.set(operation, { arrive, gate })
      releases.push(release)
      return { reached, release }
    },
    releaseAll() {
      holds.clear()
      for (const release of releases) release()
    },
  }
  const call = (name: string, method: (...args: unknown[]) => unknown, args: unknown[]): unknown => {
    const sync = name.endsWith('Sync')
    const operation = sync ? name.slice(0, -4) : name
    control.calls.push(operation)
    if (control.down || (control.writesDown && WRITES.has(operation))) {
      const error = new Error(`${operation}: connection refused (the conformance suite took the store down)`)
      if (sync) throw error
      return Promise.reject(error)
    }
    if (sync) return method.apply(store, args)
    const held = holds.get(operation)
    if (held) holds.delete(operation)
    const delay = WRITES.has(operation) ? control.writeDelayMs : 0
    const run =
      delay > 0
        ? sleep(delay).then(() => method.apply(store, args))
        : Promise.resolve(method.apply(store, args))
    if (!held) return run
    return run.then((value) => {
      held.arrive()
      return held.gate.then(() => value)
    })
  }
  const proxy = new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target)
      if (typeof property !== 'string' || typeof value !== 'function' || property === 'constructor')
        return value
      // Without the synchronous methods the manager takes the asynchronous path, which a hold can stop.
      if (asyncOnly && property.endsWith('Sync')) return undefined
      return (...args: unknown[]) => call(property, value as (...args: unknown[]) => unknown, args)
    },
  })
  return { store: proxy, control }
}

// ---------------------------------------------------------------------------------------------
// A browser: a cookie jar and fetch, redirects not followed.

/** What `/state` answers. */
interface StateBody {
  isNew: boolean
  userId: string | null
  value: unknown
}

class Browser {
  /** Cookies held, by name. */
  readonly jar = new Map<string, string>()
  /** The `Set-Cookie` headers of the last response, parsed. */
  lastSetCookies: SetCookie[] = []

  constructor(
    readonly base: string,
    readonly cookieName: string,
  ) {}

  /** The session cookie held, or `undefined`. */
  get id(): string | undefined {
    return this.jar.get(this.cookieName)
  }

  set id(value: string | undefined) {
    if (value === undefined) this.jar.delete(this.cookieName)
    else this.jar.set(this.cookieName, value)
  }

  /** A second tab: the same cookies, from now on kept apart. */
  tab(): Browser {
    const copy = new Browser(this.base, this.cookieName)
    for (const [name, value] of this.jar) copy.jar.set(name, value)
    return copy
  }

  async request(
    path: string,
    init: { method?: string; headers?: Record<string, string>; body?: string } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers }
    if (headers.cookie === undefined && this.jar.size > 0) {
      headers.cookie = [...this.jar].map(([name, value]) => `${name}=${value}`).join('; ')
    }
    const response = await fetch(this.base + path, {
      method: init.method ?? 'GET',
      headers,
      body: init.body,
      redirect: 'manual',
    })
    this.lastSetCookies = response.headers.getSetCookie().map((raw) => parseSetCookie(raw))
    for (const cookie of this.lastSetCookies) {
      if (cookie.maxAge === 0 || !cookie.value) this.jar.delete(cookie.name)
      else this.jar.set(cookie.name, cookie.value)
    }
    return response
  }

  /** A POST (the session routes change state only on unsafe methods, as an app should). */
  post(path: string, init: { headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
    return this.request(path, { ...init, method: 'POST' })
  }

  /** `/state` as this browser sees it, with `value` read under `key`. */
  async state(key = 'k'): Promise<StateBody> {
    const response = await this.request(`/state?key=${key}`)
    assert.equal(response.status, 200, `GET /state answered ${response.status}`)
    return (await response.json()) as StateBody
  }
}

// ---------------------------------------------------------------------------------------------
// The app's routes.

function json(
  status: number,
  body: unknown,
  extra: { headers?: Record<string, string>; cookies?: string[] } = {},
) {
  return { kind: 'json', status, body, ...extra } as const
}

async function* chunks(parts: readonly string[], failure?: Error): AsyncIterable<string> {
  for (const [index, part] of parts.entries()) {
    if (index > 0) await sleep(5)
    yield part
  }
  if (failure) {
    await sleep(5)
    throw failure
  }
}

/** Errors the routes throw on purpose, so a scenario can tell them from anything else. */
class RouteFailure extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RouteFailure'
  }
}

/**
 * The routes of the conformance app. State changes are on POST; `/visit` (GET and HEAD) changes the
 * session too, as a page counting visits does.
 */
async function route(request: ConformanceRequest): Promise<ConformanceReply> {
  const url = new URL(request.url, BASE)
  const q = url.searchParams
  const session = request.session
  const key = q.get('key') ?? 'k'
  const state = () =>
    json(200, { isNew: session.isNew, userId: session.userId, value: session.get(key) ?? null })
  switch (url.pathname) {
    case '/state':
      return state()
    case '/set':
      session.set(key, q.get('value') ?? 'v')
      return state()
    case '/inc':
      session.update('n', (n) => (typeof n === 'number' ? n + 1 : 1))
      return json(200, { n: session.get('n') })
    case '/login':
      session.login(q.get('user') ?? 'alice')
      return state()
    case '/login-redirect':
      session.login(q.get('user') ?? 'alice')
      return { kind: 'redirect', location: '/state' }
    case '/logout':
      session.logout()
      return state()
    case '/visit':
      session.update('visits', (n) => (typeof n === 'number' ? n + 1 : 1))
      return json(200, { visits: session.get('visits') })
    case '/own-headers':
      session.set('theme', 'dark')
      return json(
        200,
        { ok: true },
        {
          headers: { 'Cache-Control': 'public, max-age=600', Vary: 'Accept-Encoding', 'X-Tag': 'kept' },
          cookies: ['theme=dark; Path=/'],
        },
      )
    case '/stream':
      session.set('streamed', true)
      return { kind: 'stream', body: () => chunks(['part one,', 'part two']) }
    case '/stream-fail':
      session.set('streamed', true)
      return { kind: 'stream', body: () => chunks(['partial'], new RouteFailure('failed mid-stream')) }
    case '/large':
      return largeReply(request, q.get('body'))
    case '/throw':
      session.set('lost', true)
      return { kind: 'throw', error: new RouteFailure('handler failed') }
    case '/logout-throw':
      session.logout()
      return { kind: 'throw', error: new RouteFailure('failed after logout') }
    case '/logout-500':
      session.logout()
      return json(500, { error: 'failed after logout' })
    case '/login-throw':
      session.set('lost', true)
      session.login(q.get('user') ?? 'mallory')
      return { kind: 'throw', error: new RouteFailure('failed after login') }
    case '/regenerate-throw':
      session.set('lost', true)
      session.regenerate()
      return { kind: 'throw', error: new RouteFailure('failed after regenerate') }
    case '/form':
      // A page with a form: a freshly masked token on every render.
      return json(200, { token: session.csrfToken() })
    case '/echo-form':
      // The body as the app's own parser reads it after the check.
      return json(200, { fields: await request.form() })
    case '/hooks/ping':
      session.set('pinged', true)
      return json(200, { ok: true })
    default:
      return json(404, { error: 'not found' })
  }
}

// ---------------------------------------------------------------------------------------------
// One scenario's world: store, clock, manager, the served app, browsers.

interface SceneSetup {
  /** Hide the store's synchronous methods (the asynchronous load and commit). Default false. */
  asyncStore?: boolean
  /** The CSRF check's options; default `false` (the session scenarios). */
  csrf?: CsrfOptions | false
  /** The app catches CsrfErrors and answers `{ csrf: reason }` with their status. Default true. */
  catchCsrf?: boolean
  /** Manager options over the suite's defaults (`cookie: { secure: false }`, a ManualClock, a fresh key). */
  manager?: Partial<SessionManagerOptions>
}

interface Scene {
  /** The app's own origin, as a browser sends it in `Origin`. */
  readonly origin: string
  readonly clock: ManualClock
  readonly memory: MemoryStore
  readonly control: StoreControl
  readonly manager: SessionManager<ConformanceData>
  /** Errors the front door reported; a scenario takes those it expects with {@link takeErrors}. */
  readonly errors: unknown[]
  /** Paths the app handled, in order. */
  readonly handled: string[]
  browser(): Browser
  /** A browser holding a signed-in session of `user`. */
  signedIn(user?: string): Promise<Browser>
}

/** Removes and returns the errors reported so far. */
function takeErrors(scene: Scene): unknown[] {
  return scene.errors.splice(0)
}

function codeOf(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
}

async function withScene(
  options: AdapterConformanceOptions,
  setup: SceneSetup,
  body: (scene: Scene) => Promise<void>,
): Promise<void> {
  const clock = new ManualClock()
  const memory = new MemoryStore({ clock, sweepIntervalMs: 0 })
  const { store, control } = controlled(memory, setup.asyncStore ?? false)
  const manager = createSessionManager<ConformanceData>({
    cookie: { secure: false },
    keys: [generateKey()],
    ...setup.manager,
    store,
    clock,
  })
  const errors: unknown[] = []
  const handled: string[] = []
  const onError = (error: unknown) => {
    errors.push(error)
  }
  const catchCsrf = setup.catchCsrf ?? true
  const app: ConformanceApp = {
    manager,
    adapterOptions: { onError, csrf: setup.csrf ?? false },
    handle: (request) => {
      handled.push(new URL(request.url, BASE).pathname)
      return route(request)
    },
    catchesCsrf: catchCsrf,
    csrfReply: (error) =>
      catchCsrf && isCsrfError(error) ? json(error.status, { csrf: error.reason }) : null,
    onError,
  }
  const served = await options.serve(app)
  const cookieName = manager.options.cookie.name
  const browser = () => new Browser(served.url, cookieName)
  const scene: Scene = {
    origin: new URL(served.url).origin,
    clock,
    memory,
    control,
    manager,
    errors,
    handled,
    browser,
    async signedIn(user = 'alice') {
      const client = browser()
      const response = await client.post(`/login?user=${user}`)
      assert.equal(response.status, 200, `POST /login answered ${response.status}`)
      assert.ok(client.id, 'a sign-in sets the session cookie')
      return client
    },
  }
  try {
    await body(scene)
    // Let the adapter finish what it does after the last response (a late onError).
    await sleep(5)
    assert.deepEqual(errors, [], 'the front door reported errors no scenario step expected')
  } finally {
    control.releaseAll()
    await served.close()
    await manager.close()
    await memory.close()
  }
}

/** Reads a response's body; `aborted` when the connection broke before its end. */
async function bodyOf(response: Response): Promise<string> {
  try {
    return await response.text()
  } catch {
    return 'aborted'
  }
}

async function keysIn(memory: MemoryStore): Promise<string[]> {
  const keys: string[] = []
  for await (const record of memory.list()) keys.push(record.key)
  return keys
}

// ---------------------------------------------------------------------------------------------
// CSRF helpers.

/** The CSRF options of the CSRF scenarios. */
const TRUSTED = 'http://trusted.example'
const CSRF: CsrfOptions = { trustedOrigins: [TRUSTED], exempt: ['/hooks/*'], maxBodyBytes: 4096 }

/** A token rendered for `browser` (GET /form). */
async function tokenFor(browser: Browser): Promise<string> {
  const response = await browser.request('/form')
  assert.equal(response.status, 200, `GET /form answered ${response.status}`)
  const { token } = (await response.json()) as { token: string }
  assert.equal(typeof token, 'string')
  return token
}

/**
 * Posts with a valid token and each case's headers: `null` must pass (200), a reason must be refused
 * with it (403).
 */
async function assertOriginCases(
  scene: Scene,
  client: Browser,
  token: string,
  cases: readonly (readonly [Record<string, string>, string | null])[],
): Promise<void> {
  for (const [headers, reason] of cases) {
    const what = JSON.stringify(headers)
    const response = await client.post('/set?key=k&value=1', {
      headers: { ...headers, 'x-csrf-token': token },
    })
    if (reason === null) assert.equal(response.status, 200, `${what} passes`)
    else await assertRefused(scene, response, reason, what)
  }
}

/** `token` with one character changed (the second to last, six bits of the masked MAC): never equal to it. */
function tampered(token: string): string {
  return `${token.slice(0, -2)}${token.at(-2) === 'A' ? 'B' : 'A'}${token.at(-1)}`
}

/**
 * Asserts a CSRF refusal: the status, the reason the app caught (`{ csrf: reason }`), the handler not
 * run; takes the errors the front door reported, which must all be CsrfErrors.
 */
async function assertRefused(
  scene: Scene,
  response: Response,
  reason: string,
  what: string,
  status = reason === 'body-too-large' ? 413 : 403,
): Promise<void> {
  assert.equal(response.status, status, `${what}: status`)
  assert.deepEqual(await response.json(), { csrf: reason }, `${what}: the app caught a CsrfError ${reason}`)
  for (const error of takeErrors(scene)) assert.ok(isCsrfError(error), `${what}: reported ${String(error)}`)
}

/** A browser signed in through the login form: the form's token, then a POST with it. */
async function signedInWithToken(scene: Scene, user = 'alice'): Promise<Browser> {
  const client = scene.browser()
  const token = await tokenFor(client)
  const response = await client.post(`/login?user=${user}`, { headers: { 'x-csrf-token': token } })
  assert.equal(response.status, 200, `POST /login with a token answered ${response.status}`)
  assert.ok(client.id)
  return client
}

/** A multipart body of string fields, and its Content-Type (as a browser would send it). */
function multipart(
  fields: Record<string, string>,
  type = 'multipart/form-data',
): { body: string; type: string } {
  const boundary = '----latchkeyConformance7MA4YWxkTrZu0gW'
  let body = ''
  for (const [name, value] of Object.entries(fields)) {
    body += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`
  }
  return { body: `${body}--${boundary}--\r\n`, type: `${type}; boundary=${boundary}` }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/** Every scenario of the adapter suite, by name. */
export const adapterScenarios: Record<string, AdapterScenario> = {
  async 'a new session that stays empty sets no cookie and stores nothing'(options) {
    await withScene(options, {}, async ({ browser, memory }) => {
      const response = await browser().request('/state')
      assert.equal(response.status, 200)
      assert.deepEqual(response.headers.getSetCookie(), [], 'no Set-Cookie for an empty new session')
      assert.equal(response.headers.get('cache-control'), null, 'no private headers for a public response')
      assert.equal(await memory.count(), 0)
    })
  },

  async 'cookie attributes: __Host- prefix, HttpOnly, Secure, SameSite=Lax, Path=/, no Domain, not persistent'(
    options,
  ) {
    await withScene(options, { manager: { cookie: {} } }, async ({ browser }) => {
      const client = browser()
      const response = await client.post('/set?key=k&value=1')
      assert.equal(response.status, 200)
      const [cookie, ...others] = client.lastSetCookies
      assert.deepEqual(others, [], 'one Set-Cookie')
      assert.ok(cookie)
      assert.equal(cookie.name, '__Host-sid')
      assert.match(cookie.value ?? '', /^[A-Za-z0-9_-]{43}$/)
      assert.deepEqual(
        { ...cookie, value: '' },
        { name: '__Host-sid', value: '', path: '/', httpOnly: true, secure: true, sameSite: 'lax' },
        'exactly HttpOnly, Secure, SameSite=Lax, Path=/ (no Domain, Max-Age or Expires)',
      )
      assert.equal(response.headers.get('cache-control'), 'no-store')
      assert.equal(response.headers.get('vary'), 'Cookie')
    })
  },

  async 'responses with session state are private; the app’s own headers and cookies are kept'(options) {
    await withScene(options, {}, async ({ browser }) => {
      const client = browser()
      const response = await client.request('/own-headers')
      assert.equal(response.status, 200)
      const names = response.headers.getSetCookie().map((raw) => parseSetCookie(raw).name)
      assert.deepEqual(names, ['theme', client.cookieName], "the app's cookie, then the session's")
      assert.equal(response.headers.get('cache-control'), 'no-store', 'no-store wins over the app’s caching')
      assert.equal(response.headers.get('vary'), 'Accept-Encoding, Cookie')
      assert.equal(response.headers.get('x-tag'), 'kept')
      // A read-only request of a stored session is private too, and sets no cookie.
      const read = await client.request('/state')
      assert.deepEqual(read.headers.getSetCookie(), [])
      assert.equal(read.headers.get('cache-control'), 'no-store')
      assert.equal(read.headers.get('vary'), 'Cookie')
    })
  },

  async 'strict mode: an ID the server never issued is replaced, never adopted'(options) {
    await withScene(options, {}, async ({ browser, memory }) => {
      const planted = generateId()
      const client = browser()
      client.id = planted
      await client.post('/set?key=k&value=1')
      assert.ok(client.id && client.id !== planted, 'a new ID is issued')
      const keys = await keysIn(memory)
      assert.deepEqual(keys, [storeKeyOf(client.id)])
      assert.ok(!keys.includes(planted) && !keys.includes(storeKeyOf(planted)))
      // Sent on a request that saves nothing, the unknown cookie is cleared.
      const cleared = await browser().request('/state', {
        headers: { cookie: `${client.cookieName}=${generateId()}` },
      })
      const [cookie] = cleared.headers.getSetCookie().map((raw) => parseSetCookie(raw))
      assert.equal(cookie?.value, '')
      assert.equal(cookie?.maxAge, 0)
    })
  },

  async 'a malformed or doubled cookie never reaches the store and never gives a 500'(options) {
    const malformed = [
      '../../etc/passwd',
      'A'.repeat(4096),
      `${'A'.repeat(41)}*?`,
      `${'A'.repeat(40)}[a]`,
      '%00%00',
      '',
      `${'A'.repeat(42)}\u00e9`,
    ]
    await withScene(options, {}, async ({ browser, control }) => {
      const name = browser().cookieName
      for (const value of malformed) {
        const response = await browser().request('/state', {
          headers: { cookie: Buffer.from(`${name}=${value}`, 'utf8').toString('latin1') },
        })
        assert.equal(response.status, 200, `cookie ${JSON.stringify(value.slice(0, 20))}`)
        assert.deepEqual((await response.json()) as StateBody, { isNew: true, userId: null, value: null })
      }
      const doubled = await browser().request('/state', {
        headers: { cookie: `${name}=${generateId()}; ${name}=${generateId()}` },
      })
      assert.equal(doubled.status, 200)
      assert.deepEqual(control.calls, [], 'no store call for a malformed or doubled cookie')
    })
  },

  async 'login rotates the ID: the old one dies at once, the data is kept'(options) {
    await withScene(options, {}, async ({ browser }) => {
      const client = browser()
      await client.post('/set?key=k&value=apples')
      const before = client.id
      const response = await client.post('/login?user=alice')
      assert.equal(response.status, 200)
      assert.ok(client.id && client.id !== before, 'a new ID at login')
      assert.deepEqual(await client.state(), { isNew: false, userId: 'alice', value: 'apples' })
      const old = browser()
      old.id = before
      assert.deepEqual(await old.state(), { isNew: true, userId: null, value: null })
    })
  },

  async 'logout ends the session server-side and clears the cookie'(options) {
    await withScene(options, {}, async ({ signedIn, browser, memory }) => {
      const client = await signedIn()
      const id = client.id
      const response = await client.post('/logout')
      assert.equal(response.status, 200)
      const [cookie] = client.lastSetCookies
      assert.equal(cookie?.name, client.cookieName)
      assert.equal(cookie?.value, '')
      assert.equal(cookie?.maxAge, 0)
      assert.equal(cookie?.path, '/')
      assert.equal(client.id, undefined)
      const replay = browser()
      replay.id = id
      assert.deepEqual(await replay.state(), { isNew: true, userId: null, value: null })
      assert.equal(await memory.count(), 0)
    })
  },

  async 'idle and absolute timeouts, by the store’s clock'(options) {
    await withScene(options, {}, async ({ signedIn, clock }) => {
      const idle = await signedIn()
      clock.advance(31 * MINUTE)
      assert.deepEqual(await idle.state(), { isNew: true, userId: null, value: null }, 'idle for 31 minutes')

      const busy = await signedIn('bob')
      for (let elapsed = 0; elapsed < 12 * HOUR - 20 * MINUTE; elapsed += 20 * MINUTE) {
        clock.advance(20 * MINUTE)
        assert.equal(
          (await busy.state()).userId,
          'bob',
          'activity keeps the session within its absolute timeout',
        )
      }
      clock.advance(21 * MINUTE)
      assert.equal((await busy.state()).userId, null, 'past 12 hours, whatever the activity')
    })
  },

  async 'renewal: a new ID after the interval, the old one answers for the grace window only'(options) {
    await withScene(options, {}, async ({ signedIn, browser, clock, manager }) => {
      const client = await signedIn()
      const old = client.id
      // Within the idle timeout all along: 25 + 25 minutes, then past the hour.
      for (const minutes of [25, 25]) {
        clock.advance(minutes * MINUTE)
        assert.equal((await client.state()).userId, 'alice')
        assert.equal(client.id, old, 'not renewed before the interval')
      }
      clock.advance(11 * MINUTE)
      assert.equal((await client.state()).userId, 'alice')
      assert.ok(client.id && client.id !== old, 'renewed')
      const tab = browser()
      tab.id = old
      assert.equal((await tab.state()).userId, 'alice', 'the old ID answers within the grace window')
      clock.advance(manager.options.renewalGraceMs + 1)
      tab.id = old
      assert.equal((await tab.state()).userId, null, 'and not after it')
      assert.equal((await client.state()).userId, 'alice')
    })
  },

  async 'concurrent writes on one session all land (synchronous and asynchronous store)'(options) {
    for (const asyncStore of [false, true]) {
      await withScene(options, { asyncStore }, async ({ browser }) => {
        const client = browser()
        await client.post('/inc')
        const responses = await Promise.all(Array.from({ length: 50 }, () => client.tab().post('/inc')))
        assert.deepEqual(
          responses.map((response) => response.status),
          responses.map(() => 200),
        )
        const { n } = (await (await client.post('/inc')).json()) as { n: number }
        assert.equal(n, 52, `${asyncStore ? 'asynchronous' : 'synchronous'} store: every update counted`)
      })
    }
  },

  async 'the logout race: a write that loaded before a logout does not bring the session back'(options) {
    await withScene(options, { asyncStore: true }, async ({ signedIn, browser, control, memory }) => {
      const client = await signedIn()
      const id = client.id
      const slow = control.hold('get')
      const late = client.tab().post('/set?key=k&value=late')
      await slow.reached
      assert.equal((await client.post('/logout')).status, 200)
      slow.release()
      assert.equal((await late).status, 200)
      const replay = browser()
      replay.id = id
      assert.deepEqual(await replay.state(), { isNew: true, userId: null, value: null })
      assert.equal(await memory.count(), 0, 'nothing written back')
    })
  },

  async 'store down before the handler: 503 with Retry-After, the handler never runs, service resumes'(
    options,
  ) {
    await withScene(options, {}, async (scene) => {
      const client = await scene.signedIn()
      scene.control.down = true
      scene.handled.length = 0
      const response = await client.request('/state')
      assert.equal(response.status, 503)
      assert.equal(response.headers.get('retry-after'), '1')
      assert.deepEqual(response.headers.getSetCookie(), [])
      assert.deepEqual(scene.handled, [], 'the handler did not run')
      const reported = takeErrors(scene)
      assert.ok(
        reported.length > 0 && reported.every((error) => codeOf(error) === STORE_ERROR),
        'a StoreError reported',
      )
      scene.control.down = false
      assert.equal((await client.state()).userId, 'alice', 'back by itself once the store is')
    })
  },

  async 'store down at commit: 503, nothing of the handler’s response leaves, nothing half-written'(options) {
    for (const asyncStore of [false, true]) {
      await withScene(options, { asyncStore }, async (scene) => {
        const client = await scene.signedIn()
        scene.control.writesDown = true
        scene.control.calls.length = 0
        const response = await client.post('/set?key=k&value=lost')
        assert.equal(response.status, 503)
        const writes = scene.control.calls.filter((operation) => WRITES.has(operation))
        assert.deepEqual(writes, ['update'], 'one commit, not retried by the error response')
        assert.equal(response.headers.get('retry-after'), '1')
        assert.deepEqual(response.headers.getSetCookie(), [])
        assert.doesNotMatch(await response.text(), /isNew/, "the handler's body did not leave")
        const reported = takeErrors(scene)
        assert.ok(reported.length > 0 && reported.every((error) => codeOf(error) === STORE_ERROR))
        scene.control.writesDown = false
        assert.deepEqual(await client.state(), { isNew: false, userId: 'alice', value: null })
        // A new session whose create fails: no cookie for a session that was never stored.
        scene.control.writesDown = true
        const fresh = scene.browser()
        assert.equal((await fresh.post('/set?key=k&value=x')).status, 503)
        assert.equal(fresh.id, undefined)
        takeErrors(scene)
        scene.control.writesDown = false
      })
    }
  },

  async 'a redirect after login finds the session saved (slow store)'(options) {
    await withScene(options, { asyncStore: true }, async ({ browser, control }) => {
      control.writeDelayMs = 30
      const client = browser()
      const response = await client.post('/login-redirect?user=alice')
      assert.equal(response.status, 303)
      assert.equal(new URL(response.headers.get('location') ?? '', BASE).pathname, '/state')
      assert.ok(client.id, 'the redirect carries the new session cookie')
      const followed = (await (await client.request('/state')).json()) as StateBody
      assert.equal(followed.userId, 'alice', 'saved before the redirect left')
    })
  },

  async 'a streamed body carries the cookie, and the session is saved before its first byte (slow store)'(
    options,
  ) {
    await withScene(options, { asyncStore: true }, async ({ browser, control }) => {
      control.writeDelayMs = 30
      const client = browser()
      const response = await client.request('/stream')
      assert.equal(response.status, 200)
      assert.ok(client.id, 'Set-Cookie on the streamed response')
      assert.equal(response.headers.get('cache-control'), 'no-store')
      // Before reading the body: the session is there already.
      assert.equal((await client.tab().state('streamed')).value, true)
      assert.equal(await response.text(), 'part one,part two')
    })
  },

  async 'HEAD commits too'(options) {
    await withScene(options, {}, async ({ browser }) => {
      const client = browser()
      const response = await client.request('/visit', { method: 'HEAD' })
      assert.equal(response.status, 200)
      assert.equal(await response.text(), '')
      assert.ok(client.id, 'Set-Cookie on the HEAD response')
      assert.equal((await client.state('visits')).value, 1)
    })
  },

  async 'a handler that throws before responding: the framework’s 500, and its session changes are not saved'(
    options,
  ) {
    await withScene(options, {}, async (scene) => {
      const client = await scene.signedIn()
      const id = client.id
      const response = await client.post('/throw')
      assert.equal(response.status, 500)
      assert.deepEqual(response.headers.getSetCookie(), [])
      const reported = takeErrors(scene)
      assert.ok(
        reported.some((error) => error instanceof RouteFailure),
        "the handler's error reported",
      )
      assert.equal(client.id, id)
      assert.equal((await client.state('lost')).value, null, 'the change was not saved')
    })
  },

  async 'a handler that fails after logout, login or regenerate: the end is applied all the same'(options) {
    // Ends fail closed: only data writes follow the "a failed request saves nothing" rule. A stolen
    // copy of the cookie must not outlive a logout because the page after it crashed.
    for (const asyncStore of [false, true]) {
      await withScene(options, { asyncStore }, async (scene) => {
        for (const path of ['/logout-throw', '/logout-500', '/login-throw', '/regenerate-throw']) {
          const client = await scene.signedIn('alice')
          const stolen = client.tab()
          const response = await client.post(path)
          assert.equal(response.status, 500, `${path}: the failure is answered`)
          assert.equal(client.id, undefined, `${path}: the session cookie is cleared`)
          const after = await stolen.state('lost')
          assert.equal(after.userId, null, `${path}: the old cookie no longer signs anyone in`)
          assert.equal(after.isNew, true, `${path}: the old cookie names no session`)
          for (const error of takeErrors(scene)) assert.ok(error instanceof RouteFailure, String(error))
        }
        const keys = await keysIn(scene.memory)
        for (const key of keys) {
          const record = await scene.memory.get(key)
          assert.notEqual(record?.userId, 'mallory', 'the failed sign-in was not made')
        }
      })
    }
  },

  async 'a handler that fails mid-stream: the session is committed, the response aborted'(options) {
    // With a slow store, the handler fails while its first bytes are still held for the commit.
    for (const asyncStore of [false, true]) {
      await withScene(options, { asyncStore }, async (scene) => {
        const client = await scene.signedIn()
        scene.control.writeDelayMs = asyncStore ? 30 : 0
        // Aborted before the head (still held when the handler failed) or in the body: never complete.
        const outcome = await client.request('/stream-fail').then(bodyOf, () => 'aborted')
        assert.equal(outcome, 'aborted', 'an unfinished body is not passed off as complete')
        await sleep(asyncStore ? 40 : 0)
        assert.equal((await client.state('streamed')).value, true, 'committed before the response started')
        // Some frameworks report the stream's error, some only log it.
        for (const error of takeErrors(scene)) assert.ok(error instanceof RouteFailure, String(error))
      })
    }
  },

  async 'CSRF: an unsafe request without a token is refused, whatever its Content-Type'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene)
      const form = multipart({ k: 'forged' })
      const bodies: [string | undefined, string | undefined][] = [
        [undefined, undefined],
        ['text/plain', '{"k":"forged"}'],
        ['TEXT/PLAIN;charset=UTF-8', 'k=forged'],
        ['application/json', '{"k":"forged"}'],
        ['Application/x-www-form-urlencoded', 'k=forged'],
        ['application/x-www-form-urlencoded;charset=UTF-8', 'k=forged'],
        [form.type, form.body],
        [form.type.replace('multipart/form-data', 'Multipart/Form-Data'), form.body],
      ]
      scene.handled.length = 0
      for (const [type, body] of bodies) {
        const headers: Record<string, string> = type === undefined ? {} : { 'content-type': type }
        const response = await client.post('/set?key=k&value=forged', {
          headers,
          ...(body === undefined ? {} : { body }),
        })
        await assertRefused(scene, response, 'missing-token', `Content-Type ${String(type)}`)
      }
      assert.deepEqual(scene.handled, [], 'the handler never ran')
      assert.equal((await client.state()).value, null, 'nothing changed')
    })
  },

  async 'CSRF: the token passes in the header, a urlencoded field or a multipart field, and the app still reads the body'(
    options,
  ) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene)
      const token = await tokenFor(client)
      const header = await client.post('/set?key=k&value=1', { headers: { 'x-csrf-token': token } })
      assert.equal(header.status, 200, 'token in the x-csrf-token header')
      assert.equal((await client.state()).value, '1')
      for (const type of [
        'application/x-www-form-urlencoded',
        'Application/X-WWW-Form-Urlencoded; charset=UTF-8',
      ]) {
        const body = new URLSearchParams({ name: 'Ada', _csrf: token, last: 'Lovelace' }).toString()
        const response = await client.post('/echo-form', { headers: { 'content-type': type }, body })
        assert.equal(response.status, 200, `token in a ${type} field`)
        const { fields } = (await response.json()) as { fields: Record<string, string> }
        assert.equal(fields.name, 'Ada', 'the app parsed the body after the check')
        assert.equal(fields.last, 'Lovelace')
      }
      const form = multipart({ name: 'Ada', _csrf: token, last: 'Lovelace' })
      const response = await client.post('/echo-form', {
        headers: { 'content-type': form.type },
        body: form.body,
      })
      assert.equal(response.status, 200, 'token in a multipart field')
      const { fields } = (await response.json()) as { fields: Record<string, string> }
      assert.equal(fields.name, 'Ada', 'the app read the multipart body after the check')
      assert.equal(fields.last, 'Lovelace')
    })
  },

  async 'CSRF: Sec-Fetch-Site first, then Origin compared exactly; same-site passes only when trusted'(
    options,
  ) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene)
      const token = await tokenFor(client)
      const own = scene.origin
      const port = new URL(own).port
      const cases: [Record<string, string>, string | null][] = [
        [{ 'sec-fetch-site': 'same-origin', origin: own }, null],
        [{ 'sec-fetch-site': 'none' }, null],
        [{ 'sec-fetch-site': 'cross-site', origin: 'http://evil.test' }, 'cross-site'],
        [{ 'sec-fetch-site': 'same-site', origin: `http://localhost:${port}` }, 'cross-site'],
        [{ 'sec-fetch-site': 'same-site', origin: TRUSTED }, null],
        [{ 'sec-fetch-site': 'cross-site', origin: TRUSTED }, null],
        [{ origin: own }, null],
        [{ origin: TRUSTED }, null],
        [{ origin: `${own}.evil.test` }, 'origin-mismatch'],
        [{ origin: 'null' }, 'origin-mismatch'],
        [{ origin: `http://127.0.0.1:${Number(port) + 1}` }, 'origin-mismatch'],
        [{ origin: own.replace('http:', 'https:') }, 'origin-mismatch'],
        [{}, null],
      ]
      await assertOriginCases(scene, client, token, cases)
    })
  },

  async 'CSRF: over HTTPS (here a configured https origin), without Origin the Referer is compared'(options) {
    const app = 'https://app.example'
    await withScene(options, { csrf: { ...CSRF, origin: app } }, async (scene) => {
      const client = await signedInWithToken(scene)
      const token = await tokenFor(client)
      const cases: [Record<string, string>, string | null][] = [
        [{ origin: app }, null],
        [{ referer: `${app}/account?tab=1` }, null],
        [{ referer: `${TRUSTED}/page` }, null],
        [{ referer: 'https://evil.example/app.example' }, 'origin-mismatch'],
        [{ referer: `${app}.evil.example/` }, 'origin-mismatch'],
        [{ origin: scene.origin }, 'origin-mismatch'],
        [{}, null],
      ]
      await assertOriginCases(scene, client, token, cases)
    })
  },

  async 'CSRF: a token of another session, a malformed token, or one in the query string is refused'(
    options,
  ) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const alice = await signedInWithToken(scene, 'alice')
      const bob = await signedInWithToken(scene, 'bob')
      const bobs = await tokenFor(bob)
      const aliceToken = await tokenFor(alice)
      const cases: [Record<string, string>, string, string][] = [
        [{ 'x-csrf-token': bobs }, '', 'bad-token'],
        [{ 'x-csrf-token': tampered(aliceToken) }, '', 'bad-token'],
        [{ 'x-csrf-token': 'not a token' }, '', 'bad-token'],
        [{ 'x-csrf-token': 'A'.repeat(5000) }, '', 'bad-token'],
        [{}, `&_csrf=${encodeURIComponent(aliceToken)}`, 'missing-token'],
      ]
      for (const [headers, query, reason] of cases) {
        const response = await alice.post(`/set?key=k&value=forged${query}`, { headers })
        await assertRefused(scene, response, reason, `${JSON.stringify(headers)}${query}`)
      }
      assert.equal((await alice.state()).value, null)
    })
  },

  async 'CSRF: every render gives another token, each valid; the secret rotates at login'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene, 'alice')
      const first = await tokenFor(client)
      const second = await tokenFor(client)
      assert.notEqual(first, second, 'two renders differ')
      for (const token of [first, second]) {
        assert.equal(
          (await client.post('/set?key=k&value=1', { headers: { 'x-csrf-token': token } })).status,
          200,
        )
      }
      const login = await client.post('/login?user=bob', { headers: { 'x-csrf-token': first } })
      assert.equal(login.status, 200)
      const refused = await client.post('/set?key=k&value=2', { headers: { 'x-csrf-token': second } })
      await assertRefused(scene, refused, 'bad-token', 'a token from before the login')
      const fresh = await tokenFor(client)
      assert.equal(
        (await client.post('/set?key=k&value=3', { headers: { 'x-csrf-token': fresh } })).status,
        200,
      )
    })
  },

  async 'CSRF: method-override tunnels are checked like the method they tunnel to'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene)
      scene.handled.length = 0
      const tunnels: [string, Record<string, string>][] = [
        ['/set?key=k&value=forged&_method=POST', {}],
        ['/set?key=k&value=forged&_method=delete', {}],
        ['/set?key=k&value=forged', { 'x-http-method-override': 'POST' }],
        ['/set?key=k&value=forged', { 'x-http-method': 'PUT' }],
        ['/set?key=k&value=forged', { 'x-method-override': 'PATCH' }],
      ]
      for (const [path, headers] of tunnels) {
        await assertRefused(
          scene,
          await client.request(path, { headers }),
          'missing-token',
          `GET ${path} ${JSON.stringify(headers)}`,
        )
      }
      assert.deepEqual(scene.handled, [])
      assert.equal(
        (await client.request('/state?_method=GET')).status,
        200,
        'a tunnel to a safe method is not checked',
      )
    })
  },

  async 'CSRF: the login form before any session, with no session stored for the visitor'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const visitor = scene.browser()
      const page = await visitor.request('/form')
      assert.equal(page.status, 200)
      const { token } = (await page.json()) as { token: string }
      assert.equal(page.headers.get('cache-control'), 'no-store', 'a page with a token is private')
      assert.equal(visitor.id, undefined, 'no session cookie for an anonymous visitor')
      assert.equal(visitor.jar.size, 1, 'a pre-session cookie instead')
      assert.equal(await scene.memory.count(), 0, 'nothing stored')
      // Another browser, without that cookie, cannot use the token.
      const stranger = scene.browser()
      const body = new URLSearchParams({ _csrf: token }).toString()
      const headers = { 'content-type': 'application/x-www-form-urlencoded' }
      await assertRefused(
        scene,
        await stranger.post('/login?user=mallory', { headers, body }),
        'bad-token',
        'a stolen form token',
      )
      const login = await visitor.post('/login?user=alice', { headers, body })
      assert.equal(login.status, 200, 'the login form posts with its token')
      assert.ok(visitor.id, 'signed in')
      assert.equal((await visitor.state()).userId, 'alice')
      // One session (the signed-in one), beside its pending notice of a timeout (no session).
      assert.equal(await scene.memory.count(), 2)
      assert.ok(
        (await scene.memory.get(noticeKeyOf(storeKeyOf(visitor.id)))) !== null,
        'the pending notice of a timeout',
      )
      // The login rotated the secret: the form's token is dead now.
      await assertRefused(
        scene,
        await visitor.post('/set?key=k&value=1', { headers, body }),
        'bad-token',
        'the login form token after login',
      )
    })
  },

  async 'CSRF: a route exempt by its path (a webhook) takes unsafe requests without a token'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = scene.browser()
      const response = await client.post('/hooks/ping', {
        headers: { 'content-type': 'application/json' },
        body: '{}',
      })
      assert.equal(response.status, 200)
      const sneaky = await client.post('/hooks/..%2fset?key=k&value=1')
      await assertRefused(scene, sneaky, 'missing-token', 'a path that only looks exempt')
    })
  },

  async 'CSRF: a form body past maxBodyBytes is refused with 413, declared or streamed'(options) {
    await withScene(options, { csrf: CSRF }, async (scene) => {
      const client = await signedInWithToken(scene)
      const headers = { 'content-type': 'application/x-www-form-urlencoded' }
      const body = `pad=${'x'.repeat(8192)}&_csrf=whatever`
      await assertRefused(
        scene,
        await client.post('/echo-form', { headers, body }),
        'body-too-large',
        'declared length',
      )
      const streamed = await fetch(`${client.base}/echo-form`, {
        method: 'POST',
        headers: {
          ...headers,
          cookie: [...client.jar].map(([name, value]) => `${name}=${value}`).join('; '),
        },
        body: new Blob([body]).stream(),
        duplex: 'half',
      } as RequestInit)
      await assertRefused(scene, streamed, 'body-too-large', 'chunked, no declared length')
    })
  },

  async 'CSRF: a failure the app does not catch is answered with the CsrfError’s status'(options) {
    await withScene(options, { csrf: CSRF, catchCsrf: false }, async (scene) => {
      const client = await signedInWithToken(scene)
      scene.handled.length = 0
      const response = await client.post('/set?key=k&value=forged', {
        headers: { 'sec-fetch-site': 'cross-site' },
      })
      assert.equal(response.status, 403)
      assert.deepEqual(scene.handled, [])
      for (const error of takeErrors(scene)) assert.ok(isCsrfError(error), String(error))
    })
  },

  // -------------------------------------------------------------------------------------------
  // Backpressure of a held response (issue 14): kept together here, after the other scenarios.

  async 'a large stream waits while the commit is held, then reaches a slow client whole'(options) {
    // While the commit is held, the writer must stop at a full buffer; once it is committed, it must go
    // on (its 'drain' came) until a client that reads nothing holds it back; then the client reads,
    // and every byte arrives in order.
    await withScene(options, { asyncStore: true }, async (scene) => {
      const body = largeBody()
      const commit = scene.control.hold('create')
      const answer = pausedGet(`${scene.origin}/large?body=${body.id}`)
      await commit.reached
      const held = await settled(() => body.produced)
      assert.ok(
        held <= HELD_BOUND,
        `${held} bytes produced while the commit was held: a held write must say when the buffer is full`,
      )
      commit.release()
      const response = await answer
      assert.equal(response.statusCode, 200)
      assert.equal(response.headers['set-cookie']?.length, 1, 'the commit’s cookie on the streamed response')
      // The client still reads nothing: once the hold opens, the writer goes on until the socket is full.
      const opened = await settled(() => body.produced)
      assert.ok(opened > held, "the writer went on once the hold opened (its 'drain' came)")
      assert.ok(opened < LARGE_BODY_BYTES, 'a client that reads nothing holds the writer back')
      const received = await digestOf(response)
      assert.equal(received.bytes, LARGE_BODY_BYTES, 'every byte arrived')
      assert.equal(received.sha256, body.sha256(), 'in order, intact')
      if (body.nodeResponse) assert.ok(body.drains > 0, "node's response emitted 'drain'")
    })
  },

  async 'a large stream whose commit fails: 503, and the writer is let go'(options) {
    await withScene(options, { asyncStore: true }, async (scene) => {
      const body = largeBody()
      scene.control.writesDown = true
      const response = await pausedGet(`${scene.origin}/large?body=${body.id}`)
      assert.equal(response.statusCode, 503)
      assert.doesNotMatch((await digestOf(response)).text, /0{8}/, 'nothing of the stream left')
      await settled(() => body.produced)
      assert.ok(body.produced <= HELD_BOUND, `${body.produced} bytes produced for a response that failed`)
      // A writer told to wait for 'drain' is let go by the response's 'close'.
      if (body.nodeResponse) assert.ok(body.closed, "node's response closed")
      const reported = takeErrors(scene)
      assert.ok(reported.length > 0 && reported.every((error) => codeOf(error) === STORE_ERROR))
    })
  },
}

/**
 * Registers every scenario under `${name} adapter conformance` with the runner's `describe`/`test`:
 *
 *     defineAdapterConformance({ describe, test }, { name: 'Express', serve: (app) => serveExpress(app) })
 */
export function defineAdapterConformance(
  runner: ConformanceRunner,
  options: AdapterConformanceOptions,
): void {
  runner.describe(`${options.name} adapter conformance`, () => {
    for (const [name, scenario] of Object.entries(adapterScenarios)) {
      runner.test(name, () => scenario(options))
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Backpressure of a held response (issue 14): the large body, its client, and what they measure.

/** The large body's size: far more than every buffer on the way (socket buffers included) holds. */
const LARGE_BODY_BYTES = 64 * 1024 * 1024
/** Its chunks: 16 KiB of ASCII (node's high-water mark on Node 20). */
const LARGE_CHUNK = 16 * 1024
/**
 * What the app may produce while its response is held: node's high-water mark (16 KiB on Node 20,
 * 64 KiB from Node 22) plus the chunk that crossed it fit in it several times over,
 * and a framework that commits before it reads the body (Fastify, Koa, Hono) has read a chunk at
 * most; a hold that keeps taking writes takes the whole 64 MiB. No socket buffer counts here: nothing
 * is sent while the commit is held.
 */
const HELD_BOUND = 1024 * 1024
const LARGE_FILLER = '0123456789abcdef'.repeat(LARGE_CHUNK / 16)

/** A large streamed body that counts and hashes what its reader pulled, and hears node's response. */
class LargeBody {
  readonly id = generateId()
  produced = 0
  drains = 0
  closed = false
  nodeResponse: NodeResponseEvents | undefined
  readonly #hash = createHash('sha256')

  /** Chunk by chunk, each one numbered (so a chunk lost, repeated or out of order changes the hash). */
  async *chunks(): AsyncIterable<string> {
    for (let index = 0; this.produced < LARGE_BODY_BYTES; index++) {
      const chunk = String(index).padStart(8, '0') + LARGE_FILLER.slice(8)
      this.produced += chunk.length
      this.#hash.update(chunk)
      yield chunk
    }
  }

  /** The SHA-256 of what was produced, hex. */
  sha256(): string {
    return this.#hash.copy().digest('hex')
  }
}

/** Large bodies by id, while their scenario runs: `/large?body=id` streams one. */
const LARGE_BODIES = new Map<string, LargeBody>()

function largeBody(): LargeBody {
  const body = new LargeBody()
  LARGE_BODIES.set(body.id, body)
  return body
}

/** `/large`: the session changes (so there is a commit to wait for), then the body is streamed. */
function largeReply(request: ConformanceRequest, id: string | null): ConformanceReply {
  const body = LARGE_BODIES.get(id ?? '')
  if (body === undefined) return json(404, { error: 'no such large body' })
  LARGE_BODIES.delete(body.id)
  request.session.set('large', true)
  const res = request.nodeResponse
  if (res) {
    body.nodeResponse = res
    res.on('drain', () => {
      body.drains++
    })
    res.once('close', () => {
      body.closed = true
    })
  }
  return { kind: 'stream', body: () => body.chunks() }
}

/**
 * Waits until `read()` gives one value over many turns of the event loop in a row, and returns it:
 * a writer still going moves it on every turn (the body is produced without waiting on anything), one
 * held back by the client or the hold does not.
 */
async function settled(read: () => number): Promise<number> {
  let value = read()
  for (let still = 0; still < 20; ) {
    await new Promise((resolve) => setImmediate(resolve))
    const now = read()
    still = now === value ? still + 1 : 0
    value = now
  }
  return value
}

/** A GET whose response is not read until {@link digestOf}: a client that has stopped reading. */
function pausedGet(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, { agent: false }, (response) => {
      response.pause()
      resolve(response)
    })
    request.on('error', reject)
    request.end()
  })
}

/** Reads a response to its end: its length, its SHA-256 (hex), and its start as text. */
async function digestOf(response: IncomingMessage): Promise<{ bytes: number; sha256: string; text: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  let text = ''
  for await (const chunk of response) {
    const buffer = chunk as Buffer
    bytes += buffer.length
    hash.update(buffer)
    if (text.length < 256) text += buffer.toString('latin1', 0, 256)
  }
  return { bytes, sha256: hash.digest('hex'), text }
}

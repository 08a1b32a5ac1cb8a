import { describe, expect, test, vi } from 'vitest'
import { ManualClock } from '../core/clock.js'
import { generateKey } from '../core/crypto.js'
import { ConfigError, CsrfError } from '../core/errors.js'
import { createSessionManager } from '../core/manager.js'
import { MemoryStore } from '../stores/memory/index.js'
import type { CsrfOptions, CsrfRequest } from './index.js'
import {
  createCsrfGuard,
  formKind,
  isCsrfError,
  isPlainlySafe,
  parseFormFields,
  resolveCsrfOptions,
} from './index.js'
import { originOf } from './origin.js'

function manager() {
  return createSessionManager({ store: new MemoryStore(), keys: [generateKey()], clock: new ManualClock() })
}

/** A request as an adapter would describe it; `form` is a spy, to see when the body is read. */
function request(
  init: {
    method?: string
    url?: string
    headers?: Record<string, string>
    secure?: boolean
    host?: string
    form?: Record<string, unknown> | null
  } = {},
) {
  const headers = init.headers ?? {}
  const form = vi.fn(
    async () => (init.form === undefined ? null : init.form) as Record<string, string> | null,
  )
  const built: CsrfRequest = {
    method: init.method ?? 'POST',
    url: init.url ?? '/act',
    header: (name) => headers[name],
    secure: init.secure ?? false,
    host: 'host' in init ? init.host : 'app.test',
    form,
  }
  return Object.assign(built, { formSpy: form })
}

async function reasonOf(promise: Promise<void>): Promise<string | null> {
  try {
    await promise
    return null
  } catch (error) {
    if (!(error instanceof CsrfError)) throw error
    return error.reason
  }
}

describe('options', () => {
  test('origins are normalised as browsers write them; anything but scheme://host[:port] is a ConfigError', () => {
    const options = resolveCsrfOptions({
      origin: 'HTTPS://App.Example:443/',
      trustedOrigins: ['http://localhost:3000', 'https://bücher.example', 'http://[::1]:80'],
    })
    expect(options.origin).toBe('https://app.example')
    expect([...options.trustedOrigins]).toEqual([
      'http://localhost:3000',
      'https://xn--bcher-kva.example',
      'http://[::1]',
    ])
    const bad: [CsrfOptions, string][] = [
      [{ origin: 'https://app.example/path' }, 'csrf.origin'],
      [{ origin: 'https://app.example?x' }, 'csrf.origin'],
      [{ origin: 'https://app.example#x' }, 'csrf.origin'],
      [{ origin: 'https://user:pw@app.example' }, 'csrf.origin'],
      [{ origin: 'ftp://app.example' }, 'csrf.origin'],
      [{ origin: 'app.example' }, 'csrf.origin'],
      [{ origin: '' }, 'csrf.origin'],
      [{ origin: 42 as unknown as string }, 'csrf.origin'],
      [{ trustedOrigins: ['https://ok.example', 'https://*.example'] }, 'csrf.trustedOrigins[1]'],
      [{ trustedOrigins: ['null'] }, 'csrf.trustedOrigins[0]'],
      [{ trustedOrigins: 'https://a.example' as unknown as string[] }, 'csrf.trustedOrigins'],
      [{ trustProxy: 'yes' as unknown as boolean }, 'csrf.trustProxy'],
      [{ exempt: ['hooks'] }, 'csrf.exempt[0]'],
      [{ exempt: ['/hooks/../admin'] }, 'csrf.exempt[0]'],
      [{ exempt: ['/hooks/%2e%2e'] }, 'csrf.exempt[0]'],
      [{ exempt: '/hooks' as unknown as string[] }, 'csrf.exempt'],
      [{ maxBodyBytes: 0 }, 'csrf.maxBodyBytes'],
      [{ maxBodyBytes: 1.5 }, 'csrf.maxBodyBytes'],
      [{ maxBodyBytes: '1' as unknown as number }, 'csrf.maxBodyBytes'],
      // Unknown options: a typo, and csurf's habits.
      [{ trustedOrigin: ['https://a.example'] } as CsrfOptions, 'csrf.trustedOrigin'],
      [{ ignoreMethods: ['GET'] } as CsrfOptions, 'csrf.ignoreMethods'],
      [{ cookie: true } as CsrfOptions, 'csrf.cookie'],
    ]
    for (const [options, option] of bad) {
      expect(() => resolveCsrfOptions(options), JSON.stringify(options)).toThrow(ConfigError)
      try {
        resolveCsrfOptions(options)
      } catch (error) {
        expect((error as ConfigError).option).toBe(option)
      }
    }
  })

  test('the own origin from Host: lower-cased, the default port left out; an unusable Host gives none', () => {
    expect(originOf('http', 'LocalHost:3000')).toBe('http://localhost:3000')
    expect(originOf('http', 'app.test:80')).toBe('http://app.test')
    expect(originOf('https', 'app.test:443')).toBe('https://app.test')
    expect(originOf('https', 'app.test:80')).toBe('https://app.test:80')
    expect(originOf('http', '[::1]:3000')).toBe('http://[::1]:3000')
    expect(originOf('http', '127.0.0.1')).toBe('http://127.0.0.1')
    for (const host of [
      undefined,
      '',
      'a b',
      'app.test/evil',
      'evil@app.test',
      'app.test:99999',
      'app.test:',
      ':80',
      'a..b',
    ]) {
      expect(originOf('http', host), String(host)).toBeNull()
    }
  })
})

describe('form bodies', () => {
  test('form kinds by essence, case-insensitively; everything else is not a form', () => {
    expect(formKind('application/x-www-form-urlencoded')).toBe('urlencoded')
    expect(formKind('Application/X-WWW-Form-Urlencoded ; charset=UTF-8')).toBe('urlencoded')
    expect(formKind(' multipart/form-data; boundary=x')).toBe('multipart')
    expect(formKind('MULTIPART/FORM-DATA')).toBe('multipart')
    for (const type of [
      undefined,
      '',
      'text/plain',
      'TEXT/PLAIN;charset=UTF-8',
      'application/json',
      'application/x-www-form-urlencoded-foo',
      'multipart/mixed',
      'application/x-www-form-urlencoded, text/plain',
    ]) {
      expect(formKind(type), String(type)).toBeNull()
    }
  })

  test('fields: the first value of each name, strings only, in an object without a prototype', async () => {
    const urlencoded = await parseFormFields(
      Buffer.from('_csrf=a%2Bb&_csrf=second&__proto__=x&constructor=y&name=%C3%A9'),
      'application/x-www-form-urlencoded',
    )
    expect(urlencoded._csrf).toBe('a+b')
    expect(urlencoded.name).toBe('é')
    expect(Object.getPrototypeOf(urlencoded)).toBeNull()
    expect(Object.getOwnPropertyDescriptor(urlencoded, '__proto__')?.value).toBe('x')
    const boundary = 'b0undary'
    const body = [
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="_csrf"\r\n\r\nnot a token\r\n`,
      `--${boundary}\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\ntoken\r\n`,
      `--${boundary}--\r\n`,
    ].join('')
    const multipart = await parseFormFields(Buffer.from(body), `multipart/form-data; boundary=${boundary}`)
    expect({ ...multipart }).toEqual({ _csrf: 'token' })
    expect(await parseFormFields(Buffer.from('garbage'), 'multipart/form-data; boundary=x')).toEqual({})
    expect(await parseFormFields(Buffer.from('_csrf=x'), 'multipart/form-data')).toEqual({})
    expect(await parseFormFields(Buffer.from('_csrf=x'), 'text/plain')).toEqual({})
  })
})

describe('the guard', () => {
  test('applies to unsafe methods and tunnels to them; not to exempt requests, nor when off', () => {
    const guard = createCsrfGuard(manager())
    const applies = (init: Parameters<typeof request>[0]) => guard.applies(request(init))
    for (const method of ['GET', 'HEAD', 'OPTIONS', 'get', ' head '])
      expect(applies({ method }), method).toBe(false)
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'CONNECT', 'TRACE', 'PROPFIND', '', 'G ET']) {
      expect(applies({ method }), method).toBe(true)
    }
    expect(applies({ method: 'GET', url: '/a?_method=DELETE' })).toBe(true)
    expect(applies({ method: 'GET', url: '/a?_%6Dethod=DELETE' })).toBe(true)
    expect(applies({ method: 'GET', url: '/a?%5fmethod=put' })).toBe(true)
    expect(applies({ method: 'GET', url: '/a?_method=GET&_method=POST' })).toBe(true)
    expect(applies({ method: 'GET', url: '/a?_method=get' })).toBe(false)
    expect(applies({ method: 'GET', url: '/a_method/POST?x=_' })).toBe(false)
    expect(applies({ method: 'HEAD', headers: { 'x-http-method-override': 'PUT' } })).toBe(true)
    expect(applies({ method: 'GET', headers: { 'x-http-method-override': '' } })).toBe(true)
    expect(applies({ method: 'GET', headers: { 'x-http-method-override': 'OPTIONS' } })).toBe(false)
    expect(createCsrfGuard(manager(), false).applies(request())).toBe(false)
    const exempt = createCsrfGuard(manager(), { exempt: ['/hooks/*', '/exact'] })
    expect(exempt.applies(request({ url: '/hooks/stripe?x' }))).toBe(false)
    expect(exempt.applies(request({ url: '/exact' }))).toBe(false)
    expect(exempt.applies(request({ url: '/exact/' }))).toBe(true)
    expect(exempt.applies(request({ url: '/hooks' }))).toBe(true)
    expect(exempt.applies(request({ url: '/hooks/' }))).toBe(true)
    expect(exempt.applies(request({ url: '/hooks/..' }))).toBe(true)
    expect(exempt.applies(request({ url: '/hooks/%2E%2E/admin' }))).toBe(true)
    expect(exempt.applies(request({ url: '/hooks\\..\\admin' }))).toBe(true)
  })

  test('isPlainlySafe says yes only where applies says no, whatever the exempt list', () => {
    const guard = createCsrfGuard(manager(), { exempt: () => false })
    const cases: { method: string; url: string; headers: Record<string, string> }[] = []
    for (const method of ['GET', 'HEAD', 'OPTIONS', 'get', 'POST', 'DELETE'])
      for (const url of ['/a', '/a?x=1', '/a?_method=DELETE', '/a?%5fmethod=put', '/a_b', '/a?_method=get'])
        for (const headers of [
          {} as Record<string, string>,
          { 'x-http-method-override': 'PUT' },
          { 'x-http-method': 'GET' },
          { 'x-method-override': '' },
          { upgrade: 'websocket' },
        ])
          cases.push({ method, url, headers })
    let plain = 0
    for (const c of cases) {
      if (!isPlainlySafe(c.method, c.headers, c.url)) continue
      plain++
      expect(guard.applies(request(c)), JSON.stringify(c)).toBe(false)
    }
    expect(isPlainlySafe('GET', {}, '/a?x=1')).toBe(true)
    expect(isPlainlySafe(undefined, {}, '/')).toBe(false)
    expect(plain).toBeGreaterThan(0)
  })

  test('a WebSocket handshake routed through the middleware gets the origin check, and needs no token', async () => {
    const m = manager()
    const guard = createCsrfGuard(m)
    const session = await m.load({})
    const handshake = (headers: Record<string, string>) =>
      request({ method: 'GET', url: '/socket', headers: { upgrade: 'websocket', ...headers } })
    expect(guard.applies(handshake({}))).toBe(true)
    expect(guard.applies(request({ method: 'GET', headers: { upgrade: 'h2c' } }))).toBe(false)
    expect(isPlainlySafe('GET', { upgrade: 'websocket' }, '/socket')).toBe(false)
    await expect(reasonOf(guard.check(session, handshake({ origin: 'http://app.test' })))).resolves.toBeNull()
    await expect(
      reasonOf(guard.check(session, handshake({ 'sec-fetch-site': 'same-origin' }))),
    ).resolves.toBeNull()
    await expect(reasonOf(guard.check(session, handshake({ origin: 'https://evil.example' })))).resolves.toBe(
      'origin-mismatch',
    )
    await expect(
      reasonOf(
        guard.check(session, handshake({ 'sec-fetch-site': 'cross-site', upgrade: 'Foo, WebSocket' })),
      ),
    ).resolves.toBe('cross-site')
    await expect(
      reasonOf(
        guard.check(session, handshake({ 'sec-fetch-site': 'same-site', origin: 'http://a.app.test' })),
      ),
    ).resolves.toBe('cross-site')
  })

  test('a cross-site request is refused before its body is read', async () => {
    const guard = createCsrfGuard(manager())
    const session = await manager().load({})
    const hostile = request({ headers: { 'sec-fetch-site': 'cross-site' }, form: { _csrf: 'x' } })
    expect(await reasonOf(guard.check(session, hostile))).toBe('cross-site')
    expect(hostile.formSpy).not.toHaveBeenCalled()
    const foreign = request({ headers: { origin: 'http://evil.test' }, form: { _csrf: 'x' } })
    expect(await reasonOf(guard.check(session, foreign))).toBe('origin-mismatch')
    expect(foreign.formSpy).not.toHaveBeenCalled()
  })

  test('the header token means the body is never read; without it, the form field is', async () => {
    const m = manager()
    const guard = createCsrfGuard(m)
    const session = await m.load({})
    const token = session.csrfToken()
    const viaHeader = request({ headers: { 'x-csrf-token': token } })
    await guard.check(session, viaHeader)
    expect(viaHeader.formSpy).not.toHaveBeenCalled()
    const viaForm = request({ form: { _csrf: token } })
    await guard.check(session, viaForm)
    expect(viaForm.formSpy).toHaveBeenCalledTimes(1)
    // A parser that gives repeated fields as arrays: the first value counts; anything else is bad.
    expect(await reasonOf(guard.check(session, request({ form: { _csrf: [token, 'x'] } })))).toBeNull()
    expect(await reasonOf(guard.check(session, request({ form: { _csrf: ['x', token] } })))).toBe('bad-token')
    expect(await reasonOf(guard.check(session, request({ form: { _csrf: { a: 1 } } })))).toBe('missing-token')
    expect(
      await reasonOf(guard.check(session, request({ form: { __proto__: { _csrf: token } } as never }))),
    ).toBe('missing-token')
    expect(await reasonOf(guard.check(session, request({ form: {} })))).toBe('missing-token')
    expect(await reasonOf(guard.check(session, request({ form: null })))).toBe('missing-token')
    expect(await reasonOf(guard.check(session, request({ headers: { 'x-csrf-token': '' } })))).toBe(
      'missing-token',
    )
  })

  test('a form that cannot be read passes its error on: body-too-large as a CsrfError with status 413', async () => {
    const m = manager()
    const guard = createCsrfGuard(m)
    const session = await m.load({})
    // A session with a secret: without one, the body would not be read at all.
    session.csrfToken()
    const tooLarge: CsrfRequest = {
      ...request(),
      form: () => Promise.reject(new CsrfError('body-too-large')),
    }
    const error = await guard.check(session, tooLarge).catch((e: unknown) => e)
    expect(isCsrfError(error) && error.status).toBe(413)
    const aborted: CsrfRequest = { ...request(), form: () => Promise.reject(new Error('aborted')) }
    await expect(guard.check(session, aborted)).rejects.toThrow('aborted')
  })

  test('CsrfError: reasons, statuses, a stable code; isCsrfError also knows one from another copy', () => {
    expect(new CsrfError('bad-token')).toMatchObject({
      code: 'ERR_LATCHKEY_CSRF',
      status: 403,
      reason: 'bad-token',
    })
    expect(new CsrfError('body-too-large').status).toBe(413)
    expect(isCsrfError({ code: 'ERR_LATCHKEY_CSRF', reason: 'cross-site' })).toBe(true)
    expect(isCsrfError(new Error('x'))).toBe(false)
    expect(isCsrfError(null)).toBe(false)
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('trap')
        },
      },
    )
    expect(isCsrfError(hostile)).toBe(false)
  })

  test('a request without a usable Host has no own origin: only trusted origins pass', async () => {
    const m = manager()
    const session = await m.load({})
    const token = session.csrfToken()
    const guard = createCsrfGuard(m, { trustedOrigins: ['https://app.example'] })
    const noHost = (origin: string) =>
      request({ host: undefined, headers: { origin, 'x-csrf-token': token } })
    expect(await reasonOf(guard.check(session, noHost('http://app.test')))).toBe('origin-mismatch')
    expect(await reasonOf(guard.check(session, noHost('https://app.example')))).toBeNull()
    // secure: the request's own scheme; the Origin must have it too.
    const tls = createCsrfGuard(m)
    const over = (secure: boolean, origin: string) =>
      reasonOf(tls.check(session, request({ secure, headers: { origin, 'x-csrf-token': token } })))
    expect(await over(true, 'https://app.test')).toBeNull()
    expect(await over(true, 'http://app.test')).toBe('origin-mismatch')
    expect(await over(false, 'https://app.test')).toBe('origin-mismatch')
  })
})

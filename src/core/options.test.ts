import { describe, expect, test } from 'vitest'
import { MemoryStore } from '../stores/memory/index.js'
import { generateKey } from './crypto.js'
import { ConfigError } from './errors.js'
import type { SessionManagerOptions } from './options.js'
import { DEFAULTS, resolveOptions } from './options.js'

const store = new MemoryStore()
const keys = [generateKey()]

function refused(options: Partial<SessionManagerOptions>, option: string, env: NodeJS.ProcessEnv = {}): void {
  let caught: unknown
  try {
    resolveOptions({ store, keys, ...options } as SessionManagerOptions, env)
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(ConfigError)
  expect((caught as ConfigError).option).toBe(option)
  expect((caught as ConfigError).code).toBe('ERR_LATCHKEY_CONFIG')
  expect((caught as ConfigError).message).toContain(option)
}

describe('resolveOptions', () => {
  test('defaults are the hardened ones', () => {
    const resolved = resolveOptions({ store, keys })
    expect(resolved.cookie).toEqual({
      name: '__Host-sid',
      secure: true,
      sameSite: 'lax',
      httpOnly: true,
      path: '/',
      domain: undefined,
      persistent: false,
    })
    expect(resolved.idleTimeoutMs).toBe(1_800_000)
    expect(resolved.absoluteTimeoutMs).toBe(43_200_000)
    expect(resolved.renewalIntervalMs).toBe(3_600_000)
    expect(resolved.touchIntervalMs).toBe(180_000)
    expect(resolved.renewalGraceMs).toBe(DEFAULTS.renewalGraceMs)
    expect(Object.isFrozen(DEFAULTS)).toBe(true)
  })

  test('plain-HTTP development only when asked, and then the cookie is named sid', () => {
    expect(resolveOptions({ store, keys, cookie: { secure: false } }).cookie.name).toBe('sid')
  })

  test('keys come from LATCHKEY_KEYS when not passed, first key first', () => {
    const [a, b] = [generateKey(), generateKey()]
    const resolved = resolveOptions({ store }, { LATCHKEY_KEYS: `${a}, ${b}` })
    expect(resolved.keys.map((key) => key.toString('base64url'))).toEqual([a, b])
  })

  test('keys: missing, short, not base64, duplicated', () => {
    refused({ keys: undefined }, 'keys')
    refused({ keys: [] }, 'keys')
    refused({ keys: [Buffer.alloc(31, 1).toString('base64url')] }, 'keys[0]')
    refused({ keys: [generateKey(), 'short'] }, 'keys[1]')
    refused({ keys: ['not base64 at all!!'] }, 'keys[0]')
    refused({ keys: [keys[0] as string, keys[0] as string] }, 'keys[1]')
    refused({ keys: undefined }, 'LATCHKEY_KEYS[0]', { LATCHKEY_KEYS: 'abc' })
  })

  test('SameSite=None without Secure is refused', () => {
    refused({ cookie: { sameSite: 'none', secure: false } }, 'cookie.sameSite')
    expect(resolveOptions({ store, keys, cookie: { sameSite: 'none' } }).cookie.sameSite).toBe('none')
    refused({ cookie: { sameSite: 'sometimes' as 'lax' } }, 'cookie.sameSite')
  })

  test('__Host- with a Domain, another Path, or without Secure is refused', () => {
    refused({ cookie: { domain: 'example.com' } }, 'cookie.domain')
    refused({ cookie: { path: '/app' } }, 'cookie.path')
    refused({ cookie: { name: '__Host-x', secure: false } }, 'cookie.name')
    refused({ cookie: { name: '__Secure-x', secure: false } }, 'cookie.name')
    expect(
      resolveOptions({ store, keys, cookie: { name: 'app', domain: 'example.com', path: '/app' } }).cookie
        .path,
    ).toBe('/app')
  })

  test.each([['a;b'], ['a=b'], ['a b'], ['a\tb'], ['a\u0000b'], ['a\nb'], ['a\u007fb'], ['é'], ['']])(
    'cookie names with separators, spaces or controls are refused: %j',
    (name) => {
      refused({ cookie: { name } }, 'cookie.name')
    },
  )

  test.each([['/a;b'], ['/a=b'], ['/a b'], ['/a\rb'], ['relative']])(
    'bad cookie paths are refused: %j',
    (path) => {
      refused({ cookie: { name: 'app', path } }, 'cookie.path')
    },
  )

  test.each([['ex;ample.com'], ['a=b'], ['a b'], ['a\u0001b']])(
    'bad cookie domains are refused: %j',
    (domain) => {
      refused({ cookie: { name: 'app', domain } }, 'cookie.domain')
    },
  )

  test('timeouts that make no sense are refused', () => {
    refused({ idleTimeoutMs: 0 }, 'idleTimeoutMs')
    refused({ idleTimeoutMs: -5 }, 'idleTimeoutMs')
    refused({ idleTimeoutMs: 1.5 }, 'idleTimeoutMs')
    refused({ absoluteTimeoutMs: Number.NaN }, 'absoluteTimeoutMs')
    refused({ idleTimeoutMs: 2_000, absoluteTimeoutMs: 1_000 }, 'idleTimeoutMs')
    refused({ touchIntervalMs: 1_800_000 }, 'touchIntervalMs')
    refused({ renewalGraceMs: 1_800_000 }, 'renewalGraceMs')
    refused({ renewalIntervalMs: 0 }, 'renewalIntervalMs')
    refused({ commitTimeoutMs: -1 }, 'commitTimeoutMs')
  })

  test('Clear-Site-Data types are checked and quoted', () => {
    refused({ clearSiteDataOnLogout: ['everything' as 'cache'] }, 'clearSiteDataOnLogout')
    expect(resolveOptions({ store, keys }).clearSiteData).toBeNull()
    expect(resolveOptions({ store, keys, clearSiteDataOnLogout: ['cache', '*'] }).clearSiteData).toBe(
      '"cache", "*"',
    )
  })

  test('a store must implement the contract', () => {
    refused({ store: {} as never }, 'store')
  })
})

describe('unknown options are refused, never ignored', () => {
  /** The message of the ConfigError `options` gets, after checking it names `option`. */
  function messageFor(options: Record<string, unknown>, option: string): string {
    let caught: unknown
    try {
      resolveOptions({ store, keys, ...options } as SessionManagerOptions, {})
    } catch (error) {
      caught = error
    }
    expect(caught, option).toBeInstanceOf(ConfigError)
    expect((caught as ConfigError).option).toBe(option)
    return (caught as ConfigError).message
  }

  test('a typo names the option it was probably meant to be', () => {
    expect(messageFor({ idleTimeout: 1000 }, 'idleTimeout')).toContain('did you mean idleTimeoutMs?')
    expect(messageFor({ absolutetimeoutms: 1000 }, 'absolutetimeoutms')).toContain(
      'did you mean absoluteTimeoutMs?',
    )
    expect(messageFor({ renewalIntervallMs: 1 }, 'renewalIntervallMs')).toContain(
      'did you mean renewalIntervalMs?',
    )
    expect(messageFor({ cookie: { sameSit: 'lax' } }, 'cookie.sameSit')).toContain(
      'did you mean cookie.sameSite?',
    )
    expect(messageFor({ csrfCookie: { maxAge: 5 } }, 'csrfCookie.maxAge')).toContain(
      'did you mean csrfCookie.maxAgeMs?',
    )
    // An option with nothing near it lists what there is.
    expect(messageFor({ frobnicate: true }, 'frobnicate')).toContain('the options are store, keys, cookie')
  })

  test("csrf is the adapter's option: the message says where it goes, not csrfCookie", () => {
    const message = messageFor({ csrf: { trustedOrigins: ['https://a.example'] } }, 'csrf')
    expect(message).toContain('an option of the adapter')
    expect(message).toContain('sessions(manager, { csrf })')
    expect(message).toContain('app.register(latchkey, { manager, csrf })')
    expect(message).not.toContain('did you mean')
  })

  test('undefined is no excuse: the name is still wrong', () => {
    expect(messageFor({ idleTimeout: undefined }, 'idleTimeout')).toContain('idleTimeoutMs')
  })

  test("express-session's options say what latchkey does instead", () => {
    expect(messageFor({ secret: 'keyboard cat' }, 'secret')).toContain('keys')
    expect(messageFor({ rolling: true }, 'rolling')).toContain('idleTimeoutMs')
    expect(messageFor({ saveUninitialized: false }, 'saveUninitialized')).toContain(
      'stores a new session only',
    )
    expect(messageFor({ resave: false }, 'resave')).toContain('compare-and-set')
    expect(messageFor({ genid: () => 'x' }, 'genid')).toContain('cannot be chosen')
    expect(messageFor({ cookie: { maxAge: 60_000 } }, 'cookie.maxAge')).toContain('cookie.persistent')
    expect(messageFor({ cookie: { httpOnly: false } }, 'cookie.httpOnly')).toContain('always HttpOnly')
  })

  test('every known option is accepted', () => {
    expect(() =>
      resolveOptions(
        {
          store,
          keys,
          cookie: { name: 'sid', secure: false, sameSite: 'lax', path: '/', persistent: false },
          idleTimeoutMs: 60_000,
          absoluteTimeoutMs: 120_000,
          renewalIntervalMs: 30_000,
          renewalGraceMs: 1_000,
          touchIntervalMs: 1_000,
          commitTimeoutMs: 5_000,
          maxPayloadBytes: 4_096,
          clock: { now: () => 0 },
          onEvent: () => {},
          clearSiteDataOnLogout: ['cookies'],
          csrfCookie: { name: 'csrf', maxAgeMs: 60_000 },
        },
        {},
      ),
    ).not.toThrow()
  })
})

import { describe, expect, test } from 'vitest'
import { readSessionCookie, serializeClearingCookie, serializeSessionCookie } from './cookie.js'
import { generateId } from './id.js'

const settings = {
  name: '__Host-sid',
  secure: true,
  sameSite: 'lax',
  httpOnly: true,
  path: '/',
  domain: undefined,
  persistent: false,
} as const

describe('readSessionCookie', () => {
  const id = generateId()

  test('reads a well-formed ID among other cookies', () => {
    expect(readSessionCookie(`a=1; __Host-sid=${id}; b=2`, '__Host-sid')).toEqual({ id, rejected: false })
  })

  test('no cookie, or another cookie only', () => {
    expect(readSessionCookie(undefined, '__Host-sid')).toEqual({ id: null, rejected: false })
    expect(readSessionCookie('x__Host-sid=1', '__Host-sid')).toEqual({ id: null, rejected: false })
  })

  test('two session cookies count as none', () => {
    expect(readSessionCookie(`__Host-sid=${id}; __Host-sid=${generateId()}`, '__Host-sid')).toEqual({
      id: null,
      rejected: true,
    })
    expect(readSessionCookie(`__Host-sid=${id};__Host-sid=${id}`, '__Host-sid').id).toBeNull()
  })

  test.each([
    ['../../etc/passwd'],
    [`${id.slice(0, 42)}\u0000`],
    ['a'.repeat(10_240)],
    [`${id.slice(0, 42)}é`],
    [`${id.slice(0, 42)}*`],
    [`${id.slice(0, 40)}[?]`],
    [`${id}x`],
    [id.slice(1)],
    [encodeURIComponent(`${id.slice(0, 42)}/`)],
  ])('malformed value %# is rejected', (value) => {
    expect(readSessionCookie(`__Host-sid=${value}`, '__Host-sid')).toEqual({ id: null, rejected: true })
  })
})

describe('serializing', () => {
  test('hardened attributes and no expiry by default', () => {
    expect(serializeSessionCookie(settings, 'abc', null)).toBe(
      '__Host-sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax',
    )
  })

  test('persistent cookies carry Max-Age', () => {
    expect(serializeSessionCookie(settings, 'abc', 99.9)).toContain('Max-Age=99')
  })

  test('the clearing cookie matches name, path, domain and flags', () => {
    const cleared = serializeClearingCookie({ ...settings, name: 'app', domain: 'example.com', path: '/app' })
    expect(cleared).toContain('app=;')
    expect(cleared).toContain('Max-Age=0')
    expect(cleared).toContain('Domain=example.com')
    expect(cleared).toContain('Path=/app')
    expect(cleared).toContain('HttpOnly')
    expect(cleared).toContain('Secure')
    expect(cleared).toContain('SameSite=Lax')
    expect(cleared).toContain('Expires=Thu, 01 Jan 1970 00:00:00 GMT')
  })
})

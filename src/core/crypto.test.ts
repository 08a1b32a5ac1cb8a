import { describe, expect, test } from 'vitest'
import { decodeKey, generateKey, Keyring, secureRandomBytes } from './crypto.js'

const ring = (...keys: string[]) => new Keyring(keys.map((key) => decodeKey(key) as Buffer))

describe('Keyring', () => {
  const a = generateKey()
  const b = generateKey()

  test('round trip, bound to its associated data', () => {
    const keyring = ring(a)
    const sealed = keyring.seal('{"canary":"x"}', 'key-1')
    expect(sealed).not.toContain('canary')
    expect(keyring.open(sealed, 'key-1')).toEqual({ plaintext: '{"canary":"x"}', stale: false })
    expect(keyring.open(sealed, 'key-2')).toBeNull()
  })

  test('a random nonce: the same plaintext seals differently', () => {
    const keyring = ring(a)
    expect(keyring.seal('same', 'k')).not.toBe(keyring.seal('same', 'k'))
  })

  test('the first key seals, every key opens, an old key is reported stale', () => {
    const sealedWithA = ring(a).seal('hello', 'k')
    const rotated = ring(b, a)
    expect(rotated.open(sealedWithA, 'k')).toEqual({ plaintext: 'hello', stale: true })
    expect(ring(b).open(sealedWithA, 'k')).toBeNull()
    expect(ring(b).open(rotated.seal('hello', 'k'), 'k')).toEqual({ plaintext: 'hello', stale: false })
  })

  test('every flipped bit is rejected', () => {
    const keyring = ring(a)
    const sealed = keyring.seal('payload', 'k')
    const [id, body] = sealed.split('.') as [string, string]
    const bytes = Buffer.from(body, 'base64url')
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const copy = Buffer.from(bytes)
      copy[bit >> 3] = (copy[bit >> 3] as number) ^ (1 << (bit & 7))
      expect(keyring.open(`${id}.${copy.toString('base64url')}`, 'k')).toBeNull()
    }
  })

  test('garbage never throws', () => {
    const keyring = ring(a)
    for (const junk of [
      '',
      '.',
      'x'.repeat(9),
      `${keyring.seal('a', 'k').slice(0, 9)}`,
      '\u0000'.repeat(40),
    ]) {
      expect(keyring.open(junk, 'k')).toBeNull()
    }
  })

  test('handles and seals use different subkeys', () => {
    const keyring = ring(a)
    expect(keyring.openHandle(keyring.seal('x', 'k'), 'k')).toBeNull()
    expect(keyring.openHandle(keyring.sealHandle('x', 'k'), 'k')).toBe('x')
  })

  test('digest is short, keyed and stable', () => {
    expect(ring(a).digest('secret')).toBe(ring(a).digest('secret'))
    expect(ring(a).digest('secret')).not.toBe(ring(b).digest('secret'))
    expect(ring(a).digest('secret')).toHaveLength(12)
  })
})

describe('decodeKey', () => {
  test('base64url and base64 are accepted, other text is not', () => {
    const key = Buffer.alloc(32, 0xfb)
    expect(decodeKey(key.toString('base64url'))).toEqual(key)
    expect(decodeKey(key.toString('base64'))).toEqual(key)
    expect(decodeKey('not a key')).toBeNull()
  })
})

describe('secureRandomBytes', () => {
  test('never hands out the same bytes twice, across pool refills', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 2_000; i++) seen.add(secureRandomBytes(12).toString('hex'))
    expect(seen.size).toBe(2_000)
  })

  test('a slice keeps its bytes after the pool is replaced', () => {
    const first = secureRandomBytes(32)
    const copy = Buffer.from(first)
    for (let i = 0; i < 300; i++) secureRandomBytes(32)
    expect(first.equals(copy)).toBe(true)
    expect(secureRandomBytes(10_000)).toHaveLength(10_000)
  })
})

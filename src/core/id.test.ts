import { createHash } from 'node:crypto'
import { describe, expect, test } from 'vitest'
import { generateId, ID_LENGTH, isWellFormedId, storeKeyOf } from './id.js'

describe('session IDs', () => {
  test('43 characters of base64url carrying 32 random bytes, never repeated', () => {
    const ids = new Set(Array.from({ length: 10_000 }, generateId))
    expect(ids.size).toBe(10_000)
    for (const id of [...ids].slice(0, 100)) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/)
      expect(Buffer.from(id, 'base64url')).toHaveLength(32)
    }
    expect(ID_LENGTH).toBe(43)
  })

  test('the format check accepts only what generateId could produce', () => {
    expect(isWellFormedId(generateId())).toBe(true)
    for (const bad of [
      undefined,
      42,
      '',
      'a'.repeat(42),
      'a'.repeat(44),
      `${'a'.repeat(42)}=`,
      `${'a'.repeat(42)}/`,
    ]) {
      expect(isWellFormedId(bad)).toBe(false)
    }
  })

  test('the store key is the SHA-256 of the ID, base64url, and never the ID', () => {
    const id = generateId()
    expect(storeKeyOf(id)).toBe(createHash('sha256').update(id).digest('base64url'))
    expect(storeKeyOf(id)).not.toBe(id)
    expect(storeKeyOf(id)).toHaveLength(43)
  })
})

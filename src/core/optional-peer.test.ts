import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { ConfigError } from './errors.js'
import { requireDriver } from './optional-peer.js'

describe('requireDriver', () => {
  test('loads an installed driver synchronously', () => {
    const pg = requireDriver<{ Pool: unknown }>('pg', 'PostgresStore')
    expect(typeof pg.Pool).toBe('function')
  })

  test('a missing package is a ConfigError naming the package and the install command', () => {
    let caught: unknown
    try {
      requireDriver('latchkey-no-such-driver/promise', 'SomeStore')
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(ConfigError)
    expect((caught as ConfigError).option).toBe('driver')
    expect((caught as Error).message).toBe(
      'driver: SomeStore needs the latchkey-no-such-driver package, which is not installed: npm install latchkey-no-such-driver',
    )
    expect(() => requireDriver('@scope-none/driver', 'X')).toThrow(
      'X needs the @scope-none/driver package, which is not installed: npm install @scope-none/driver',
    )
  })

  test('a module an installed driver fails to find is rethrown as it is', () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-driver-'))
    try {
      const entry = join(dir, 'broken-driver.cjs')
      writeFileSync(entry, "require('latchkey-dependency-of-the-driver')\n")
      expect(() => requireDriver(entry, 'X')).toThrow(
        expect.objectContaining({
          code: 'MODULE_NOT_FOUND',
          message: expect.stringContaining("'latchkey-dependency-of-the-driver'"),
        }),
      )
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

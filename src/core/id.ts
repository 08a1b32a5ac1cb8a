import { createHash } from 'node:crypto'
import { secureRandomBytes } from './crypto.js'

/** Random bytes in a session ID: 32 (256 bits). */
export const ID_BYTES = 32

/** Length of a session ID: 32 bytes in base64url without padding. */
export const ID_LENGTH = 43

const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/

/** A fresh session ID from node:crypto's CSPRNG: 32 random bytes, base64url (43 characters). */
export function generateId(): string {
  return secureRandomBytes(ID_BYTES).toString('base64url')
}

/**
 * True if `value` has the exact shape of an ID latchkey issues. Anything else (wrong length,
 * `../`, NUL, glob characters, non-ASCII) is rejected before any store call.
 */
export function isWellFormedId(value: unknown): value is string {
  return typeof value === 'string' && value.length === ID_LENGTH && ID_PATTERN.test(value)
}

/** The store key of a session ID: SHA-256, base64url. A store dump cannot be replayed as cookies. */
export function storeKeyOf(id: string): string {
  return createHash('sha256').update(id).digest('base64url')
}

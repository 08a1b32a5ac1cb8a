import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  randomFillSync,
  timingSafeEqual,
} from 'node:crypto'

const NONCE_BYTES = 12
const TAG_BYTES = 16
const KEY_ID_LENGTH = 8
/**
 * node's `Buffer` where node's types are loaded (in this package's own build), else the `Uint8Array` every
 * Buffer is. The declarations this module publishes name it instead of `Buffer`, so that they compile in
 * a project without `@types/node` (TypeScript 7 loads no `@types` package its `types` does not list).
 */
export type NodeBytes = typeof globalThis extends { Buffer: { alloc(size: number): infer B } }
  ? B
  : Uint8Array

/** Smallest accepted master key, in bytes. */
export const MIN_KEY_BYTES = 32

interface KeyEntry {
  readonly id: string
  readonly seal: Buffer
  readonly handle: Buffer
  readonly digest: Buffer
  /** Seals the CSRF pre-session cookie. */
  readonly csrfCookie: Buffer
  /** Derives the value a CSRF token masks from a session's CSRF secret. */
  readonly csrfToken: Buffer
}

/** Bytes of the value a CSRF token carries, and of its one-time pad. */
const CSRF_TOKEN_BYTES = 32
/**
 * A CSRF token: 64 bytes in canonical base64url, 86 characters. The last character carries two bits
 * of the 64th byte and four zero bits, so only `A`, `Q`, `g` and `w` can end it.
 */
const CSRF_TOKEN = /^[A-Za-z0-9_-]{85}[AQgw]$/
/** The length of a CSRF token, in characters. */
export const CSRF_TOKEN_LENGTH = 86

const POOL_BYTES = 4096
let pool = Buffer.alloc(0)
let poolOffset = 0

/**
 * `size` bytes from the operating system's CSPRNG (node:crypto `randomFillSync`), drawn from a pool
 * refilled 4 KB at a time, as node's own `randomUUID` does: one call into OpenSSL per hundred IDs or
 * nonces instead of one each. Every byte is handed out once; a spent pool is replaced, never refilled
 * in place, so a slice stays valid for as long as its holder keeps it.
 */
export function secureRandomBytes(size: number): NodeBytes {
  if (poolOffset + size > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(Math.max(POOL_BYTES, size)))
    poolOffset = 0
  }
  const bytes = pool.subarray(poolOffset, poolOffset + size)
  poolOffset += size
  return bytes
}

function subkey(master: Uint8Array, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `latchkey/${purpose}/v1`, 32))
}

function deriveEntry(master: Uint8Array): KeyEntry {
  const id = createHmac('sha256', master)
    .update('latchkey/key-id/v1')
    .digest('base64url')
    .slice(0, KEY_ID_LENGTH)
  return {
    id,
    seal: subkey(master, 'seal'),
    handle: subkey(master, 'handle'),
    digest: subkey(master, 'digest'),
    csrfCookie: subkey(master, 'csrf-cookie'),
    csrfToken: subkey(master, 'csrf-token'),
  }
}

/** Decodes a configured key (base64url or base64). Returns null if it is not valid base64. */
export function decodeKey(text: string): NodeBytes | null {
  if (!/^[A-Za-z0-9_+/-]+={0,2}$/.test(text)) return null
  return Buffer.from(text, text.includes('+') || text.includes('/') ? 'base64' : 'base64url')
}

/** What {@link Keyring.open} found: the plaintext, and whether a retired key sealed it. */
export interface Opened {
  readonly plaintext: string
  /** True when a key other than the first opened it: re-seal on the next write. */
  readonly stale: boolean
}

/**
 * The keyring: AES-256-GCM with HKDF subkeys of each master key. The first key seals, every key opens,
 * so keys rotate without signing anyone out. Sealed strings look like `<key id>.<base64url>` where the
 * bytes are a random 96-bit nonce, the ciphertext and the 128-bit tag.
 */
export class Keyring {
  private readonly entries: readonly KeyEntry[]
  private readonly byId: ReadonlyMap<string, KeyEntry>

  /** @param masters master keys, newest first, each at least 32 bytes. */
  constructor(masters: readonly Uint8Array[]) {
    if (masters.length === 0) throw new RangeError('Keyring needs at least one key')
    this.entries = masters.map(deriveEntry)
    this.byId = new Map(this.entries.map((entry) => [entry.id, entry]))
  }

  private get current(): KeyEntry {
    return this.entries[0] as KeyEntry
  }

  /** Encrypts `plaintext` with the first key, bound to `associated` (the record's store key). */
  seal(plaintext: string, associated: string): string {
    return this.sealWith(this.current, 'seal', plaintext, associated)
  }

  /** Decrypts what {@link seal} produced with any key of the ring; `null` if it was tampered with or the key is gone. */
  open(sealed: string, associated: string): Opened | null {
    return this.openWith('seal', sealed, associated)
  }

  /** Seals a handle (an opaque, unforgeable name for a session shown to its owner). */
  sealHandle(plaintext: string, associated: string): string {
    return this.sealWith(this.current, 'handle', plaintext, associated)
  }

  /** Opens a handle made by {@link sealHandle}; `null` for anything forged or garbled. */
  openHandle(sealed: string, associated: string): string | null {
    return this.openWith('handle', sealed, associated)?.plaintext ?? null
  }

  /** Seals the CSRF pre-session cookie's contents, bound to `associated` (the cookie's name). */
  sealCsrfCookie(plaintext: string, associated: string): string {
    return this.sealWith(this.current, 'csrfCookie', plaintext, associated)
  }

  /** Opens what {@link sealCsrfCookie} produced; `null` for anything forged, garbled or sealed by a removed key. */
  openCsrfCookie(sealed: string, associated: string): string | null {
    return this.openWith('csrfCookie', sealed, associated)?.plaintext ?? null
  }

  /**
   * A CSRF token for `secret` (a session's CSRF secret): a fresh random pad and the pad XOR an HMAC of
   * the secret under the first key's token subkey, base64url. Every call gives another string (so a
   * page compressed with a secret of the attacker's choosing leaks nothing, BREACH), all of them
   * valid; the secret itself never appears in a page, and no token can be made without the keys.
   */
  csrfToken(secret: string): string {
    const mac = createHmac('sha256', this.current.csrfToken).update(secret).digest()
    const token = Buffer.allocUnsafe(2 * CSRF_TOKEN_BYTES)
    secureRandomBytes(CSRF_TOKEN_BYTES).copy(token)
    for (let i = 0; i < CSRF_TOKEN_BYTES; i++) {
      token[CSRF_TOKEN_BYTES + i] = (token[i] as number) ^ (mac[i] as number)
    }
    return token.toString('base64url')
  }

  /**
   * Whether `token` was made by {@link csrfToken} for `secret` with any key of the ring. Anything that
   * is not exactly a token's format (length, alphabet, canonical last character) is refused before any
   * comparison; the comparison itself is constant-time. Never throws.
   */
  verifyCsrfToken(secret: string, token: unknown): boolean {
    if (typeof token !== 'string' || token.length !== CSRF_TOKEN_LENGTH || !CSRF_TOKEN.test(token))
      return false
    if (typeof secret !== 'string' || secret === '') return false
    const bytes = Buffer.from(token, 'base64url')
    const unmasked = Buffer.allocUnsafe(CSRF_TOKEN_BYTES)
    for (let i = 0; i < CSRF_TOKEN_BYTES; i++) {
      unmasked[i] = (bytes[i] as number) ^ (bytes[CSRF_TOKEN_BYTES + i] as number)
    }
    let valid = false
    for (const entry of this.entries) {
      const mac = createHmac('sha256', entry.csrfToken).update(secret).digest()
      // No early exit: every key is tried, whichever matches.
      valid = timingSafeEqual(mac, unmasked) || valid
    }
    return valid
  }

  /** A short keyed hash of a secret, for logs and events: stable, but useless to an attacker. */
  digest(secret: string): string {
    return createHmac('sha256', this.current.digest).update(secret).digest('base64url').slice(0, 12)
  }

  /**
   * Whether the key id that heads `sealed` names a key of this ring. `false` tells a payload sealed with
   * a key the ring lacks (or whose key id was damaged) from one that merely fails to authenticate.
   */
  hasKeyOf(sealed: string): boolean {
    return sealed.charCodeAt(KEY_ID_LENGTH) === 46 /* . */ && this.byId.has(sealed.slice(0, KEY_ID_LENGTH))
  }

  private sealWith(
    entry: KeyEntry,
    purpose: 'seal' | 'handle' | 'csrfCookie',
    plaintext: string,
    associated: string,
  ): string {
    const nonce = secureRandomBytes(NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', entry[purpose], nonce)
    cipher.setAAD(Buffer.from(associated, 'utf8'))
    const body = Buffer.concat([nonce, cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()])
    return `${entry.id}.${body.toString('base64url')}`
  }

  private openWith(
    purpose: 'seal' | 'handle' | 'csrfCookie',
    sealed: string,
    associated: string,
  ): Opened | null {
    if (typeof sealed !== 'string' || sealed.charCodeAt(KEY_ID_LENGTH) !== 46 /* . */) return null
    const entry = this.byId.get(sealed.slice(0, KEY_ID_LENGTH))
    if (!entry) return null
    const body = Buffer.from(sealed.slice(KEY_ID_LENGTH + 1), 'base64url')
    if (body.length < NONCE_BYTES + TAG_BYTES) return null
    try {
      const decipher = createDecipheriv('aes-256-gcm', entry[purpose], body.subarray(0, NONCE_BYTES))
      decipher.setAAD(Buffer.from(associated, 'utf8'))
      decipher.setAuthTag(body.subarray(body.length - TAG_BYTES))
      const plaintext = Buffer.concat([
        decipher.update(body.subarray(NONCE_BYTES, body.length - TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8')
      return { plaintext, stale: entry !== this.current }
    } catch {
      return null
    }
  }
}

/** A new random master key: 32 bytes, base64url. What `LATCHKEY_KEYS` holds. */
export function generateKey(): string {
  return secureRandomBytes(32).toString('base64url')
}

/** Random bytes as base64url, for secrets (CSRF). */
export function randomToken(bytes = 32): string {
  return secureRandomBytes(bytes).toString('base64url')
}

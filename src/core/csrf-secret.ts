/**
 * The per-session CSRF secret, in one place: where a session's secret comes from (its stored payload,
 * or for a session not stored the sealed pre-session cookie), the masked tokens made from it, their
 * check, and the pre-session cookie a response must carry. The request check itself (fetch metadata,
 * origin, then the token) lives in `src/csrf/`; the keyring does the cryptography.
 */

import { readCookie, serializeClearingCsrfCookie, serializeCsrfCookie } from './cookie.js'
import { type Keyring, randomToken } from './crypto.js'
import type { CommitResult, RequestFacts } from './facts.js'
import type { ResolvedOptions } from './options.js'
import type { CsrfCookieState, CsrfTokens, SessionMeta, SessionState } from './session.js'

/** A sealed CSRF pre-session cookie: key id, dot, base64url (nonce, `<expiry>:<secret>`, tag). */
const SEALED_CSRF_COOKIE = /^[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{40,400}$/
/** The plaintext of a CSRF pre-session cookie: when it expires (epoch ms), and the secret. */
const CSRF_COOKIE_CONTENTS = /^(\d{1,16}):([A-Za-z0-9_-]{43})$/

function isSealedCsrfCookie(value: string): boolean {
  return SEALED_CSRF_COOKIE.test(value)
}

function anyValue(): boolean {
  return true
}

/** The secret a session starts with, and what the request's pre-session cookie is worth. */
export interface StartingSecret {
  readonly csrf: string
  readonly cookie: CsrfCookieState
}

const NO_SECRET: StartingSecret = Object.freeze({ csrf: '', cookie: 'none' })
const CLEAR_SECRET: StartingSecret = Object.freeze({ csrf: '', cookie: 'clear' })

/** Gives a session metadata a CSRF secret if it has none (a session is never stored without one). */
export function ensureSecret(meta: SessionMeta): void {
  if (meta.csrf === '') meta.csrf = randomToken()
}

/** The CSRF secrets of one manager: its keyring and its pre-session cookie settings. */
export class CsrfSecrets implements CsrfTokens {
  private readonly clearedCookie: string

  constructor(
    private readonly keyring: Keyring,
    private readonly options: Pick<ResolvedOptions, 'csrfCookie' | 'clock'>,
  ) {
    this.clearedCookie = serializeClearingCsrfCookie(options.csrfCookie)
  }

  /**
   * The secret a session not stored starts with: the one sealed in the pre-session cookie the browser
   * sent, if it opens and has not expired.
   */
  preSession(facts: RequestFacts): StartingSecret {
    const settings = this.options.csrfCookie
    const reading = readCookie(facts.cookie, settings.name, isSealedCsrfCookie)
    if (reading.id === null) return reading.rejected ? CLEAR_SECRET : NO_SECRET
    const text = this.keyring.openCsrfCookie(reading.id, settings.name)
    const match = text === null ? null : CSRF_COOKIE_CONTENTS.exec(text)
    if (!match) return CLEAR_SECRET
    const left = Number(match[1]) - this.options.clock.now()
    if (left <= 0) return CLEAR_SECRET
    return { csrf: match[2] as string, cookie: left < settings.maxAgeMs / 2 ? 'aging' : 'valid' }
  }

  /** A stored session has its own secret: a pre-session cookie the browser still sends (usable or not) is cleared. */
  leftover(facts: RequestFacts): CsrfCookieState {
    const reading = readCookie(facts.cookie, this.options.csrfCookie.name, anyValue)
    return reading.id !== null || reading.rejected ? 'clear' : 'none'
  }

  token(state: SessionState): string {
    if (state.meta.csrf === '') {
      state.meta.csrf = randomToken()
      state.csrfUse = 'minted'
    } else if (state.csrfUse === 'none') {
      state.csrfUse = 'used'
    }
    return this.keyring.csrfToken(state.meta.csrf)
  }

  /** Whether the state has a secret at all: without one, {@link verify} is false for every token. */
  hasSecret(state: SessionState): boolean {
    return state.meta.csrf !== ''
  }

  /** Whether `token` was made from the state's current secret, with any key of the ring. Never throws. */
  verify(state: SessionState, token: string): boolean {
    return this.keyring.verifyCsrfToken(state.meta.csrf, token)
  }

  /**
   * The result with the CSRF pre-session cookie the response must carry, if any: a session stored now
   * has its own secret, so a cookie the browser sent is cleared; a session not stored that made a token
   * has its secret sealed into the cookie when it was created in this request or the cookie is aging;
   * an unusable cookie is cleared. A response that holds a token is private either way.
   */
  finish(state: SessionState, result: CommitResult, now: number): CommitResult {
    const carried = state.csrfCookie
    const use = state.csrfUse
    if (carried === 'none' && use === 'none') return result
    state.csrfCookie = 'none'
    state.csrfUse = 'none'
    let csrfCookie: string | undefined
    if (state.record !== null) {
      if (carried !== 'none') csrfCookie = this.clearedCookie
    } else if (use !== 'none' && state.meta.csrf !== '' && (use === 'minted' || carried === 'aging')) {
      const settings = this.options.csrfCookie
      const sealed = this.keyring.sealCsrfCookie(
        `${now + settings.maxAgeMs}:${state.meta.csrf}`,
        settings.name,
      )
      csrfCookie = serializeCsrfCookie(settings, sealed)
    } else if (carried === 'clear') {
      csrfCookie = this.clearedCookie
    }
    if (csrfCookie !== undefined) return { ...result, private: true, csrfCookie }
    return result.private || use === 'none' ? result : { ...result, private: true }
  }
}

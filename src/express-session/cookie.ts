/**
 * `req.session.cookie`: express-session's Cookie, with the same fields and the same JSON shape in the
 * store (`originalMaxAge`, `expires`, `secure`, `httpOnly`, `domain`, `path`, `sameSite`, `partitioned`,
 * `priority`), so that a record written by express-session is read here and the other way round.
 * `maxAge` is computed from `expires`; setting it moves `expires` and, like setting `expires`,
 * `originalMaxAge` follows unless the caller sets it afterwards.
 */
import { serialize } from 'cookie'

/** What a Cookie writes to the store and to the Set-Cookie header. */
export interface CookieData {
  originalMaxAge: number | null
  expires: Date | null | undefined
  secure: boolean | 'auto' | undefined
  httpOnly: boolean | undefined
  domain: string | undefined
  path: string | undefined
  sameSite: boolean | 'lax' | 'strict' | 'none' | 'auto' | undefined
  partitioned: boolean | undefined
  priority: 'low' | 'medium' | 'high' | undefined
}

/** The options a Cookie takes: its fields, `maxAge` in milliseconds, `expires` as a Date or null. */
export type CookieOptions = Partial<Omit<CookieData, 'expires'>> & {
  maxAge?: number | null
  expires?: Date | null
}

export class Cookie {
  path: string | undefined = '/'
  httpOnly: boolean | undefined = true
  originalMaxAge: number | null = null
  secure: boolean | 'auto' | undefined
  domain: string | undefined
  sameSite: CookieData['sameSite']
  partitioned: boolean | undefined
  priority: CookieData['priority']
  private _expires: Date | null | undefined = null

  constructor(options?: CookieOptions) {
    if (options !== undefined && options !== null) {
      if (typeof options !== 'object') throw new TypeError('argument options must be a object')
      const fields = options as Record<string, unknown>
      for (const key of Object.keys(fields)) {
        if (key !== 'data') (this as unknown as Record<string, unknown>)[key] = fields[key]
      }
    }
    if (this.originalMaxAge === undefined || this.originalMaxAge === null) this.originalMaxAge = this.maxAge
  }

  get expires(): Date | null | undefined {
    return this._expires
  }

  set expires(date: Date | null | undefined) {
    this._expires = date
    this.originalMaxAge = this.maxAge
  }

  /** Milliseconds left until `expires`, or null for a cookie that dies with the browser. */
  get maxAge(): number | null {
    return this._expires instanceof Date ? this._expires.valueOf() - Date.now() : (this._expires ?? null)
  }

  set maxAge(ms: number | Date | null | undefined) {
    if (ms && typeof ms !== 'number' && !(ms instanceof Date)) {
      throw new TypeError('maxAge must be a number of milliseconds (or a Date, the old form)')
    }
    this.expires = typeof ms === 'number' ? new Date(Date.now() + ms) : (ms ?? null)
    // Exactly what was asked, not what is left a tick later (express-session's may read one ms less).
    if (typeof ms === 'number') this.originalMaxAge = ms
  }

  /** The fields as stored and as serialized. */
  get data(): CookieData {
    return {
      originalMaxAge: this.originalMaxAge,
      partitioned: this.partitioned,
      priority: this.priority,
      expires: this._expires,
      secure: this.secure,
      httpOnly: this.httpOnly,
      domain: this.domain,
      path: this.path,
      sameSite: this.sameSite,
    }
  }

  /** The Set-Cookie header value for `name=value` with this cookie's attributes. */
  serialize(name: string, value: string): string {
    return serializeCookie(name, value, this.data)
  }

  toJSON(): CookieData {
    return this.data
  }
}

/** Set-Cookie for `name=value` with `data`'s attributes (`auto` values are resolved before this). */
export function serializeCookie(name: string, value: string, data: CookieData): string {
  if (data.expires instanceof Date && Number.isNaN(data.expires.valueOf())) {
    throw new TypeError('option expires is invalid')
  }
  return serialize(name, value, {
    expires: data.expires ?? undefined,
    secure: data.secure === true,
    httpOnly: data.httpOnly,
    domain: data.domain,
    path: data.path,
    sameSite: data.sameSite === 'auto' ? undefined : data.sameSite,
    partitioned: data.partitioned,
    priority: data.priority,
  })
}

/** What an adapter hands the core for a request, and what it gets back to put on the response. */

/** What an adapter reads off the request for the core. */
export interface RequestFacts {
  /** The raw `Cookie` header, if any. */
  readonly cookie?: string | undefined
  /** The `User-Agent` header, kept for the "your devices" list. */
  readonly userAgent?: string | undefined
}

/** What an adapter must put on the response, before any byte of it leaves. */
export interface CommitResult {
  /** A `Set-Cookie` value to append, or `null`. */
  readonly setCookie: string | null
  /** The response carries session state: send `Cache-Control: no-store` and `Vary: Cookie`. */
  readonly private: boolean
  /** A `Clear-Site-Data` value to send (a logout, with `clearSiteDataOnLogout` set), or absent. */
  readonly clearSiteData?: string
  /**
   * One more `Set-Cookie` value to append: the CSRF pre-session cookie, issued (a session not stored
   * made a token) or cleared (the session is stored now, or the cookie was unusable). Absent when
   * there is nothing to send; `private` is then true whenever the response holds a CSRF token.
   */
  readonly csrfCookie?: string
}

/**
 * The typing of `req.session`, `req.sessionID` and `req.sessionStore` on every Express request, as
 * `@types/express-session` does it: a global declaration, loaded by importing
 * `latchkey/express-session` (so an app needs no `@types/express-session`). `req.session` is a
 * {@link Session} with the keys of {@link SessionData}, each optional; declare them as with
 * express-session:
 *
 *     declare module 'latchkey/express-session' {
 *       interface SessionData { user: string }
 *     }
 *
 * Only one library can type `req.session`: next to `@types/express-session` or `latchkey/express` in
 * one program, TypeScript reports the second declaration it meets (TS2717), or with `skipLibCheck`
 * keeps the first silently.
 */
import type { Session } from './session.js'
import type { SessionData, Store } from './store.js'

declare global {
  namespace Express {
    interface Request {
      /** The session, set by the `latchkey/express-session` middleware. */
      // This repository's own program also loads latchkey/express's typing of `req.session`
      // (src/adapters/express-augment.ts), which comes first there; this one is checked in a program
      // of its own (test/declarations.test.ts). The comment is not in the published declarations.
      // @ts-expect-error TS2717, in this repository only
      session: Session & Partial<SessionData>
      /** The session's ID (a new one when the request came without a valid cookie). */
      sessionID: string
      /** The store the middleware uses. */
      sessionStore: Store
    }
  }
}

/**
 * The typing of `req.session` on every Express request, as `@types/express-session` does it: a global
 * declaration, loaded by importing `latchkey/express` (which re-exports `ExpressSessionData` from here).
 * `import 'latchkey/express/augment'` loads it alone, as before `latchkey/express` did. `req.session` is
 * a `Session<ExpressSessionData>`; give the data its type once by merging into that interface:
 *
 *     declare module 'latchkey/express' {
 *       interface ExpressSessionData { cart: string[] }
 *     }
 *
 * Only one library can type `req.session`: in a program that also imports express-session, TypeScript
 * reports the second declaration it meets (TS2717), or with `skipLibCheck` keeps the first silently.
 * Reach the session through `auth.session(req)` there (see `latchkey/express`).
 */
import type { Session } from '../core/session.js'

/** The data of `req.session` once this module is imported; merge your keys into it. */
export interface ExpressSessionData {
  [key: string]: unknown
}

declare global {
  namespace Express {
    interface Request {
      /** The latchkey session, set by `sessions(manager)` from `latchkey/express`. */
      session: Session<ExpressSessionData>
    }
  }
}

/**
 * Opt-in typing of `req.session` on every Express request: `import 'latchkey/express/augment'` once.
 *
 * Without it, reach the session through `auth.session(req)` or `(req as SessionRequest<Data>).session`
 * (see `latchkey/express`). With it, `req.session` is a `Session<ExpressSessionData>`; give the data
 * its type once by merging into that interface:
 *
 *     declare module 'latchkey/express/augment' {
 *       interface ExpressSessionData { cart: string[] }
 *     }
 *
 * It cannot be combined with another library that types `req.session` (express-session does).
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

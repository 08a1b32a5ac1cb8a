/**
 * latchkey: server-side sessions for Node.js. The core API; adapters live in `latchkey/node` and
 * friends, stores in `latchkey/stores/*`.
 */

export type { Clock } from './core/clock.js'
export { ManualClock, systemClock } from './core/clock.js'
export { generateKey } from './core/crypto.js'
export type { CsrfReason, FreshAuthReason } from './core/errors.js'
export {
  ConfigError,
  ConflictError,
  CsrfError,
  FreshAuthError,
  isUnavailableError,
  SessionError,
  StoreError,
} from './core/errors.js'
export type { SessionEvent, SessionEventReason, SessionEventReasons } from './core/events.js'
export type { CommitResult, RequestFacts, UserSessionInfo } from './core/manager.js'
export { createSessionManager, SessionManager } from './core/manager.js'
export type {
  ClearSiteDataType,
  CookieOptions,
  CsrfCookieOptions,
  ResolvedOptions,
  SessionCapPolicy,
  SessionManagerOptions,
} from './core/options.js'
export { DEFAULTS } from './core/options.js'
export type { LoginOptions, SessionCookie, SessionData } from './core/session.js'
export { Session } from './core/session.js'
export type {
  ClosableStore,
  CountableStore,
  ListableStore,
  MigratableStore,
  PrunableStore,
  SessionRecord,
  SessionStore,
  StoreOptions,
  SyncSessionStore,
  UserIndexedStore,
} from './core/store.js'
export {
  expiresAt,
  isClosableStore,
  isCountableStore,
  isListableStore,
  isMigratableStore,
  isPrunableStore,
  isSyncStore,
  isUserIndexedStore,
} from './core/store.js'
export type { CsrfGuard, CsrfOptions, CsrfRequest, ResolvedCsrfOptions } from './csrf/index.js'
export { CSRF_FIELD, CSRF_HEADER, createCsrfGuard, isCsrfError } from './csrf/index.js'
export type { MemoryStoreOptions } from './stores/memory/index.js'
export { MemoryStore } from './stores/memory/index.js'

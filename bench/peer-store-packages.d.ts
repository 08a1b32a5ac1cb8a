// The part of the peer store packages' APIs the benchmark uses (they ship no types). Each is a
// function of express-session that returns its Store class.
declare module 'connect-pg-simple' {
  import type session from 'express-session'

  interface PgStoreOptions {
    conString?: string
    tableName?: string
    createTableIfMissing?: boolean
  }
  class PgStore extends session.Store {
    constructor(options?: PgStoreOptions)
    close(): void
  }
  function connectPgSimple(session: typeof import('express-session')): typeof PgStore
  export default connectPgSimple
}

declare module 'express-mysql-session' {
  interface MySqlStoreOptions {
    host?: string
    port?: number
    user?: string
    password?: string
    database?: string
    schema?: { tableName?: string }
  }
  interface MySqlStore {
    onReady(): Promise<void>
    close(): Promise<void>
  }
  function expressMySqlSession(session: unknown): new (options: MySqlStoreOptions) => MySqlStore
  export default expressMySqlSession
}

declare module 'session-file-store' {
  import type session from 'express-session'

  function sessionFileStore(
    session: typeof import('express-session'),
  ): new (options?: {
    path?: string
  }) => session.Store
  export default sessionFileStore
}

declare module 'better-sqlite3-session-store' {
  import type Database from 'better-sqlite3'
  import type session from 'express-session'

  function betterSqlite3SessionStore(
    session: typeof import('express-session'),
  ): new (options: {
    client: Database.Database
    expired?: { clear?: boolean; intervalMs?: number }
  }) => session.Store
  export default betterSqlite3SessionStore
}

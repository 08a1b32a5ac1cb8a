/** `latchkey/stores/sqlite`: sessions in a SQLite file. Needs the optional peer dependency better-sqlite3. */
export { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js'

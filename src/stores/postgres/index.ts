/** `latchkey/stores/postgres`: sessions in PostgreSQL. Needs the optional peer dependency pg. */
export { PostgresStore, type PostgresStoreOptions } from './postgres-store.js'

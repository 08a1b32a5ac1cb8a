/** `latchkey/stores/mysql`: sessions in MySQL or MariaDB. Needs the optional peer dependency mysql2. */
export { MySqlStore, type MySqlStoreOptions } from './mysql-store.js'
